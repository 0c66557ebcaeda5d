"""bridge.config: strict TOML loading.

Most tests are tables: (description, mutation of a valid config dict, expected
substring of the error). The valid dict has two accounts so that account
labels and cross-account rules are exercised.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    KNOWN_KEYS,
    AccountSettings,
    ConfigError,
    DatabaseSettings,
    ImapSettings,
    OutboxSettings,
    Secret,
    SecuritySettings,
    Settings,
    SmtpSettings,
    find_config_path,
    load_settings,
    parse_settings,
)
from bridge.domain.marketplaces import MARKETPLACES

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "mailbridge.example.toml"
CONFIG = Path("/etc/mailbridge/mailbridge.toml")

# Every secret contains this marker, so "no secret in the message" is one check.
MARK = "s3cr3t"
FILES = {
    Path("/run/secrets/imap-us"): f"imap-us-{MARK}\n",
    Path("/run/secrets/smtp-us"): f"smtp-us-{MARK}\n",
    Path("/run/secrets/token"): f"token-key-{MARK}-0123456789\n",
    Path("/run/secrets/empty"): "\n",
}
ENV = {"UK_IMAP_PASSWORD": f"imap-uk-{MARK}", "EMPTY": ""}

A0 = 'accounts[0] ("acme-us")'
A1 = 'accounts[1] ("acme-uk")'


def read_file(path: Path) -> str:
    try:
        return FILES[path]
    except KeyError:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path)) from None


def valid() -> dict[str, Any]:
    return {
        "daemon": {"templates": "/srv/templates", "log_level": "INFO", "log_format": "json"},
        "database": {"url": "sqlite:////var/lib/mailbridge/mailbridge.db"},
        "security": {"secret_file": "/run/secrets/token"},
        "outbox": {"max_attempts": 10, "retry_base_seconds": 30, "retry_max_seconds": 3600,
                   "reconcile_after_seconds": 120, "batch_size": 20},
        "relay": {"confirm_to_staff": True, "attachment_types": ["pdf", "png"], "max_attachment_bytes": 10485760,
                  "max_attachments": 5},
        "policy": {"rules": {"no_links": "warn"}, "link_domains": ["ups.com"], "max_text_chars": 2000},
        "metrics": {"listen": "127.0.0.1:9464"},
        "cluster": {"lease_seconds": 20, "renew_seconds": 5, "operation_seconds": 10},
        "accounts": [
            {
                "name": "acme-us",
                "marketplace": "amazon.com",
                "seller_name": "Acme Outdoor",
                "seller_address": "seller@acme.example",
                "staff_address": "support@acme.example",
                "staff_senders": ["*@acme.example"],
                "reply_address": "seller+{token}@acme.example",
                "forward_existing": False,
                "imap": {
                    "host": "imap.acme.example",
                    "port": 993,
                    "security": "tls",
                    "username": "seller@acme.example",
                    "password_file": "/run/secrets/imap-us",
                    "folder": "INBOX",
                    "processed_folder": "",
                    "quarantine_folder": "",
                    "sent_folder": "Sent",
                    "idle": True,
                    "poll_seconds": 60,
                    "batch_size": 200,
                    "max_message_bytes": 26214400,
                    "timeout_seconds": 60,
                },
                "smtp": {
                    "host": "smtp.acme.example",
                    "port": 587,
                    "security": "starttls",
                    "username": "seller@acme.example",
                    "password_file": "/run/secrets/smtp-us",
                    "sent_copies": "append",
                    "timeout_seconds": 60,
                    "max_per_minute": 30,
                    "max_per_day": 10000,
                },
                "feedback": {
                    "enabled": True,
                    "days_after": 7,
                    "send_window": "09:00-18:00",
                    "send_days": ["mon", "tue", "wed", "thu", "fri"],
                    "timezone": "America/New_York",
                    "daily_cap": 0,
                    "exclude_skus": ["GIFT-CARD"],
                    "exclude_recent_conversation_days": 14,
                    "language": "en",
                },
                "reminders": {
                    "after_hours": [12, 20],
                    "no_response_phrases": ["no response needed"],
                },
            },
            {
                "name": "acme-uk",
                "marketplace": "amazon.co.uk",
                "seller_name": "Acme Outdoor UK",
                "seller_address": "seller@acme-uk.example",
                "staff_address": "support@acme.example",
                "staff_senders": ["*@acme.example"],
                "imap": {
                    "host": "imap.acme-uk.example",
                    "username": "seller@acme-uk.example",
                    "password_env": "UK_IMAP_PASSWORD",
                },
                "smtp": {"host": "smtp.acme-uk.example"},
            },
        ],
    }


def parse(
    data: Mapping[str, object],
    environ: Mapping[str, str] = ENV,
    read: Callable[[Path], str] = read_file,
) -> Settings:
    return parse_settings(data, CONFIG, environ, read)


def error_of(data: Mapping[str, object], environ: Mapping[str, str] = ENV) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, environ)
    return str(info.value)


# --- mutations ------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _walk(data: dict[str, Any], dotted: str) -> tuple[Any, Any]:
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    node: Any = data
    for part in parents:
        node = node[part]
    return node, last


def put(dotted: str, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        node, last = _walk(data, dotted)
        node[last] = value
    return mutate


def drop(dotted: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        node, last = _walk(data, dotted)
        del node[last]
    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)
    return mutate


def mutated(mutation: Mutation) -> dict[str, Any]:
    data = valid()
    mutation(data)
    return data


# --- the error table ------------------------------------------------------

ERROR_CASES: list[tuple[str, Mutation, str]] = [
    # unknown keys, with suggestions
    ("unknown top-level table", put("deamon", {}), "deamon: unknown key; did you mean 'daemon'?"),
    ("unknown daemon key", put("daemon.log_levle", "INFO"), "daemon.log_levle: unknown key; did you mean 'log_level'?"),
    ("unknown database key", put("database.uri", "x"), "database.uri: unknown key; did you mean 'url'?"),
    ("unknown security key", put("security.secret_fle", "x"), "security.secret_fle: unknown key; did you mean 'secret_file'?"),
    ("unknown outbox key", put("outbox.max_attempt", 3), "outbox.max_attempt: unknown key; did you mean 'max_attempts'?"),
    ("unknown account key", put("accounts.0.staff_sender", ["x@y.z"]), f"{A0}.staff_sender: unknown key; did you mean 'staff_senders'?"),
    ("unknown imap key", put("accounts.0.imap.poll_second", 60), f"{A0}.imap.poll_second: unknown key; did you mean 'poll_seconds'?"),
    ("unknown smtp key", put("accounts.1.smtp.sent_copy", "none"), f"{A1}.smtp.sent_copy: unknown key; did you mean 'sent_copies'?"),
    ("unknown key, nothing close", put("accounts.0.colour", "red"), f"{A0}.colour: unknown key; known keys here: name, marketplace,"),
    ("misspelt password is not echoed", put("accounts.0.smtp.pasword", f"typo-{MARK}"), f"{A0}.smtp.pasword: unknown key; did you mean 'password'?"),
    # tables of the wrong shape
    ("daemon not a table", put("daemon", "x"), 'daemon: expected a table ([daemon]), got a string ("x")'),
    ("imap not a table", put("accounts.0.imap", "imap.acme.example"), f"{A0}.imap: expected a table ([accounts.imap])"),
    ("accounts missing", drop("accounts"), "accounts: no accounts configured; add at least one [[accounts]] table"),
    ("accounts empty", put("accounts", []), "accounts: no accounts configured"),
    ("accounts a single table", put("accounts", {"name": "x"}), "accounts: expected an array of tables ([[accounts]], double brackets), got a table"),
    ("account not a table", put("accounts.1", "acme-uk"), 'accounts[1]: expected a table ([[accounts]]), got a string ("acme-uk")'),
    # required keys
    ("name missing", drop("accounts.0.name"), "accounts[0].name: missing; required"),
    ("marketplace missing", drop("accounts.0.marketplace"), f"{A0}.marketplace: missing; required"),
    ("seller_name missing", drop("accounts.1.seller_name"), f"{A1}.seller_name: missing; required"),
    ("seller_name blank", put("accounts.1.seller_name", "  "), f"{A1}.seller_name: is empty; required"),
    ("seller_address missing", drop("accounts.0.seller_address"), f"{A0}.seller_address: missing; required"),
    ("staff_address missing", drop("accounts.0.staff_address"), f"{A0}.staff_address: missing; required"),
    ("staff_senders missing", drop("accounts.0.staff_senders"), f"{A0}.staff_senders: missing; required"),
    ("imap.host missing", drop("accounts.0.imap.host"), f"{A0}.imap.host: missing; required"),
    ("imap.host empty", put("accounts.0.imap.host", ""), f"{A0}.imap.host: is empty; required"),
    ("imap.username missing", drop("accounts.1.imap.username"), f"{A1}.imap.username: missing; required"),
    ("imap password missing", drop("accounts.1.imap.password_env"), f"{A1}.imap.password_file: no password given; set exactly one of password_file"),
    ("smtp.host missing", drop("accounts.1.smtp.host"), f"{A1}.smtp.host: missing; required"),
    # types and ranges
    ("string given a number", put("accounts.0.seller_name", 5), f'{A0}.seller_name: expected a string, got an integer (5)'),
    ("bool given a string", put("accounts.0.forward_existing", "false"), f'{A0}.forward_existing: expected true or false (no quotes), got a string ("false")'),
    ("bool given an int", put("accounts.0.imap.idle", 1), f"{A0}.imap.idle: expected true or false (no quotes), got an integer (1)"),
    ("port quoted", put("accounts.0.imap.port", "993"), f'{A0}.imap.port: expected an integer from 1 to 65535, got a string ("993"); write port = 993 without quotes'),
    ("port a bool", put("accounts.0.imap.port", True), f"{A0}.imap.port: expected an integer from 1 to 65535, got a boolean (true)"),
    ("port a float", put("accounts.0.imap.port", 993.0), f"{A0}.imap.port: expected an integer from 1 to 65535, got a float (993.0)"),
    ("port zero", put("accounts.0.imap.port", 0), f"{A0}.imap.port: got 0; expected an integer from 1 to 65535"),
    ("smtp port too big", put("accounts.1.smtp.port", 65536), f"{A1}.smtp.port: got 65536; expected an integer from 1 to 65535"),
    ("poll_seconds too small", put("accounts.0.imap.poll_seconds", 4), f"{A0}.imap.poll_seconds: got 4; expected an integer from 5 to 3600"),
    ("poll_seconds too big", put("accounts.0.imap.poll_seconds", 3601), f"{A0}.imap.poll_seconds: got 3601; expected an integer from 5 to 3600"),
    ("batch_size zero", put("accounts.0.imap.batch_size", 0), f"{A0}.imap.batch_size: got 0; expected an integer from 1 to 1000"),
    ("batch_size too big", put("accounts.0.imap.batch_size", 1001), f"{A0}.imap.batch_size: got 1001; expected an integer from 1 to 1000"),
    ("max_message_bytes under 1 MiB", put("accounts.0.imap.max_message_bytes", 1048575), f"{A0}.imap.max_message_bytes: got 1048575; expected an integer of at least 1048576 (1 MiB)"),
    ("imap timeout zero", put("accounts.0.imap.timeout_seconds", 0), f"{A0}.imap.timeout_seconds: got 0; expected a positive number of seconds"),
    ("smtp timeout negative", put("accounts.0.smtp.timeout_seconds", -1.5), f"{A0}.smtp.timeout_seconds: got -1.5; expected a positive number of seconds"),
    ("timeout infinite", put("accounts.0.smtp.timeout_seconds", math.inf), f"{A0}.smtp.timeout_seconds: got inf; expected a positive number"),
    ("timeout nan", put("accounts.0.smtp.timeout_seconds", math.nan), f"{A0}.smtp.timeout_seconds: got nan; expected a positive number"),
    ("timeout a bool", put("accounts.0.imap.timeout_seconds", True), f"{A0}.imap.timeout_seconds: expected a positive number of seconds, got a boolean (true)"),
    ("timeout quoted", put("accounts.0.imap.timeout_seconds", "60"), f'{A0}.imap.timeout_seconds: expected a positive number of seconds, got a string ("60")'),
    ("max_attempts zero", put("outbox.max_attempts", 0), "outbox.max_attempts: got 0; expected an integer of at least 1"),
    ("retry_base_seconds zero", put("outbox.retry_base_seconds", 0), "outbox.retry_base_seconds: got 0; expected a positive number"),
    ("retry max below base", put("outbox.retry_max_seconds", 10), "outbox.retry_max_seconds: got 10, less than retry_base_seconds (30)"),
    ("a send may outlast reconcile", put("accounts.1.smtp.timeout_seconds", 120), f"outbox.reconcile_after_seconds: got 120, not more than {A1}.smtp.timeout_seconds (120)"),
    ("reconcile before a send ends", put("outbox.reconcile_after_seconds", 30), f"outbox.reconcile_after_seconds: got 30, not more than {A0}.smtp.timeout_seconds (60)"),
    ("attachment types not a list", put("relay.attachment_types", "pdf"), 'relay.attachment_types: expected an array of file name extensions such as ["pdf", "jpg", "png"], got a string ("pdf")'),
    ("attachment type with a path", put("relay.attachment_types", ["../exe"]), 'relay.attachment_types[0]: got "../exe"; expected a file name extension such as "pdf"'),
    ("negative attachment count", put("relay.max_attachments", -1), "relay.max_attachments"),
    ("relay flag not a bool", put("relay.confirm_to_staff", "yes"), "relay.confirm_to_staff"),
    ("unknown relay key", put("relay.confirm_staff", True), "did you mean 'confirm_to_staff'"),
    ("unknown policy rule", put("policy.rules", {"no_link": "warn"}), "policy.rules.no_link: no such rule; did you mean 'no_links'"),
    ("bad policy mode", put("policy.rules", {"no_links": "maybe"}), "policy.rules.no_links: got a string"),
    ("policy rules not a table", put("policy.rules", ["no_links"]), "policy.rules: got an array"),
    ("link domain without a dot", put("policy.link_domains", ["localhost"]), "policy.link_domains"),
    ("staff_senders a string", put("accounts.0.staff_senders", "*@acme.example"), f'{A0}.staff_senders: expected a non-empty array of address patterns'),
    ("staff_senders empty", put("accounts.0.staff_senders", []), f"{A0}.staff_senders: expected a non-empty array of address patterns"),
    # addresses
    ("address without @", put("accounts.0.seller_address", "seller"), f'{A0}.seller_address: got "seller", not an email address: expected exactly one @'),
    ("address with two @", put("accounts.0.seller_address", "a@b@acme.example"), "not an email address: expected exactly one @"),
    ("address empty local part", put("accounts.0.staff_address", "@acme.example"), f"{A0}.staff_address: got \"@acme.example\", not an email address: expected text on both sides of the @"),
    ("address with a space", put("accounts.0.staff_address", "sup port@acme.example"), "not an email address: expected no spaces"),
    ("address with display name", put("accounts.0.staff_address", "Support <support@acme.example>"), "not an email address: expected no spaces (only the bare address, no display name)"),
    ("address in angle brackets", put("accounts.0.staff_address", "<support@acme.example>"), "not an email address: expected only the bare address, without < >"),
    ("address with empty domain label", put("accounts.0.staff_address", "support@acme..example"), "not an email address: the domain has an empty label"),
    ("staff address is the seller", put("accounts.0.staff_address", "Seller@acme.example"), f"{A0}.staff_address: is the seller address; forwarding buyer mail into the bridged mailbox would loop"),
    ("staff address is another seller", put("accounts.0.staff_address", "seller@acme-uk.example"), f'{A0}.staff_address: "seller@acme-uk.example" is the seller address of {A1}; forwarding buyer mail into a bridged mailbox would loop'),
    ("seller address reused", put("accounts.1.seller_address", "SELLER@acme.example"), f'{A1}.seller_address: "seller@acme.example" is already the seller address of {A0}'),
    # staff sender globs
    ("staff sender not a string", put("accounts.0.staff_senders", ["*@acme.example", 5]), f"{A0}.staff_senders[1]: expected an address pattern string, got an integer (5)"),
    ("staff sender without @", put("accounts.0.staff_senders", ["acme.example"]), f'{A0}.staff_senders[0]: got "acme.example"; expected an address or a glob'),
    ("staff sender matches everyone", put("accounts.0.staff_senders", ["*"]), f"{A0}.staff_senders[0]: got \"*\"; expected an address or a glob such as \"*@acme.example\": expected exactly one @"),
    ("staff sender any domain", put("accounts.0.staff_senders", ["*@*"]), "the domain part would match the domains of strangers"),
    ("staff sender whole TLD", put("accounts.0.staff_senders", ["*@*.com"]), "the domain part would match the domains of strangers"),
    ("staff sender trailing wildcard", put("accounts.0.staff_senders", ["*@acme.*"]), "the domain part would match the domains of strangers"),
    ("staff sender is a buyer relay", put("accounts.0.staff_senders", ["*@marketplace.amazon.com"]), "it matches marketplace buyer relay addresses (@marketplace.amazon.com), which would let buyers act as staff"),
    ("staff sender glob covers a relay", put("accounts.0.staff_senders", ["*@*.amazon.de"]), "it matches marketplace buyer relay addresses (@marketplace.amazon.de)"),
    # account names
    ("name with capitals and space", put("accounts.0.name", "Acme US"), 'accounts[0].name: got "Acme US"; expected 1-63 characters: lowercase letters, digits, "-" and "_"'),
    ("name starting with a dash", put("accounts.0.name", "-acme"), 'accounts[0].name: got "-acme"; expected 1-63 characters'),
    ("name too long", put("accounts.0.name", "a" * 64), "accounts[0].name: got \"aaaa"),
    ("name duplicated", put("accounts.1.name", "acme-us"), f'accounts[1] ("acme-us").name: duplicate account name "acme-us" (also {A0}); names must be unique'),
    # marketplace
    ("marketplace misspelt", put("accounts.0.marketplace", "amazom.com"), f"{A0}.marketplace: got \"amazom.com\"; did you mean 'amazon.com'? expected one of: amazon.ae, amazon.ca,"),
    ("marketplace unknown", put("accounts.0.marketplace", "etsy"), f'{A0}.marketplace: got "etsy"; expected one of: amazon.ae, amazon.ca, amazon.co.jp'),
    ("marketplace not a string", put("accounts.0.marketplace", 1), f"{A0}.marketplace: expected a string, got an integer (1)"),
    # feedback requests
    ("unknown feedback key", put("accounts.0.feedback.days_afer", 7), f"{A0}.feedback.days_afer: unknown key; did you mean 'days_after'?"),
    ("feedback before day 5", put("accounts.0.feedback.days_after", 4), f"{A0}.feedback.days_after: got 4; expected an integer from 5 to 30 (the marketplace's window"),
    ("feedback after day 30", put("accounts.0.feedback.days_after", 31), f"{A0}.feedback.days_after: got 31; expected an integer from 5 to 30"),
    ("send window garbled", put("accounts.0.feedback.send_window", "9-5"), f'{A0}.feedback.send_window: got "9-5"; expected "HH:MM-HH:MM"'),
    ("send window backwards", put("accounts.0.feedback.send_window", "18:00-09:00"), f'{A0}.feedback.send_window: got "18:00-09:00"; the window must end after it starts'),
    ("send window past midnight", put("accounts.0.feedback.send_window", "09:00-24:30"), f'{A0}.feedback.send_window: got "09:00-24:30"; hours run from 00 to 23'),
    ("unknown send day", put("accounts.0.feedback.send_days", ["mon", "funday"]), f"{A0}.feedback.send_days[1]: got \"funday\"; unknown day 'funday'"),
    ("no send day", put("accounts.0.feedback.send_days", []), f"{A0}.feedback.send_days: is empty; name at least one day"),
    ("unknown time zone", put("accounts.0.feedback.timezone", "Europe/Berln"), f'{A0}.feedback.timezone: got "Europe/Berln", not a time zone; did you mean "Europe/Berlin"?'),
    ("negative daily cap", put("accounts.0.feedback.daily_cap", -1), f"{A0}.feedback.daily_cap: got -1; expected an integer of at least 0"),
    ("language not a code", put("accounts.0.feedback.language", "German"), f'{A0}.feedback.language: got "German"; expected a language code'),
    ("empty sku", put("accounts.0.feedback.exclude_skus", [" "]), f'{A0}.feedback.exclude_skus[0]: got " "; is empty'),
    ("feedback not a table", put("accounts.0.feedback", True), f"{A0}.feedback: expected a table ([accounts.feedback])"),
    # [accounts.reminders]
    ("reminder hour 24", put("accounts.0.reminders.after_hours", [12, 24]), f"{A0}.reminders.after_hours[1]: got 24; expected an integer from 1 to 23"),
    ("reminder hour 0", put("accounts.0.reminders.after_hours", [0]), f"{A0}.reminders.after_hours[0]: got 0; expected an integer from 1 to 23"),
    ("reminder hour quoted", put("accounts.0.reminders.after_hours", ["12"]), f'{A0}.reminders.after_hours[0]: expected an integer from 1 to 23, got a string ("12")'),
    ("reminder hours not an array", put("accounts.0.reminders.after_hours", 12), f"{A0}.reminders.after_hours: expected an array of hours such as [12, 20], got an integer (12)"),
    ("phrase of punctuation only", put("accounts.0.reminders.no_response_phrases", ["..."]), f'{A0}.reminders.no_response_phrases[0]: got "..."; has no words'),
    # security / TLS
    ("imap security unknown", put("accounts.1.imap.security", "ssl"), f'{A1}.imap.security: got "ssl"; expected one of "tls", "starttls", "none"'),
    ("imap security none, remote", put("accounts.1.imap.security", "none"), f'{A1}.imap.security: "none" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not "imap.acme-uk.example"; TLS is required for non-local servers; use security = "tls" or "starttls"'),
    ("smtp security none, remote", put("accounts.0.smtp.security", "none"), f"{A0}.smtp.security: \"none\" is only allowed for a loopback host"),
    ("none on a near-loopback name", both(put("accounts.0.imap.host", "localhost.evil.example"), put("accounts.0.imap.security", "none")), "TLS is required for non-local servers"),
    ("none on 128.0.0.1", both(put("accounts.0.imap.host", "128.0.0.1"), put("accounts.0.imap.security", "none")), "TLS is required for non-local servers"),
    ("imap starttls on 993", put("accounts.0.imap.security", "starttls"), f'{A0}.imap.security: "starttls" does not work on port 993, which speaks TLS from the first byte; use security = "tls" (or the STARTTLS port 143)'),
    ("imap tls on 143", put("accounts.0.imap.port", 143), f'{A0}.imap.security: "tls" does not work on port 143'),
    ("smtp tls on 587", put("accounts.0.smtp.security", "tls"), f'{A0}.smtp.security: "tls" does not work on port 587, which starts in plain text and upgrades; use security = "starttls" (or the TLS port 465)'),
    ("smtp starttls on 465", put("accounts.0.smtp.port", 465), f'{A0}.smtp.security: "starttls" does not work on port 465'),
    ("host with scheme", put("accounts.0.imap.host", "imaps://imap.acme.example"), f'{A0}.imap.host: got "imaps://imap.acme.example"; expected a bare host name or IP address'),
    ("host with port", put("accounts.0.smtp.host", "smtp.acme.example:587"), f"{A0}.smtp.host: got \"smtp.acme.example:587\"; expected a bare host name: put the port in port"),
    # folders
    ("folder empty", put("accounts.0.imap.folder", ""), f"{A0}.imap.folder: is empty"),
    ("processed folder is the inbox", put("accounts.0.imap.processed_folder", "INBOX"), f'{A0}.imap.processed_folder: is the folder being read ("INBOX")'),
    ("quarantine folder is the inbox", put("accounts.0.imap.quarantine_folder", "INBOX"), f'{A0}.imap.quarantine_folder: is the folder being read ("INBOX")'),
    ("quarantine same as processed", both(put("accounts.0.imap.processed_folder", "Done"), put("accounts.0.imap.quarantine_folder", "Done")), f"{A0}.imap.quarantine_folder: is the same as processed_folder"),
    ("sent folder needed for copies", put("accounts.1.imap.sent_folder", ""), f'{A1}.imap.sent_folder: is empty but smtp.sent_copies is "append"'),
    ("sent_copies unknown", put("accounts.0.smtp.sent_copies", "copy"), f'{A0}.smtp.sent_copies: got "copy"; expected one of "append", "server", "none"'),
    # reply address
    ("reply address without token", put("accounts.0.reply_address", "seller@acme.example"), f"{A0}.reply_address: got \"seller@acme.example\", which contains {{token}} 0 times"),
    ("reply address with two tokens", put("accounts.0.reply_address", "s+{token}{token}@acme.example"), "which contains {token} 2 times"),
    ("reply address token in domain", put("accounts.0.reply_address", "seller@{token}.acme.example"), f"{A0}.reply_address: got \"seller@{{token}}.acme.example\", with {{token}} in the domain"),
    ("reply address other placeholder", put("accounts.0.reply_address", "{name}+{token}@acme.example"), "the only placeholder allowed is {token}"),
    ("reply address not an address", put("accounts.0.reply_address", "seller+{token}"), "not an email address: expected exactly one @"),
    ("reply address not a string", put("accounts.0.reply_address", True), f"{A0}.reply_address: expected a string, got a boolean (true)"),
    # secrets
    ("two password sources", put("accounts.0.imap.password", f"inline-{MARK}"), f"{A0}.imap.password: set only one of password_file, password (they are alternative sources"),
    ("password file missing", put("accounts.0.imap.password_file", "/run/secrets/nope"), f"{A0}.imap.password_file: cannot read /run/secrets/nope: No such file or directory"),
    ("relative password file, no systemd", put("accounts.0.imap.password_file", "imap"), "cannot read /etc/mailbridge/imap: No such file or directory; relative names resolve against $CREDENTIALS_DIRECTORY when systemd sets it (LoadCredential=), else against the config file's folder"),
    ("password file empty", put("accounts.0.smtp.password_file", "/run/secrets/empty"), f"{A0}.smtp.password_file: /run/secrets/empty is empty"),
    ("password file path empty", put("accounts.0.smtp.password_file", ""), f"{A0}.smtp.password_file: expected a file path (a non-empty string), got an empty string"),
    ("password file path not a string", put("accounts.0.smtp.password_file", 3), f"{A0}.smtp.password_file: expected a file path (a non-empty string), got an integer (3)"),
    ("password env unset", put("accounts.1.imap.password_env", "NO_SUCH_VAR"), f"{A1}.imap.password_env: environment variable NO_SUCH_VAR is not set"),
    ("password env empty", put("accounts.1.imap.password_env", "EMPTY"), f"{A1}.imap.password_env: environment variable EMPTY is empty"),
    ("password env plus inline", put("accounts.1.imap.password", 12345678), f"{A1}.imap.password: set only one of password_env, password"),
    ("inline password a number", both(drop("accounts.1.imap.password_env"), put("accounts.1.imap.password", 12345678)), f"{A1}.imap.password: expected the secret (a non-empty string), got an integer"),
    ("smtp password without username", put("accounts.0.smtp.username", ""), f'{A0}.smtp.password_file: is set but username is ""'),
    ("security secret too short", put("security", {"secret": "short"}), "security.secret: the secret is shorter than 16 characters"),
    ("security secret from short env", put("security", {"secret_env": "UK_IMAP_PASSWORD"}), "security.secret_env: the secret is shorter than 16 characters"),
    ("security secret two sources", put("security.secret_env", "X"), "security.secret_env: set only one of secret_file, secret_env"),
    ("security secret file missing", put("security.secret_file", "/run/secrets/gone"), "security.secret_file: cannot read /run/secrets/gone: No such file or directory"),
    # daemon
    ("log level unknown", put("daemon.log_level", "VERBOSE"), 'daemon.log_level: got "VERBOSE"; expected one of DEBUG, INFO, WARNING, ERROR'),
    ("log format unknown", put("daemon.log_format", "xml"), 'daemon.log_format: got "xml"; expected one of "text", "json"'),
    ("templates empty", put("daemon.templates", ""), "daemon.templates: is empty"),
    ("templates not a string", put("daemon.templates", ["a"]), "daemon.templates: expected a string, got an array"),
    # database
    ("database mysql, password not echoed", put("database.url", f"mysql://u:{MARK}@db/mb"), 'database.url: unsupported database (scheme "mysql"); expected "sqlite:///PATH"'),
    ("database postgres:// scheme", put("database.url", f"postgres://u:{MARK}@db/mb"), 'database.url: unsupported scheme "postgres"; mailbridge uses psycopg 3: write postgresql+psycopg://USER@HOST/DBNAME'),
    ("database psycopg2 driver", put("database.url", "postgresql+psycopg2://u@db/mb"), 'unsupported scheme "postgresql+psycopg2"; mailbridge uses psycopg 3'),
    ("database password in URL", put("database.url", f"postgresql+psycopg://u:{MARK}@db/mb"), "database.url: contains a password; keep secrets out of this file"),
    ("database password in query", put("database.url", f"postgresql://db/mb?user=u&password={MARK}"), "database.url: contains a password"),
    ("database in memory", put("database.url", "sqlite:///:memory:"), "database.url: names no database file"),
    ("database sqlite two slashes", put("database.url", "sqlite://mb.db"), 'database.url: unsupported database (scheme "sqlite")'),
    ("database url not a string", put("database.url", 5), "database.url: expected a string, got an integer (5)"),
    # metrics
    ("metrics listen without port", put("metrics", {"listen": "127.0.0.1"}), 'metrics.listen: got "127.0.0.1"; expected an address and a port such as "127.0.0.1:9464"'),
    ("metrics listen port only", put("metrics", {"listen": ":9464"}), 'metrics.listen: got ":9464"; expected an address and a port'),
    ("metrics listen bad port", put("metrics", {"listen": "127.0.0.1:99999"}), "metrics.listen: got \"127.0.0.1:99999\": the port must be a number from 1 to 65535"),
    ("metrics listen port not a number", put("metrics", {"listen": "localhost:http"}), "the port must be a number from 1 to 65535"),
    ("metrics listen IPv6 without brackets", put("metrics", {"listen": "::1:9464"}), 'metrics.listen: got "::1:9464"; put an IPv6 address in brackets: "[::1]:9464"'),
    ("metrics listen bad IPv6", put("metrics", {"listen": "[fe80::zz]:9464"}), 'is not an IPv6 address'),
    ("metrics listen a URL", put("metrics", {"listen": "http://127.0.0.1:9464"}), 'metrics.listen: got "http://127.0.0.1:9464"; expected an address and a port'),
    ("metrics listen not a string", put("metrics", {"listen": 9464}), "metrics.listen: expected a string, got an integer (9464)"),
    ("metrics unknown key", put("metrics", {"port": 9464}), "metrics.port: unknown key"),
]


@pytest.mark.parametrize(
    ("description", "mutation", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_invalid_config_is_refused_with_a_helpful_message(
    description: str, mutation: Mutation, expected: str
) -> None:
    message = error_of(mutated(mutation))
    assert expected in message
    # One problem, one line, and that line names the file.
    assert message.count("\n") == 0, message
    assert message.startswith(f"{CONFIG}: ")
    assert MARK not in message


def test_the_valid_base_config_parses() -> None:
    # The error table is only meaningful if the unmutated dict is valid.
    settings = parse(valid())
    assert [a.name for a in settings.accounts] == ["acme-us", "acme-uk"]


def test_all_problems_are_reported_together_one_per_line() -> None:
    data = mutated(both(
        put("daemon.log_level", "LOUD"),
        put("accounts.0.imap.port", 0),
        put("accounts.1.smtp.security", "none"),
        drop("accounts.1.staff_senders"),
    ))
    lines = error_of(data).splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{CONFIG}: ") for line in lines)
    assert [line.split(": ")[1] for line in lines] == [
        "daemon.log_level",
        f"{A0}.imap.port",
        f"{A1}.staff_senders",
        f"{A1}.smtp.security",
    ]


def test_a_missing_imap_table_names_each_required_key() -> None:
    lines = error_of(mutated(drop("accounts.1.imap"))).splitlines()
    keys = [line.split(": ")[1] for line in lines]
    assert keys == [f"{A1}.imap.host", f"{A1}.imap.username", f"{A1}.imap.password_file"]


# --- happy paths and defaults --------------------------------------------

def test_full_account_values_are_kept() -> None:
    acct = parse(valid()).account("acme-us")
    assert acct.marketplace == "amazon.com"
    assert acct.seller_name == "Acme Outdoor"
    assert acct.staff_senders == ("*@acme.example",)
    assert acct.reply_address == "seller+{token}@acme.example"
    assert acct.imap.password == Secret(f"imap-us-{MARK}", "file:/run/secrets/imap-us")
    assert acct.smtp.password == Secret(f"smtp-us-{MARK}", "file:/run/secrets/smtp-us")
    assert acct.imap.timeout_seconds == 60.0 and isinstance(acct.imap.timeout_seconds, float)


def test_defaults_fill_every_optional_key() -> None:
    data: dict[str, Any] = {"accounts": [{
        "name": "solo",
        "marketplace": "amazon.de",
        "seller_name": "Solo",
        "seller_address": "verkauf@solo.example",
        "staff_address": "team@solo.example",
        "staff_senders": ["*@solo.example"],
        "imap": {"host": "imap.solo.example", "username": "verkauf", "password": f"pw-{MARK}"},
        "smtp": {"host": "smtp.solo.example"},
    }]}
    settings = parse(data, environ={})
    assert settings.path == CONFIG
    assert settings.database == DatabaseSettings()
    assert settings.security == SecuritySettings(secret=None)
    assert settings.outbox == OutboxSettings()
    assert settings.templates_dir is None   # the templates shipped inside the package
    assert settings.log_level == "INFO"
    (acct,) = settings.accounts
    assert acct.reply_address == "verkauf+{token}@solo.example"
    assert acct.forward_existing is False
    password = Secret(f"pw-{MARK}", "inline")
    assert acct.imap == dataclasses.replace(
        ImapSettings(host=""), host="imap.solo.example", username="verkauf", password=password
    )
    # SMTP logs in like IMAP unless told otherwise: same mailbox, same credentials.
    assert acct.smtp == dataclasses.replace(
        SmtpSettings(host=""), host="smtp.solo.example", username="verkauf", password=password
    )


def test_feedback_defaults_to_the_marketplace_time_zone_and_language() -> None:
    settings = parse(valid())
    us, uk = settings.accounts
    assert (us.feedback.timezone, us.feedback.language) == ("America/New_York", "en")   # as configured
    assert uk.feedback.enabled is False and uk.feedback.days_after == 7
    assert (uk.feedback.timezone, uk.feedback.language) == (MARKETPLACES["amazon.co.uk"].time_zone, "en")
    assert us.feedback.send_days == ("mon", "tue", "wed", "thu", "fri")
    de = parse(mutated(put("accounts.1.marketplace", "amazon.de"))).accounts[1]
    assert (de.feedback.timezone, de.feedback.language) == ("Europe/Berlin", "de")


def test_reminders_are_on_by_default_and_an_empty_list_turns_them_off() -> None:
    us, uk = parse(valid()).accounts
    assert uk.reminders.after_hours == (12, 20)                      # the default
    assert "no response needed" in uk.reminders.no_response_phrases
    off = parse(mutated(put("accounts.0.reminders.after_hours", []))).accounts[0]
    assert off.reminders.after_hours == ()
    unsorted = parse(mutated(put("accounts.0.reminders.after_hours", [20, 6, 12, 6]))).accounts[0]
    assert unsorted.reminders.after_hours == (6, 12, 20)


def test_addresses_and_staff_senders_are_lowercased() -> None:
    data = mutated(both(
        put("accounts.0.seller_address", "Seller@ACME.example"),
        put("accounts.0.staff_address", "Support@Acme.Example"),
        put("accounts.0.staff_senders", ["*@ACME.example", "Jo@Partner.example"]),
        put("accounts.0.reply_address", "Seller+{token}@ACME.example"),
        put("accounts.0.marketplace", "Amazon.COM"),
    ))
    acct = parse(data).accounts[0]
    assert acct.seller_address == "seller@acme.example"
    assert acct.staff_address == "support@acme.example"
    assert acct.staff_senders == ("*@acme.example", "jo@partner.example")
    assert acct.reply_address == "seller+{token}@acme.example"
    assert acct.marketplace == "amazon.com"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "localhost."])
def test_security_none_is_allowed_for_loopback_hosts(host: str) -> None:
    data = mutated(both(
        put("accounts.0.imap.host", host), put("accounts.0.imap.security", "none"),
        put("accounts.0.smtp.host", host), put("accounts.0.smtp.security", "none"),
    ))
    acct = parse(data).accounts[0]
    assert (acct.imap.security, acct.smtp.security) == ("none", "none")
    assert acct.imap.host == host.strip("[]")


@pytest.mark.parametrize(("key", "value"), [
    ("poll_seconds", 5), ("poll_seconds", 3600), ("batch_size", 1), ("batch_size", 1000),
    ("max_message_bytes", 1048576), ("port", 1), ("port", 65535), ("timeout_seconds", 0.5),
])
def test_range_limits_are_inclusive(key: str, value: int | float) -> None:
    data = mutated(both(put("accounts.0.imap.security", "none"), put("accounts.0.imap.host", "::1"),
                        put(f"accounts.0.imap.{key}", value)))
    assert getattr(parse(data).accounts[0].imap, key) == value


@pytest.mark.parametrize(("given", "stored"), [
    ("sqlite:////var/lib/mb.db", "sqlite:////var/lib/mb.db"),
    ("sqlite:///mb.db", "sqlite:////etc/mailbridge/mb.db"),
    ("sqlite:///data/mb.db?timeout=30", "sqlite:////etc/mailbridge/data/mb.db?timeout=30"),
    ("postgresql+psycopg://mb@db.internal/mailbridge", "postgresql+psycopg://mb@db.internal/mailbridge"),
    ("postgresql://mb@db.internal:5433/mailbridge", "postgresql+psycopg://mb@db.internal:5433/mailbridge"),
])
def test_database_urls_are_resolved(given: str, stored: str) -> None:
    assert parse(mutated(put("database.url", given))).database.url == stored


@pytest.mark.parametrize(("given", "stored"), [
    ("/srv/templates", Path("/srv/templates")),
    ("templates", Path("/etc/mailbridge/templates")),
    ("../shared/tpl", Path("/etc/mailbridge/../shared/tpl")),
])
def test_templates_resolve_against_the_config_folder(given: str, stored: Path) -> None:
    assert parse(mutated(put("daemon.templates", given))).templates_dir == stored


@pytest.mark.parametrize(("given", "stored"), [
    (None, ""),                               # absent: no metrics
    ("", ""),
    ("127.0.0.1:9464", "127.0.0.1:9464"),
    (" 127.0.0.1:9464 ", "127.0.0.1:9464"),
    ("[::1]:9464", "[::1]:9464"),
    ("0.0.0.0:1", "0.0.0.0:1"),
    ("localhost:65535", "localhost:65535"),
])
def test_metrics_listen_is_off_by_default_and_normalised(given: str | None, stored: str) -> None:
    data = mutated(drop("metrics") if given is None else put("metrics.listen", given))
    assert parse(data).metrics.listen == stored


@pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "ERROR"])
def test_log_level_is_case_insensitive(level: str) -> None:
    assert parse(mutated(put("daemon.log_level", level))).log_level == level.upper()


@pytest.mark.parametrize(("content", "secret"), [
    ("pw", "pw"),
    ("pw\n", "pw"),
    ("pw\r\n", "pw"),
    ("pw\n\n", "pw\n"),
    (" pw ", " pw "),
])
def test_password_file_loses_exactly_one_trailing_newline(content: str, secret: str) -> None:
    files = {**FILES, Path("/run/secrets/imap-us"): content}
    settings = parse(valid(), read=lambda p: files[p])
    assert settings.accounts[0].imap.password.reveal() == secret


def test_relative_password_file_is_a_systemd_credential() -> None:
    env = {**ENV, "CREDENTIALS_DIRECTORY": "/run/credentials/mailbridge.service"}
    files = {**FILES, Path("/run/credentials/mailbridge.service/imap-us"): "cred-pw\n"}
    data = mutated(put("accounts.0.imap.password_file", "imap-us"))
    password = parse(data, environ=env, read=lambda p: files[p]).accounts[0].imap.password
    assert password == Secret("cred-pw", "file:/run/credentials/mailbridge.service/imap-us")


def test_unreadable_credential_names_the_credentials_folder() -> None:
    env = {**ENV, "CREDENTIALS_DIRECTORY": "/run/credentials/mailbridge.service"}
    data = mutated(put("accounts.0.imap.password_file", "imap-us"))
    message = error_of(data, environ=env)
    assert ("cannot read /run/credentials/mailbridge.service/imap-us: No such file or directory; "
            "relative names resolve against $CREDENTIALS_DIRECTORY (/run/credentials/mailbridge.service)") in message


def test_relative_password_file_without_systemd_is_beside_the_config() -> None:
    files = {**FILES, Path("/etc/mailbridge/imap-us"): "local-pw"}
    data = mutated(put("accounts.0.imap.password_file", "imap-us"))
    password = parse(data, read=lambda p: files[p]).accounts[0].imap.password
    assert password == Secret("local-pw", "file:/etc/mailbridge/imap-us")


def test_permission_denied_is_reported_with_the_os_error() -> None:
    def denied(path: Path) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    with pytest.raises(ConfigError) as info:
        parse(valid(), read=denied)
    lines = str(info.value).splitlines()
    assert f"{CONFIG}: security.secret_file: cannot read /run/secrets/token: Permission denied" in lines
    assert f"{CONFIG}: {A0}.imap.password_file: cannot read /run/secrets/imap-us: Permission denied" in lines


def test_password_env_and_inline_sources() -> None:
    data = mutated(both(drop("accounts.0.imap.password_file"), put("accounts.0.imap.password", "inline-pw")))
    settings = parse(data)
    assert settings.accounts[0].imap.password == Secret("inline-pw", "inline")
    assert settings.accounts[1].imap.password == Secret(f"imap-uk-{MARK}", "env:UK_IMAP_PASSWORD")


@pytest.mark.parametrize(("security", "expected"), [
    ({"secret_file": "/run/secrets/token"}, Secret(f"token-key-{MARK}-0123456789", "file:/run/secrets/token")),
    ({"secret_env": "TOKEN_KEY"}, Secret("k" * 16, "env:TOKEN_KEY")),
    ({"secret": "x" * 16}, Secret("x" * 16, "inline")),
    ({}, None),
])
def test_security_secret_sources(security: dict[str, str], expected: Secret | None) -> None:
    settings = parse(mutated(put("security", security)), environ={**ENV, "TOKEN_KEY": "k" * 16})
    assert settings.security.secret == expected


def test_smtp_credentials() -> None:
    # Account 1's SMTP inherits the IMAP password; an empty username means no AUTH;
    # an own username without a password still uses the IMAP password.
    data = mutated(both(put("accounts.0.smtp.username", ""), drop("accounts.0.smtp.password_file"),
                        put("accounts.1.smtp.username", "relay-user")))
    us, uk = parse(data).accounts
    assert (us.smtp.username, us.smtp.password.reveal()) == ("", "")
    assert uk.smtp.username == "relay-user"
    assert uk.smtp.password == uk.imap.password == Secret(f"imap-uk-{MARK}", "env:UK_IMAP_PASSWORD")


def test_secrets_never_appear_in_repr_or_str() -> None:
    data = mutated(put("security", {"secret": f"inline-token-{MARK}"}))
    settings = parse(data)
    assert settings.accounts[0].imap.password.reveal() == f"imap-us-{MARK}"  # the secret is there...
    for text in (repr(settings), str(settings), repr(settings.accounts), str(settings.accounts[1].smtp)):
        assert MARK not in text                                              # ...but never shown
    assert "<hidden>" in repr(settings)


def test_secret_values_stay_out_of_errors_even_when_the_config_is_broken() -> None:
    data = mutated(both(
        drop("accounts.0.imap.password_file"),
        put("accounts.0.imap.password", f"inline-{MARK}"),
        put("accounts.0.imap.port", "x"),
        put("security", {"secret": MARK}),       # too short: the message must not quote it
        put("accounts.1.smtp.password", f"smtp-{MARK}"),
        put("accounts.1.smtp.username", ""),
    ))
    message = error_of(data)
    assert len(message.splitlines()) == 3
    assert MARK not in message


def test_the_environment_read_for_secrets_is_not_in_reprs() -> None:
    from bridge.config.errors import Problems
    from bridge.config.reading import Context

    assert MARK not in repr(Context(Problems(CONFIG), CONFIG.parent, {"TOKEN": MARK}, read_file))


def test_account_lookup_by_name() -> None:
    settings = parse(valid())
    assert settings.account("acme-uk").marketplace == "amazon.co.uk"
    with pytest.raises(KeyError):
        settings.account("nope")


# --- retired keys: an old file still starts, with a warning ------------------

READ_AHEAD_WARNING = ("has no effect any more (the read-ahead helper process was removed; mail is read "
                      "over one connection per account) and can be deleted")


def test_retired_read_ahead_loads_with_one_warning_naming_file_and_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.config"):
        settings = parse(mutated(put("accounts.0.imap.read_ahead", False)))
    assert settings.accounts[0].imap == parse(valid()).accounts[0].imap
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"{CONFIG}: {A0}.imap.read_ahead: {READ_AHEAD_WARNING}"),
    ]


def test_retired_key_does_not_hide_real_problems(caplog: pytest.LogCaptureFixture) -> None:
    data = mutated(both(put("accounts.1.imap.read_ahead", True), put("accounts.1.imap.port", 0)))
    with caplog.at_level(logging.WARNING, logger="bridge.config"):
        message = error_of(data)
    assert message == f"{CONFIG}: {A1}.imap.port: got 0; expected an integer from 1 to 65535"
    assert [r.getMessage() for r in caplog.records] == [f"{CONFIG}: {A1}.imap.read_ahead: {READ_AHEAD_WARNING}"]


def test_retired_key_is_retired_only_where_it_was() -> None:
    assert "read_ahead" not in KNOWN_KEYS["accounts.imap"]          # not documented, not suggested
    message = error_of(mutated(put("accounts.0.smtp.read_ahead", False)))
    assert message.startswith(f"{CONFIG}: {A0}.smtp.read_ahead: unknown key; known keys here: host, port,")


# --- find_config_path ------------------------------------------------------

@pytest.mark.parametrize(("cli", "environ", "expected"), [
    ("/tmp/cli.toml", {CONFIG_ENV: "/tmp/env.toml"}, Path("/tmp/cli.toml")),
    (None, {CONFIG_ENV: "/tmp/env.toml"}, Path("/tmp/env.toml")),
    (None, {}, DEFAULT_CONFIG_PATH),
    (None, {CONFIG_ENV: ""}, DEFAULT_CONFIG_PATH),
    ("", {CONFIG_ENV: "/tmp/env.toml"}, Path("/tmp/env.toml")),
])
def test_find_config_path(cli: str | None, environ: dict[str, str], expected: Path) -> None:
    assert find_config_path(cli, environ) == expected


def test_default_config_path() -> None:
    assert DEFAULT_CONFIG_PATH == Path("/etc/mailbridge/mailbridge.toml")
    assert CONFIG_ENV == "MAILBRIDGE_CONFIG"


# --- load_settings (real files) -------------------------------------------

MINIMAL_TOML = """
[daemon]
templates = "tpl"

