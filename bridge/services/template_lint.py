"""``mailbridge templates lint``: every template of a folder loaded, rendered with sample data in each
language, and buyer templates checked against the guard's content rules.

A finding names the template file and line, the rule and what to do, printed
``file:line rule: message``. Rules of the lint itself:

- ``syntax``: the file does not load (Jinja syntax);
- ``undefined``: the template uses a variable its context does not have
  (bridge/domain/template_contexts.py documents each template's variables);
- ``unsafe``: the template reaches for names the sandbox refuses (``_private``);
- ``render``: rendering with the sample values fails;
- ``missing``: a file mailbridge needs is not in the folder;
- ``unknown_template``, ``unknown_language``: a ``*.subject.j2``/``*.txt.j2`` file
  mailbridge never renders (a typo in the name?).

Buyer templates (``buyer_reply``, ``feedback_request``) then pass the guard's
content rules (:data:`CONTENT_RULES`) as the category they are sent in; the
buyer's quoted words are left out, as the relay does. Staff templates get only
the checks above. Other ``*.j2`` files (included parts) are only loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from bridge.adapters.templates import TemplateError, Templates
from bridge.domain import policy
from bridge.domain.template_contexts import LANGUAGES, TEMPLATES, TemplateSpec, sample

#: The guard's rules that judge wording (what a template decides), not who, when or what is attached.
CONTENT_RULES: tuple[str, ...] = (
    "no_links", "no_contact_details", "no_review_manipulation", "no_important_unless_critical", "text_length",
    "no_marketing", "no_opt_out_links", "not_thank_you_only",
)
_SUBJECT_RULES = frozenset({"no_important_unless_critical"})
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)(?:\.(?P<lang>[A-Za-z]{2,3}))?\.(?P<part>subject|txt)\.j2$")
_PARTS = ("subject", "txt")
_PRIVATE_RE = re.compile(r"_+[A-Za-z]\w*\Z")
_QUOTE_PLACEHOLDER = "\x00mailbridge-quoted-buyer-message\x00"
_SELLER = "seller@acme.example"
_BUYER = "k3j9x0qma2b7@marketplace.amazon.com"


class UnusableFolder(Exception):
    """The folder cannot be linted: it does not exist, cannot be read, or holds no ``*.j2`` file."""


@dataclass(frozen=True, order=True)
class LintFinding:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.rule}: {self.message}"


def lint(folder: Path, now: datetime, config: policy.PolicyConfig = policy.DEFAULT_CONFIG) -> list[LintFinding]:
    """Every problem of the templates in ``folder``, sorted by file and line; raises UnusableFolder."""
    try:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(".j2") and p.is_file())
    except OSError as exc:
        raise UnusableFolder(f"{folder}: {exc.strerror or exc}") from exc
    if not files:
        raise UnusableFolder(f"{folder} holds no templates (*.j2 files)")
    templates = Templates(folder)
    # Its sandbox also keeps Jinja's constant folding away from {{ 10 ** 10 ** 9 }} while parsing.
    env = templates.env
    findings: set[LintFinding] = set()
    sources: dict[str, str] = {}
    pairs: dict[str, str] = {}               # template name ("feedback_request.de") -> its base name
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            findings.add(LintFinding(str(path), 1, "syntax", f"cannot read the file: {exc}"))
            continue
        sources[path.name] = source
        findings.update(_static(env, path, source))
        m = _FILE_RE.match(path.name)
        if m is None:
            continue                          # an included part: loading it was the check
        name, lang = m["name"], m["lang"]
        if name not in TEMPLATES:
            findings.add(LintFinding(str(path), 1, "unknown_template", f"mailbridge renders no template {name!r}; "
                                     f"it renders {', '.join(TEMPLATES)} (a typo in the file name?)"))
        elif lang is not None and lang not in LANGUAGES:
            findings.add(LintFinding(str(path), 1, "unknown_language", f"{lang!r} is not a language mailbridge "
                                     f"writes in ({', '.join(LANGUAGES)})"))
        else:
            pairs[f"{name}.{lang}" if lang else name] = name
    for name in TEMPLATES:
        pairs.setdefault(name, name)          # every template mailbridge renders must be there
    broken_files = {f.file for f in findings if f.rule in ("syntax", "unsafe")}
    for full, base in sorted(pairs.items()):
        missing = [folder / f"{full}.{part}.j2" for part in _PARTS if f"{full}.{part}.j2" not in sources]
        for path in missing:
            findings.add(LintFinding(str(path), 1, "missing", f"mailbridge needs this file to write {full}: "
                                     f"copy it from the templates shipped with mailbridge"))
        if missing or any(str(folder / f"{full}.{part}.j2") in broken_files for part in _PARTS):
            continue
        findings.update(_render_and_check(templates, TEMPLATES[base], full, folder, sources, now, config))
    return sorted(findings)


def _static(env: jinja2.Environment, path: Path, source: str) -> list[LintFinding]:
    """Syntax, names the sandbox refuses, and variables the template's context does not have (with lines)."""
    try:
        tree = env.parse(source)
        tokens = list(env.lex(source))
    except jinja2.TemplateSyntaxError as exc:
        return [LintFinding(str(path), exc.lineno, "syntax", exc.message or "syntax error")]
    out: list[LintFinding] = []
    for line, kind, value in tokens:
        text = value.strip("'\"") if kind == "string" else value
        if kind in ("name", "string") and _PRIVATE_RE.match(text):
            out.append(LintFinding(str(path), line, "unsafe", f"{text!r}: templates cannot reach names starting "
                                   "with '_' (the sandbox refuses them); use the documented variables"))
    spec = TEMPLATES.get(path.name.split(".")[0])
    if spec is not None:
        for name in sorted(jinja2.meta.find_undeclared_variables(tree) - spec.names):
            line = next((ln for ln, kind, value in tokens if kind == "name" and value == name), 1)
            out.append(LintFinding(str(path), line, "undefined", f"{name!r} is not a variable of {spec.name}; it "
                                   f"has {', '.join(v.name for v in spec.variables)} (docs/templates.md)"))
    return out


