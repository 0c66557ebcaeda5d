"""mailbridge's per-message path over ../shared/realmail, against the corpus's own expectations.

The corpus is real mail other projects collected for their tests (see its
SOURCES.md); nothing of it is copied into this repository. Every mail goes
through what ingest does to it: parse, classify, and for a bounce the report
reader (bridge.domain.bounces.analyse). Printed:

- bounces: files whose failed recipients mailbridge names exactly, against
  flufl.bounce's own ``all_failures`` on the same files (the samples' expected
  addresses come from flufl.bounce's and Mailman's tests);
- real bounces (expected to name someone) that the classifier calls another kind;
- reply fixtures giving the expected new text (benchmarks/realmail_replies.py);
- exceptions anywhere in the path (should be 0), and the slowest message.

    .venv/bin/python benchmarks/realmail.py [--realmail DIR] [--verbose]

Without the folder the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from email import message_from_bytes
from pathlib import Path

from flufl.bounce import all_failures

from bridge.domain.bounces import analyse
from bridge.domain.classify import ClassifyContext, Kind, classify
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.parse import UnparseableMail, parse_mail
from realmail_replies import DEFAULT_REALMAIL, failed_checks

BOUNCE_SETS = ("flufl_bounce", "mailman2_bounces")
MAIL_SUFFIXES = (".txt", ".eml", ".box")
CONTEXT = ClassifyContext(
    seller_address="seller@acme.example", staff_address="support@acme.example", staff_senders=("*@acme.example",),
    reply_address="seller+{token}@acme.example", relay_domains=ALL_RELAY_DOMAINS, sent_by_us=False,
    replies_to_us=False,
)


def find_corpus() -> Path | None:
    """$MAILBRIDGE_REALMAIL, else a ``shared/realmail`` beside the checkout or any folder above it."""
    if os.environ.get("MAILBRIDGE_REALMAIL"):
        given = Path(os.environ["MAILBRIDGE_REALMAIL"])
        return given if (given / "SOURCES.md").is_file() else None
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "realmail" / "SOURCES.md").is_file():
            return parent / "shared" / "realmail"
    return None


def raw_mail(path: Path) -> bytes:
    """The file as an IMAP server would return it: without an mbox ``From `` line."""
    raw = path.read_bytes()
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") else raw


def ours(raw: bytes) -> tuple[Kind | None, set[str]]:
    """(kind, failed recipients named) as ingest sees them; kind None: not parseable as mail."""
    try:
        mail = parse_mail(raw)
    except UnparseableMail:
        return None, set()
    kind = classify(mail, CONTEXT).kind
    if kind is not Kind.BOUNCE:
        return kind, set()
    report = analyse(raw, mail)
    return kind, {r.address for r in report.recipients} if report else set()


def flufl(raw: bytes) -> set[str]:
    temporary, permanent = all_failures(message_from_bytes(raw))
    return {a.decode("ascii", "replace").strip("<>").lower() for a in temporary | permanent}


def bounce_figures(root: Path, verbose: bool) -> None:
    for name in BOUNCE_SETS:
        expected = json.loads((root / name / "expected.json").read_text("utf-8"))["files"]
        scored = right = flufl_right = other_kind = 0
        for filename, want in sorted(expected.items()):
            if want["addresses"] is None:       # flufl.bounce's own tests leave these unscored
                continue
            raw = raw_mail(root / name / filename)
            wanted = {a.lower() for a in want["addresses"]}
            kind, got = ours(raw)
            scored += 1
            right += got == wanted
            flufl_right += flufl(raw) == wanted
            misfiled = bool(wanted) and kind is not Kind.BOUNCE
            other_kind += misfiled
            if verbose and (got != wanted or misfiled):
                print(f"  wrong  {name}/{filename}: kind {kind}, named {sorted(got)}, expected {sorted(wanted)}")
        print(f"{name}: failed recipients exactly right: mailbridge {right} of {scored}, "
              f"flufl.bounce {flufl_right} of {scored}; real bounces classified as another kind: {other_kind}")


def reply_figures(root: Path, verbose: bool) -> None:
    files: dict[str, dict[str, object]] = json.loads((root / "replies_expected.json").read_text("utf-8"))["files"]
    right = 0
    for name, expected in sorted(files.items()):
        failed = failed_checks((root / name).read_bytes().decode("utf-8", "replace"), expected)
        right += not failed
        if failed and verbose:
            print(f"  wrong  {name}: {'; '.join(failed)}")
    print(f"reply fixtures giving the expected new text: {right} of {len(files)}")


def whole_corpus(root: Path, verbose: bool) -> None:
    """Every mail through parse, classify and (bounces) analyse: exceptions and the slowest."""
    count = errors = 0
    slowest = (0.0, "")
    for path in sorted(root.rglob("*")):
        if path.suffix not in MAIL_SUFFIXES or not path.is_file():
            continue
        raw = raw_mail(path)
        count += 1
        start = time.perf_counter()
        try:
            ours(raw)
        except Exception as exc:  # noqa: BLE001 - counting them is the point
            errors += 1
            if verbose:
                print(f"  error  {path.relative_to(root)}: {exc!r}")
        elapsed = time.perf_counter() - start
        slowest = max(slowest, (elapsed, str(path.relative_to(root))))
    print(f"files through parse/classify/analyse: {count}; exceptions: {errors}; "
          f"slowest: {slowest[1]} ({slowest[0] * 1000:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realmail", type=Path, default=find_corpus() or DEFAULT_REALMAIL)
    parser.add_argument("--verbose", action="store_true", help="name every file that is wrong, and how")
    args = parser.parse_args(argv)
    if not (args.realmail / "SOURCES.md").is_file():
        print(f"skipped: {args.realmail} not found (the realmail corpus is not on this machine)")
        return 0
    bounce_figures(args.realmail, args.verbose)
    reply_figures(args.realmail, args.verbose)
    whole_corpus(args.realmail, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