[database]
url = "sqlite:///state/mb.db"

[[accounts]]
name = "solo"
marketplace = "amazon.com"
seller_name = "Solo"
seller_address = "seller@solo.example"
staff_address = "team@solo.example"
staff_senders = ["*@solo.example"]

[accounts.imap]
host = "imap.solo.example"
username = "seller@solo.example"
password_file = "imap-password"

[accounts.smtp]
host = "smtp.solo.example"
password_env = "SOLO_SMTP"
"""


def test_load_settings_reads_files_relative_to_the_config(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(MINIMAL_TOML)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "imap-password").write_text("from-file\n")
    settings = load_settings(config, {"SOLO_SMTP": "from-env"})
    assert settings.path == config
    assert settings.templates_dir == tmp_path / "tpl"
    assert settings.database.url == f"sqlite:///{tmp_path}/state/mb.db"
    acct = settings.accounts[0]
    assert acct.imap.password == Secret("from-file", f"file:{tmp_path / 'imap-password'}")
    assert acct.smtp.password == Secret("from-env", "env:SOLO_SMTP")


def test_load_settings_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(MINIMAL_TOML)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "imap-password").write_text("x")
    monkeypatch.setenv("SOLO_SMTP", "from-os-environ")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_settings(config).accounts[0].smtp.password.reveal() == "from-os-environ"


def test_load_settings_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"configuration file not found; pass -c/--config PATH or set \$MAILBRIDGE_CONFIG") as info:
        load_settings(missing, {})
    assert str(info.value).startswith(f"{missing}: ")


def test_load_settings_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file: Is a directory"):
        load_settings(tmp_path, {})


def test_load_settings_bad_toml_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text('[daemon]\nlog_level = "INFO"\npassword = hunter2-' + MARK + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, {})
    message = str(info.value)
    assert message.startswith(f"{config}: not valid TOML: ")
    assert "line 3" in message
    assert MARK not in message


def test_load_settings_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_bytes(b'[daemon]\nlog_level = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(config, {})


def test_load_settings_refuses_a_missing_templates_folder(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(MINIMAL_TOML)
    (tmp_path / "imap-password").write_text("x")
    with pytest.raises(ConfigError) as info:
        load_settings(config, {"SOLO_SMTP": "y"})
    assert str(info.value).startswith(
        f"{config}: daemon.templates: is set to {tmp_path / 'tpl'}, which is not a folder"
    )


def test_load_settings_without_templates_uses_the_shipped_ones(tmp_path: Path) -> None:
    # No [daemon] templates and no templates folder anywhere near: what an installed
    # mailbridge with the documented minimal config sees.
    config = tmp_path / "mailbridge.toml"
    config.write_text(MINIMAL_TOML.replace('[daemon]\ntemplates = "tpl"\n', ""))
    (tmp_path / "imap-password").write_text("x")
    assert "templates" not in config.read_text()
    assert load_settings(config, {"SOLO_SMTP": "y"}).templates_dir is None


def test_load_settings_reports_validation_errors(tmp_path: Path) -> None:
    config = tmp_path / "mailbridge.toml"
    config.write_text(MINIMAL_TOML.replace('host = "imap.solo.example"', 'host = "imap.solo.example"\nport = 99999'))
    (tmp_path / "tpl").mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings(config, {})
    assert str(info.value).splitlines() == [
        f'{config}: accounts[0] ("solo").imap.port: got 99999; expected an integer from 1 to 65535',
        f"{config}: accounts[0] (\"solo\").imap.password_file: cannot read {tmp_path / 'imap-password'}: "
        "No such file or directory; relative names resolve against $CREDENTIALS_DIRECTORY when systemd "
        "sets it (LoadCredential=), else against the config file's folder",
        f"{config}: accounts[0] (\"solo\").smtp.password_env: environment variable SOLO_SMTP is not set; "
        "set it in the service's environment (systemd: Environment= or EnvironmentFile=)",
    ]


# --- the example file: it loads, and documents everything ---------------------

EXAMPLE_ENV = {"CREDENTIALS_DIRECTORY": "/run/credentials/mailbridge.service",
               "BERGWERK_IMAP_PASSWORD": "bergwerk-pw"}


def _example_secret(path: Path) -> str:
    assert path.parent == Path("/run/credentials/mailbridge.service"), path
    return f"pw-for-{path.name}\n"


def test_example_config_parses() -> None:
    import tomllib
    settings = parse_settings(tomllib.loads(EXAMPLE.read_text()), EXAMPLE, EXAMPLE_ENV, _example_secret)
    assert [(a.name, a.marketplace) for a in settings.accounts] == [
        ("acme-us", "amazon.com"), ("bergwerk-de", "amazon.de"), ("gipfel-uk", "amazon.co.uk"),
    ]
    us, de, _uk = settings.accounts
    assert us.imap.password.reveal() == "pw-for-imap-acme-us"
    assert us.smtp.password.reveal() == "pw-for-smtp-acme-us"
    assert de.smtp.password == de.imap.password == Secret("bergwerk-pw", "env:BERGWERK_IMAP_PASSWORD")
    assert de.reply_address == "verkauf+{token}@bergwerk.example"


def test_example_config_loads_from_disk(tmp_path: Path) -> None:
    for name in ("imap-acme-us", "smtp-acme-us"):
        (tmp_path / name).write_text("pw\n")
    settings = load_settings(EXAMPLE, {**EXAMPLE_ENV, "CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.accounts[0].imap.password == Secret("pw", f"file:{tmp_path / 'imap-acme-us'}")
    assert settings.templates_dir is None


def _example_sections() -> dict[str, list[str]]:
    """Example lines by table ("accounts.imap"), commented-out lines included."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.fullmatch(r"\[\[?([a-z0-9_.]+)\]\]?\s*", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
        sections[current].append(line)
    return sections


