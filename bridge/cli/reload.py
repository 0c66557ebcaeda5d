"""``mailbridge reload [--pid PID]``: check the configuration, then have the running daemon re-read it.

The same as ``systemctl reload mailbridge`` (SIGHUP to the daemon), with the
file checked first: a file the daemon would refuse is reported here, with every
problem, and nothing is sent. The daemon is the ``mailbridge run`` process
(not ``--once``) reading the same configuration file, found in ``/proc``;
``--pid`` names it instead (e.g. from ``systemctl show -p MainPID mailbridge``).

Exit status: 0 signalled, 1 no daemon found (or several), 2 the file has problems.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from bridge.cli.command import build_parser
from bridge.cli.settings import load
from bridge.config import find_config_path


def daemon_config(argv: list[str], environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The configuration file a ``mailbridge`` process reads when its command line is a daemon's, else None."""
    try:
        start = next(i for i, arg in enumerate(argv) if arg.endswith(("mailbridge", "bridge.cli")))
    except StopIteration:
        return None
    if "run" not in argv[start + 1:]:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):   # argparse says why a command line is not ours
            args, _ = build_parser().parse_known_args(argv[start + 1:])
    except SystemExit:   # not our command line after all
        return None
    if getattr(args, "command", None) != "run" or getattr(args, "once", False):
        return None
    path = find_config_path(args.config, environ)
    return path if path.is_absolute() else cwd / path


def _processes() -> Iterable[tuple[int, list[str], dict[str, str], Path]]:
    """(pid, argv, environment, working directory) of the processes this user may look at."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        proc = Path("/proc", entry)
        try:
            argv = [a.decode(errors="replace") for a in proc.joinpath("cmdline").read_bytes().split(b"\0") if a]
            try:
                raw_env = proc.joinpath("environ").read_bytes()
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:   # another user's process: its -c is all we can know
                raw_env, cwd = b"", Path("/")
        except OSError:
            continue
        env = dict(e.decode(errors="replace").partition("=")[::2] for e in raw_env.split(b"\0") if b"=" in e)
        yield int(entry), argv, env, cwd


def find_daemons(config: Path) -> list[int]:
    """PIDs of ``mailbridge run`` processes reading ``config``."""
    wanted = config.resolve()
    found = []
    for pid, argv, env, cwd in _processes():
        path = daemon_config(argv, env, cwd)
        if path is not None and path.resolve() == wanted:
            found.append(pid)
    return found


def run(args: argparse.Namespace) -> int:
    settings = load(args)   # a ConfigError here is exit status 2, every problem said, nothing sent
    if args.pid is not None:
        pids = [args.pid]
    else:
        pids = find_daemons(settings.path.absolute())
        if len(pids) != 1:
            what = "no running mailbridge daemon reads" if not pids else \
                f"several mailbridge daemons ({', '.join(map(str, pids))}) read"
            print(f"mailbridge: {what} {settings.path}; name one with --pid PID (under systemd: "
                  "systemctl reload mailbridge)", file=sys.stderr)
            return 1
    try:
        os.kill(pids[0], signal.SIGHUP)
    except OSError as exc:
        print(f"mailbridge: cannot signal process {pids[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{settings.path} is valid; asked mailbridge (pid {pids[0]}) to reload it; its log says what changed")
    return 0
