"""``mailbridge templates lint [DIR]`` and ``mailbridge templates preview NAME [--lang LANG]``.

Without DIR (or ``--dir``) both use the configured ``[daemon] templates``
folder when a configuration file is found, else the templates shipped with
mailbridge. A configuration that exists but does not load is an error (exit
status 2): linting other templates than the daemon uses would pass for the
wrong reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bridge.adapters.templates import TemplateError, Templates, shipped_templates
from bridge.config import find_config_path, load_settings
from bridge.domain import policy
from bridge.domain.template_contexts import LANGUAGES, TEMPLATES, sample
from bridge.services import guard
from bridge.services.template_lint import UnusableFolder, lint


def run(args: argparse.Namespace) -> int:
    folder, config = _folder_and_rules(args, getattr(args, "dir", None))
    if args.action == "lint":
        return _lint(folder, config, args)
    return _preview(folder, config, args)


def _folder_and_rules(args: argparse.Namespace, given: str | None) -> tuple[Path, policy.PolicyConfig]:
    path = find_config_path(args.config, os.environ)
    if path.exists() or args.config:
        settings = load_settings(path)    # a ConfigError says what is wrong, exit status 2
        config = guard.policy_config(settings.policy, settings.relay)
        folder = settings.templates_dir
    else:
        config, folder = policy.DEFAULT_CONFIG, None
    if given:
        return Path(given), config
    return folder or shipped_templates(), config


def _lint(folder: Path, config: policy.PolicyConfig, args: argparse.Namespace) -> int:
    try:
        findings = lint(folder, args.clock(), config)
    except UnusableFolder as exc:
        print(f"mailbridge: cannot lint templates: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    count = len(findings)
    print(f"{folder}: {count} problem{'s' if count != 1 else ''}" if count else f"{folder}: all templates pass",
          file=sys.stderr)
    return 1 if findings else 0


def _preview(folder: Path, config: policy.PolicyConfig, args: argparse.Namespace) -> int:
    spec = TEMPLATES.get(args.name)
    if spec is None:
        print(f"mailbridge: no template {args.name!r}; known: {', '.join(TEMPLATES)}", file=sys.stderr)
        return 2
    lang = (args.lang or "en").lower()
    if lang.partition("-")[0].partition("_")[0] not in LANGUAGES:
        print(f"mailbridge: no sample values in {args.lang!r}; languages: {', '.join(LANGUAGES)}", file=sys.stderr)
        return 2
    templates = Templates(folder)
    context = sample(spec.name, lang.partition("-")[0].partition("_")[0])
    try:
        rendered = templates.render_localized(spec.name, lang, context)
    except TemplateError as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return 1
    print(f"Template: {rendered.template} in {folder} (sample values, language {lang})")
    print(f"Subject: {rendered.subject}")
    print()
    print(rendered.text, end="")
    return 0