def _assignment(key: str) -> re.Pattern[str]:
    return re.compile(rf"^#?\s*{re.escape(key)}\s*=")


# Dataclass fields whose TOML spelling differs from the field name.
FIELD_KEYS = {
    ("Settings", "templates_dir"): ("daemon", "templates"),
    ("Settings", "log_level"): ("daemon", "log_level"),
    ("Settings", "log_format"): ("daemon", "log_format"),
    ("ImapSettings", "password"): ("accounts.imap", "password_file", "password_env", "password"),
    ("SmtpSettings", "password"): ("accounts.smtp", "password_file", "password_env", "password"),
    ("SecuritySettings", "secret"): ("security", "secret_file", "secret_env", "secret"),
}
FIELD_TABLES = {
    Settings: "", DatabaseSettings: "database", SecuritySettings: "security",
    OutboxSettings: "outbox", AccountSettings: "accounts", ImapSettings: "accounts.imap",
    SmtpSettings: "accounts.smtp",
}


@pytest.mark.parametrize("cls", list(FIELD_TABLES), ids=lambda c: c.__name__)
def test_every_settings_field_appears_in_the_example(cls: type) -> None:
    sections = _example_sections()
    for f in dataclasses.fields(cls):
        if (cls, f.name) == (Settings, "path"):
            continue  # where the file is, not a key in it
        table, *keys = FIELD_KEYS.get((cls.__name__, f.name), (FIELD_TABLES[cls], f.name))
        sub_table = f"{table}.{f.name}" if table else f.name
        if sub_table in sections:
            continue  # a field holding a table: [database], [[accounts]], [accounts.imap]
        for key in keys:
            assert key in KNOWN_KEYS[table], f"{cls.__name__}.{f.name}: {key!r} not accepted in [{table}]"
            assert any(_assignment(key).match(line) for line in sections[table]), \
                f"{cls.__name__}.{f.name}: no {key} = ... in [{table}] of {EXAMPLE.name}"


