"""``mailbridge db upgrade`` and ``mailbridge db current``: the database's schema revision.

``current`` exit status: 0 when the schema is the one this mailbridge uses, 1 when
``mailbridge db upgrade`` is needed (or the database is empty), 2 when this mailbridge
cannot use it at all (a newer revision, or tables it does not know).
``upgrade`` exit status: 0 when the database is at the newest revision afterwards, 2 when
it refused (nothing changed).
"""

from __future__ import annotations

import argparse

from bridge.cli.settings import load, setup_logging
from bridge.store.engine import display_url, schema_state, upgrade_command, upgrade_database
from bridge.store.schema import SchemaState, refusal

ACTIONS = {
    "created": "the database was empty: created at revision {revision}",
    "upgraded": "upgraded from revision {before} to {revision}",
    "adopted": ("the database was made before schema migrations; its tables are those of revision {before}: "
                "recorded as {before} and upgraded to {revision}"),
    "none": "already at the newest revision, {revision}: nothing to do",
}


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    if args.action == "upgrade":
        setup_logging(args.log_level or settings.log_level)
        done = upgrade_database(settings.database.url)
        before = done.before.revision or done.before.matches
        for revision in done.ran:
            print(f"ran revision {revision.id}: {revision.doc}")
        print(ACTIONS[done.action].format(before=before, revision=done.revision))
        return 0
    state = schema_state(settings.database.url)
    print(_describe(state, settings.database.url, upgrade_command(settings.path)))
    if state.status == "current":
        return 0
    return 1 if state.status == "empty" or state.upgradable else 2


def _describe(state: SchemaState, url: str, command: str) -> str:
    if state.status == "current":
        return f"revision {state.revision} (the newest): up to date"
    if state.status == "empty":
        return f"empty: no tables yet; mailbridge run, or {command}, creates them at revision {state.head}"
    return refusal(state, display_url(url), command)
