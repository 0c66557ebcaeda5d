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
- Zammad's mails: sender address, display name, subject and body as Zammad's
  own parse (the ``.yml`` beside each ``.box``) gives them, and how many of our
  results show mojibake (replacement characters, ISO-2022 escapes, UTF-8 read
  as Latin-1). Zammad's own choices are left out: where it takes the sender
  from Reply-To, the sender is not scored; bodies are compared as text, the
  first 60 characters of Zammad's body having to appear in ours;
- exceptions anywhere in the path (should be 0), and the slowest message.

    .venv/bin/python benchmarks/realmail.py [--realmail DIR] [--verbose]

Without the folder the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from difflib import SequenceMatcher
from email import message_from_bytes
from pathlib import Path

from flufl.bounce import all_failures

from bridge.domain import htmltext
from bridge.domain.bounces import analyse
from bridge.domain.classify import ClassifyContext, Kind, classify
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS
from bridge.domain.parse import ParsedMail, UnparseableMail, parse_mail
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


_MOJIBAKE_RE = re.compile("\ufffd|\x1b[$(]|Ã[\x80-\xbf]|â€|Â[\xa0-\xbf]")


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _same_body(expected: str, mail: ParsedMail) -> bool:
    """Zammad's body text begins like ours (our text part or, where Zammad chose the
    HTML part, its text); or ours begins within Zammad's first lines, where Zammad's
    rendering puts the HTML <title> first."""
    head = expected[:200]
    for ours in (mail.text, htmltext.to_text(mail.html).text if mail.html else ""):
        mine = _fold(ours)
        if head[:60] in mine or (mine and mine[:60] in expected[:400]) \
                or SequenceMatcher(None, head, mine[:len(head)]).ratio() >= 0.9:
            return True
    return False


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _only_the_title(expected: str, mail: ParsedMail) -> bool:
    """Zammad shows an HTML part whose body is empty as its <title>: nothing to compare."""
    m = _TITLE_RE.search(mail.html or "")
    return m is not None and _fold(expected) == _fold(m.group(1)) and not htmltext.to_text(mail.html or "").text.strip()


def zammad_expectations(root: Path) -> dict[str, dict[str, object]]:
    """Zammad's parse of each mail (its ``.yml``; the Ruby type tags ignored)."""
    import yaml  # a test dependency: only this comparison needs it

    class Loader(yaml.SafeLoader):
        pass

    def untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", untagged)
    out = {}
    for path in sorted((root / "zammad" / "mail").glob("*.yml")):
        if path.with_suffix(".box").is_file():
            out[path.stem] = yaml.load(path.read_text("utf-8"), Loader=Loader) or {}
    return out


_ADDR_SPEC_RE = re.compile(r"[^\s@<>\"()]+@[^\s@<>\"()]+")
# How Zammad itself misreads some headers: its value, re-encoded with the first and
# decoded with the second, is what the bytes say (ÎäŔźłÉ is GB2312 read as
# Windows-1250; "+ANw-" is UTF-7 left as it is).
_ZAMMAD_MISREADINGS = (("cp1250", "gb18030"), ("iso8859_2", "gb18030"), ("cp1252", "gb18030"), ("cp1252", "utf-8"), ("latin-1", "utf-8"),
                       ("ascii", "utf-7"))


def _zammad_misread(expected: str, ours: str) -> bool:
    """Zammad's value is its own mojibake (or an undecoded encoded word) of what we read."""
    if "=?" in expected or "?=" in expected:
        return True
    for encoding, decoding in _ZAMMAD_MISREADINGS:
        try:
            if _fold(expected.encode(encoding).decode(decoding)) == _fold(ours):
                return True
        except (UnicodeError, LookupError):
            continue
    return False


def zammad_scores(root: Path) -> dict[str, list[str]]:
    """Per field ("sender", "name", "subject", "body"): the mails scored, "!"-marked when
    mailbridge disagrees; plus "mojibake": mails where our text shows mojibake Zammad's does not.

    Compared fairly: a sender is scored only when Zammad's is an address (not "MAILER-DAEMON",
    not "Test test@example.com") and not taken from Reply-To; a name or subject where
    Zammad's value is its own misreading of the bytes (see _zammad_misread) counts for us."""
    scores: dict[str, list[str]] = {"sender": [], "name": [], "subject": [], "body": [], "mojibake": []}
    for stem, want in zammad_expectations(root).items():
        try:
            mail = parse_mail(raw_mail(root / "zammad" / "mail" / f"{stem}.box"))
        except UnparseableMail:
            mail = None
        sender = str(want.get("from_email") or "").strip('"').lower()
        scored_sender = bool(_ADDR_SPEC_RE.fullmatch(sender)) and sender not in str(want.get("reply-to") or "").lower()
        if scored_sender:
            scores["sender"].append(stem if mail and mail.from_addr == sender else f"!{stem}")
        name = want.get("from_display_name")
        if isinstance(name, str) and scored_sender:
            ours = mail.from_name if mail else ""
            ok = _fold(ours) == _fold(name.strip('"')) or (bool(ours) and _zammad_misread(name, ours))
            scores["name"].append(stem if ok else f"!{stem}")
        subject = want.get("subject")
        if isinstance(subject, str):
            ours = mail.subject if mail else ""
            ok = _fold(ours) == _fold(subject) or (bool(ours) and _zammad_misread(subject, ours))
            scores["subject"].append(stem if ok else f"!{stem}")
        body = want.get("body")
        expected_text = ""
        if isinstance(body, str) and body.strip() and body.strip() != "no visible content":   # Zammad's placeholder
            expected_text = htmltext.to_text(body).text if want.get("content_type") == "text/html" else body
            if not (mail and _only_the_title(expected_text, mail)):
                scores["body"].append(stem if mail and _same_body(_fold(expected_text), mail) else f"!{stem}")
        if mail is not None and any(_MOJIBAKE_RE.search(v) for v in (mail.subject, mail.from_name, mail.text)) \
                and not _MOJIBAKE_RE.search(f"{subject} {name} {expected_text}"):
            scores["mojibake"].append(f"!{stem}")
    return scores


def zammad_figures(root: Path, verbose: bool) -> None:
    scores = zammad_scores(root)
    parts = []
    for field in ("sender", "name", "subject", "body"):
        done = scores[field]
        parts.append(f"{field} {sum(not s.startswith('!') for s in done)} of {len(done)}")
        if verbose:
            misses = [s[1:] for s in done if s.startswith("!")]
            if misses:
                print(f"  wrong  zammad {field}: {', '.join(misses)}")
    print(f"zammad mails agreeing with Zammad's parse: {'; '.join(parts)}; mojibake: {len(scores['mojibake'])}"
          + (f" ({', '.join(s[1:] for s in scores['mojibake'])})" if verbose and scores["mojibake"] else ""))


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
    zammad_figures(args.realmail, args.verbose)
    whole_corpus(args.realmail, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