@pytest.mark.parametrize("table", list(KNOWN_KEYS), ids=lambda t: t or "top-level")
def test_every_known_key_is_documented_with_a_comment(table: str) -> None:
    sections = _example_sections()
    for key in KNOWN_KEYS[table]:
        sub_table = f"{table}.{key}" if table else key
        if sub_table in sections:
            continue
        lines = sections[table]
        documented = [
            i for i, line in enumerate(lines)
            if _assignment(key).match(line) and (" #" in line.partition("=")[2] or lines[i - 1].startswith("#"))
        ]
        assert documented, f"[{table}] {key} has no commented example line in {EXAMPLE.name}"


def test_example_mentions_systemd_credentials_file_modes_and_every_marketplace() -> None:
    text = EXAMPLE.read_text()
    assert "LoadCredential=" in text
    assert "CREDENTIALS_DIRECTORY" in text
    assert "0600" in text
    for key in MARKETPLACES:
        assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", text), key


def test_known_keys_are_exactly_what_the_parser_accepts() -> None:
    # Every known key is accepted (no "unknown key" for it) in a config that sets them all.
    data = valid()
    data["accounts"][0]["imap"].pop("password_file")
    data["accounts"][0]["imap"]["password"] = "x"
    for table in ("accounts.imap", "accounts.smtp"):
        assert set(KNOWN_KEYS[table]) >= set(data["accounts"][0][table.split(".")[1]])
    assert set(KNOWN_KEYS["accounts.feedback"]) == set(data["accounts"][0]["feedback"])
    assert set(KNOWN_KEYS["accounts.reminders"]) == set(data["accounts"][0]["reminders"])
    assert set(KNOWN_KEYS["accounts"]) == set(data["accounts"][0])
    assert set(KNOWN_KEYS[""]) == set(data)
    for table in ("daemon", "outbox"):
        assert set(KNOWN_KEYS[table]) == set(data[table])
    parse(data)



@pytest.mark.parametrize("rule,mode", [("no_links", "off"), ("reply_within_window", "block"),
                                       ("reply_within_window", "off")])
def test_any_policy_rule_can_be_set_including_marketplace_rules(rule: str, mode: str) -> None:
    settings = parse(mutated(put("policy.rules", {rule: mode})))
    assert dict(settings.policy.rules)[rule] == mode


def test_cluster_lease_must_outlast_renewal_and_operation() -> None:
    data = valid()
    data["cluster"] = {"lease_seconds": 15, "renew_seconds": 5, "operation_seconds": 10}
    assert "lease_seconds (15) must be more than renew_seconds (5) + operation_seconds (10)" in error_of(data)
    assert parse(valid()).cluster.timing.takeover_seconds == 25