def _languages(spec: TemplateSpec, full: str) -> tuple[str, ...]:
    lang = full.rpartition(".")[2] if "." in full else None
    if lang:
        return (lang,)
    # The template without a language is what every buyer without a file of their language gets.
    return LANGUAGES if spec.audience == "buyer" else tuple(spec.samples)


def _render_and_check(templates: Templates, spec: TemplateSpec, full: str, folder: Path, sources: Mapping[str, str],
                      now: datetime, config: policy.PolicyConfig) -> list[LintFinding]:
    languages = _languages(spec, full)
    hits: dict[tuple[str, int, str, str], list[str]] = {}     # one finding, the languages it shows in
    for lang in languages:
        context = sample(spec.name, lang)
        try:
            rendered = templates.render(full, context)
            own = (templates.render(full, {**context, spec.quoted: _QUOTE_PLACEHOLDER}).text
                   .replace(_QUOTE_PLACEHOLDER, "") if spec.quoted else rendered.text)
        except TemplateError as exc:
            return [_render_finding(exc, folder, full)]   # one language says it; the others would repeat it
        if spec.audience != "buyer" or spec.category is None:
            continue
        draft = policy.Draft(from_addr=_SELLER, to_addr=_BUYER, subject=rendered.subject, text=own,
                             category=spec.category, quoted_original=rendered.text if spec.quoted else None)
        ctx = policy.PolicyContext(seller_address=_SELLER, buyer_alias=_BUYER, now=now, order_completed_at=now,
                                   buyer_original_text=context.get(spec.quoted) if spec.quoted else None)
        for finding in policy.check(draft, ctx, config).findings:
            if finding.rule not in CONTENT_RULES:
                continue
            file, line = _source_of(finding, full, folder, sources, context)
            quote = f" [{' '.join(finding.excerpt.split())[:60]!r}]" if finding.excerpt else ""
            severity = "" if finding.severity is policy.Severity.BLOCK else " (a warning only)"
            hits.setdefault((file, line, finding.rule, f"{finding.reason}{quote}{severity}"), []).append(lang)
    out: list[LintFinding] = []
    for (file, line, rule, message), found_in in hits.items():
        where = "" if len(languages) == 1 else (
            " (with the sample values of every language)" if len(found_in) == len(languages)
            else f" (with the sample values in {', '.join(found_in)})")
        out.append(LintFinding(file, line, rule, message + where))
    return out


def _render_finding(exc: TemplateError, folder: Path, full: str) -> LintFinding:
    cause: BaseException | None = exc.__cause__
    rule = ("unsafe" if isinstance(cause, jinja2.exceptions.SecurityError) else
            "undefined" if isinstance(cause, jinja2.UndefinedError) else "render")
    file = str(exc.file) if exc.file else str(folder / f"{full}.txt.j2")
    message = str(exc).split(": ", 1)[-1] if str(exc).startswith("template ") else str(exc)
    return LintFinding(file, exc.line or 1, rule, message)


def _source_of(finding: policy.Finding, full: str, folder: Path, sources: Mapping[str, str],
               context: Mapping[str, Any]) -> tuple[str, int]:
    """The file and line a finding's text most likely comes from.

    The guard judges rendered text; the admin edits the source. So, in the
    subject file first for a subject rule, else the text file first:
    1. the excerpt as it stands in the source, ignoring case and runs of
       spaces (literal wording is what templates are mostly made of);
    2. else, when a sample value holds the excerpt, the line that prints that
       variable (``{{ seller_name }}``);
    3. else the line holding the most of the excerpt's words (4 letters or more);
    4. else line 1.
    """
    parts = ("subject", "txt") if finding.rule in _SUBJECT_RULES or finding.span is None else ("txt", "subject")
    names = [f"{full}.{part}.j2" for part in parts]
    excerpt = " ".join((finding.excerpt or "").split()).lower()
    if excerpt:
        for filename in names:
            for number, line in enumerate(sources.get(filename, "").splitlines(), 1):
                if excerpt in " ".join(line.split()).lower():
                    return str(folder / filename), number
        for variable, value in context.items():
            if excerpt in " ".join(str(value).split()).lower():
                pattern = re.compile(rf"\b{re.escape(variable)}\b")
                for filename in names:
                    for number, line in enumerate(sources.get(filename, "").splitlines(), 1):
                        if pattern.search(line) and ("{{" in line or "{%" in line):
                            return str(folder / filename), number
        words = {w for w in re.findall(r"\w{4,}", excerpt)}
        best: tuple[int, str, int] = (0, names[0], 1)
        for filename in names:
            for number, line in enumerate(sources.get(filename, "").splitlines(), 1):
                score = sum(1 for w in words if w in line.lower())
                if score > best[0]:
                    best = (score, filename, number)
        if best[0]:
            return str(folder / best[1]), best[2]
    return str(folder / names[0]), 1
