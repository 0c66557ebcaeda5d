"""``mailbridge templates lint [DIR]`` and ``mailbridge templates preview NAME [--order ID] [--lang LANG]``.

Without DIR (or ``--dir``) both use the configured ``[daemon] templates``
folder when a configuration file is found, else the templates shipped with
mailbridge. A configuration that exists but does not load is an error (exit
status 2): linting other templates than the daemon uses would pass for the
wrong reason.

``preview`` renders with the template's sample values, or with ``--order`` with
that stored order's own data, the same plain context the daemon would give it
(in the order's language unless ``--lang`` says otherwise).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bridge.adapters.templates import TemplateError, Templates, shipped_templates
from bridge.cli.settings import one_account, open_store, selected_accounts
from bridge.config import Settings, find_config_path, load_settings
from bridge.domain import policy
from bridge.domain.template_contexts import LANGUAGES, TEMPLATES, sample
from bridge.services import feedback, guard
from bridge.services.account import AccountContext
from bridge.services.template_lint import UnusableFolder, lint


def run(args: argparse.Namespace) -> int:
    folder, config, settings = _folder_and_rules(args, getattr(args, "dir", None))
    if args.action == "lint":
        return _lint(folder, config, args)
    return _preview(folder, settings, args)


def _folder_and_rules(args: argparse.Namespace, given: str | None
                      ) -> tuple[Path, policy.PolicyConfig, Settings | None]:
    path = find_config_path(args.config, os.environ)
    settings = None
    if path.exists() or args.config:
        settings = load_settings(path)    # a ConfigError says what is wrong, exit status 2
        config = guard.policy_config(settings.policy, settings.relay)
        folder = settings.templates_dir
    else:
        config, folder = policy.DEFAULT_CONFIG, None
    if given:
        return Path(given), config, settings
    return folder or shipped_templates(), config, settings


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


def _preview(folder: Path, settings: Settings | None, args: argparse.Namespace) -> int:
    spec = TEMPLATES.get(args.name)
    if spec is None:
        print(f"mailbridge: no template {args.name!r}; known: {', '.join(TEMPLATES)}", file=sys.stderr)
        return 2
    templates = Templates(folder)
    if args.order:
        made = _order_context(templates, settings, spec.name, args)
        if isinstance(made, int):
            return made
        context, lang, values = made
    else:
        lang = (args.lang or "en").lower()
        if _base_language(lang) not in LANGUAGES:
            print(f"mailbridge: no sample values in {args.lang!r}; languages: {', '.join(LANGUAGES)}",
                  file=sys.stderr)
            return 2
        context, values = sample(spec.name, _base_language(lang)), "sample values"
    try:
        rendered = templates.render_localized(spec.name, lang, context)
    except TemplateError as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return 1
    print(f"Template: {rendered.template} in {folder} ({values}, language {lang})")
    print(f"Subject: {rendered.subject}")
    print()
    print(rendered.text, end="")
    return 0


def _base_language(tag: str) -> str:
    return tag.lower().partition("-")[0].partition("_")[0]


def _order_context(templates: Templates, settings: Settings | None, name: str, args: argparse.Namespace
                   ) -> tuple[dict[str, Any], str, str] | int:
    """(context, language, what the values are) for ``--order``, or the exit status after saying what is wrong."""
    if name not in feedback.ORDER_TEMPLATES:
        print(f"mailbridge: --order: template {name!r} is not made from an order; "
              f"those that are: {', '.join(feedback.ORDER_TEMPLATES)}", file=sys.stderr)
        return 2
    if settings is None:
        print("mailbridge: --order reads the order from the database: give the configuration with -c FILE "
              "(or MAILBRIDGE_CONFIG)", file=sys.stderr)
        return 2
    accounts = selected_accounts(settings, args.account)
    account = one_account(accounts) if accounts is not None else None
    if account is None:
        return 2
    acct = AccountContext.build(settings.account(account), b"", templates, settings.relay, settings.policy)
    engine = open_store(settings)
    try:
        with engine.begin() as conn:
            context = feedback.order_context(conn, acct, name, args.order)
    finally:
        engine.dispose()
    if context is None:
        print(f"mailbridge: no order {args.order} in account {account}; import the order report first "
              "(mailbridge orders import FILE --account NAME)", file=sys.stderr)
        return 2
    lang = (args.lang or context.get("language") or "en").lower()
    if args.lang:
        context = {**context, "language": _base_language(lang)} if "language" in context else context
    return context, lang, f"order {args.order} of account {account}"
