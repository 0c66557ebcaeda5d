"""How many real reply fixtures give the expected new text through extract_reply.

The fixtures are other projects' reply bodies in ../shared/realmail (see its
SOURCES.md); their expectations are in replies_expected.json, one entry per
file with any of:

- ``visible``: the whole reply, whitespace runs folded ("@whole": the whole fixture);
- ``first_line``: the reply's first non-blank line;
- ``contains`` / ``excludes``: substrings that must / must not be in the reply.

A fixture counts as right when every check it has passes. Nothing is copied
into the repository; without the folder the script says so and exits 0.

    .venv/bin/python benchmarks/realmail_replies.py [--realmail DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge.domain.replies import extract_reply

# ../shared/realmail beside the checkout by default; --realmail names another folder.
DEFAULT_REALMAIL = Path(__file__).resolve().parents[1].parent / "shared" / "realmail"


def _fold(text: str) -> str:
    return " ".join(text.split())


def failed_checks(fixture: str, expected: dict[str, object]) -> list[str]:
    """The names of the checks ``extract_reply`` fails on ``fixture``; empty when it is right."""
    reply = extract_reply(fixture).text
    failed = []
    visible = expected.get("visible")
    if isinstance(visible, str):
        wanted = fixture if visible == "@whole" else visible
        if _fold(reply) != _fold(wanted):
            failed.append("visible")
    first_line = expected.get("first_line")
    if isinstance(first_line, str):
        first = next((line.strip() for line in reply.splitlines() if line.strip()), "")
        if first != first_line.strip():
            failed.append("first_line")
    for piece in expected.get("contains", []) or []:  # type: ignore[attr-defined]
        if _fold(piece) not in _fold(reply):
            failed.append(f"contains {piece!r}")
    for piece in expected.get("excludes", []) or []:  # type: ignore[attr-defined]
        if _fold(piece) in _fold(reply):
            failed.append(f"excludes {piece!r}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realmail", type=Path, default=DEFAULT_REALMAIL)
    parser.add_argument("--verbose", action="store_true", help="name every fixture that fails, and why")
    args = parser.parse_args(argv)
    expectations = args.realmail / "replies_expected.json"
    if not expectations.is_file():
        print(f"skipped: {expectations} not found (the realmail corpus is not on this machine)")
        return 0
    files: dict[str, dict[str, object]] = json.loads(expectations.read_text(encoding="utf-8"))["files"]
    right = 0
    for name, expected in sorted(files.items()):
        fixture = (args.realmail / name).read_bytes().decode("utf-8", "replace")
        failed = failed_checks(fixture, expected)
        right += not failed
        if failed and args.verbose:
            print(f"  wrong  {name}: {'; '.join(failed)}")
    print(f"reply fixtures giving the expected new text: {right} of {len(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
