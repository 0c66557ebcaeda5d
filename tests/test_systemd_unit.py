"""systemd/: the unit verifies, its exposure stays low, the sysusers/tmpfiles snippets work, and
mailbridge runs under the unit's MemoryDenyWriteExecute=.

The systemd tools are used when this machine has them (skipped otherwise); the
memory test needs Linux 6.3's PR_SET_MDWE, the kernel's own form of the same rule.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "mailbridge.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("key,value", [
    ("Type", "notify"), ("NotifyAccess", "main"), ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ("StateDirectory", "mailbridge"), ("ConfigurationDirectory", "mailbridge"), ("User", "mailbridge"),
    ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
    ("NoNewPrivileges", "yes"), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("SystemCallFilter", "@system-service"), ("CapabilityBoundingSet", ""), ("UMask", "0077"),
    ("RestartPreventExitStatus", "2"),
])
def test_the_unit_says(key: str, value: str) -> None:
    assert value in _settings()[key]


def test_the_watchdog_outlasts_a_ping_interval_and_start_covers_a_login() -> None:
    settings = _settings()
    assert settings["WatchdogSec"] == ["60s"]
    assert int(settings["TimeoutStartSec"][0]) > 60   # [accounts.imap] timeout_seconds' default


def _installed_copy(tmp_path: Path) -> Path:
    """The unit as installed here: ExecStart names this virtualenv's mailbridge (verify checks it exists)."""
    exe = Path(sys.executable).parent / "mailbridge"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/mailbridge/bin/mailbridge", str(exe)))
    return copy


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(_installed_copy(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result


@needs_analyze
def test_exposure_is_at_most_two() -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for mailbridge\.service: (\d+\.\d+)", result.stdout)
    assert found, result
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/systemd-tmpfiles not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-tmpfiles sets owners: root only")
def test_sysusers_and_tmpfiles_make_the_user_and_the_folders(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).touch()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "mailbridge.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    (entry,) = [line for line in (tmp_path / "etc/passwd").read_text().splitlines() if line.startswith("mailbridge:")]
    uid, gid = int(entry.split(":")[2]), int(entry.split(":")[3])
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(SYSTEMD / "mailbridge.tmpfiles.conf")],
                   check=True, capture_output=True, timeout=60)
    for path, mode, owner, group in (("etc/mailbridge", 0o750, 0, gid), ("etc/mailbridge/credentials", 0o700, 0, 0),
                                     ("var/lib/mailbridge", 0o700, uid, gid)):
        st = (tmp_path / path).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, owner, group), path


# The unit's MemoryDenyWriteExecute=yes refuses memory that is writable and executable at
# once; so does the kernel's PR_SET_MDWE (Linux 6.3+), which this runner sets on itself before
# it runs a real `mailbridge run --once`. libffi closures (ctypes callbacks, which psycopg's
# pure-Python libpq binding makes) are the usual casualty: one is made and called too.
MDWE_RUNNER = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    import mmap
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("writable executable memory was allowed: the rule is not in force")
    except OSError:
        pass
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    numbers = (ctypes.c_int * 3)(3, 1, 2)
    libc.qsort(numbers, 3, ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))
    assert list(numbers) == [1, 2, 3]
    import ssl
    ssl.create_default_context()
    from bridge.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_mailbridge_runs_without_writable_executable_memory(tmp_path: Path, dovecot: DovecotServer,
                                                            fresh_mailbox: SandboxAccount, staff: SandboxAccount,
                                                            smtp_server: SandboxSMTP) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(database=f"sqlite:///{tmp_path}/mailbridge.db", seller=fresh_mailbox.user,
                                  staff=staff.user, imap_port=fresh_mailbox.port, smtp_port=smtp_server.port,
                                  imap_password=fresh_mailbox.password,
                                  sections={"account": {"forward_existing": True}, "smtp": {"sent_copies": "none"}}))
    dovecot.append(fresh_mailbox.user, "INBOX", samples.amazon_buyer_message(
        buyer_alias="k3j9x0qma2b7", buyer_name="Jane", order="111-2223334-4445556", question="Footprint?",
        seller_address=fresh_mailbox.user, message_id="buyer.mdwe@email.amazon.com"))
    result = subprocess.run([sys.executable, "-c", MDWE_RUNNER, "-c", str(config), "run", "--once"],
                            capture_output=True, text=True, timeout=120)
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert smtp_server.messages_to(staff.user)
