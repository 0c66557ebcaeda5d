"""Settings: one TOML file -> frozen, validated values.

Contract (the loader below the dataclasses fills it): every key of
``config/mailbridge.example.toml`` maps to one field here. Unknown keys,
missing keys and bad values raise :class:`ConfigError` naming the file, the
dotted key and what is expected. Secrets are :class:`Secret` values whose
``repr``/``str`` never show the secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.domain.marketplaces import (
    ALL_RELAY_DOMAINS,
    ATTACHMENT_TYPES,
    MARKETPLACES,
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
)

Security = Literal["tls", "starttls", "none"]
SentCopies = Literal["append", "server", "none"]

DEFAULT_CONFIG_PATH = Path("/etc/mailbridge/mailbridge.toml")
CONFIG_ENV = "MAILBRIDGE_CONFIG"


class ConfigError(Exception):
    """Raised when the configuration file is missing, unreadable or invalid.

    The message names the file, the dotted key (``accounts[0].imap.port``) and
    what was expected, so an operator can fix it without reading code.
    """


@dataclass(frozen=True)
class Secret:
    """A secret string that never prints itself."""

    value: str = field(repr=False)
    source: str = "inline"  # "inline", "file:/path", "env:NAME"

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Secret(<hidden>, source={self.source!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int = 993
    security: Security = "tls"
    username: str = ""
    password: Secret = Secret("")
    folder: str = "INBOX"
    processed_folder: str = ""       # move mail here after it is safely recorded ("" keeps it in place)
    quarantine_folder: str = ""      # move mail that could not be processed here ("" keeps it in place)
    sent_folder: str = "Sent"        # where copies of sent mail live; used to reconcile interrupted sends
    idle: bool = True
    poll_seconds: int = 60           # poll fallback / IDLE re-issue interval (IDLE is re-issued at most every 25 min anyway)
    batch_size: int = 200            # UIDs fetched per round trip
    max_message_bytes: int = 25 * 1024 * 1024  # larger mail is quarantined (left on the server) unread
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password: Secret = Secret("")
    # "append": mailbridge APPENDs a copy of each sent message to imap.sent_folder;
    # "server": the SMTP server files sent mail there itself (Gmail, Microsoft 365);
    # "none": no copies (interrupted sends to buyers then always need a human).
    sent_copies: SentCopies = "append"
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class AccountSettings:
    name: str                        # [a-z0-9][a-z0-9-_]{0,62}; unique
    marketplace: str                 # a key of bridge.domain.marketplaces.MARKETPLACES, e.g. "amazon.com"
    seller_name: str
    seller_address: str              # registered with the marketplace; every buyer mail is sent from it
    staff_address: str               # where buyer messages are forwarded
    staff_senders: tuple[str, ...]   # glob patterns, lowercased: "*@acme.example", "jo@acme.example"
    reply_address: str               # contains "{token}"; default seller_address plus-addressed
    imap: ImapSettings
    smtp: SmtpSettings
    forward_existing: bool = False   # first run: also forward mail already in the mailbox (default: record as history)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:////var/lib/mailbridge/mailbridge.db"


@dataclass(frozen=True)
class SecuritySettings:
    # HMAC key for reply tokens and our origin header. None: generated once and kept in the database.
    secret: Secret | None = None


@dataclass(frozen=True)
class OutboxSettings:
    max_attempts: int = 10           # transient failures before a row is marked failed
    retry_base_seconds: float = 30.0  # first retry delay; doubles each attempt, with jitter
    retry_max_seconds: float = 3600.0
    # A send interrupted by a crash is judged only after this long, so the Sent
    # folder has had time to receive the server's copy (see bridge.workers.outbox).
    reconcile_after_seconds: float = 120.0


@dataclass(frozen=True)
class RelaySettings:
    """Staff replies relayed to buyers (DOMAIN.md "Replying")."""

    confirm_to_staff: bool = True        # after a send, tell the staff thread exactly what the buyer received
    attachment_types: tuple[str, ...] = ATTACHMENT_TYPES  # file name extensions, lowercased
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES      # all attachments of one message together
    max_attachments: int = MAX_ATTACHMENTS


@dataclass(frozen=True)
class PolicySettings:
    """The compliance guard (bridge.domain.policy) every buyer-bound email passes."""

    rules: tuple[tuple[str, str], ...] = ()   # (rule id, "block" | "warn" | "off"); unnamed rules block
    link_domains: tuple[str, ...] = ()       # domains links may point to, besides Amazon's own
    max_text_chars: int = 2000


@dataclass(frozen=True)
class Settings:
    path: Path                       # the file these came from (for messages)
    database: DatabaseSettings
    security: SecuritySettings
    outbox: OutboxSettings
    templates_dir: Path              # [daemon] templates; relative paths resolve against the config file's folder
    log_level: str                   # [daemon] log_level: DEBUG | INFO | WARNING | ERROR
    accounts: tuple[AccountSettings, ...]
    relay: RelaySettings = RelaySettings()
    policy: PolicySettings = PolicySettings()

    def account(self, name: str) -> AccountSettings:
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise KeyError(name)


# --------------------------------------------------------------------------
# Loading: TOML file -> Settings.  The I/O lives in load_settings(); every
# rule lives in the pure parse_settings(), so tests are tables of dicts.
# --------------------------------------------------------------------------

# Imports for the loader are kept here, below the dataclasses that other
# modules import, so that this half of the file can grow on its own.
import difflib  # noqa: E402
import fnmatch  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import tomllib  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import fields  # noqa: E402
from typing import TypeVar  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import bridge  # noqa: E402

#: The keys each TOML table accepts ("accounts.imap" is every ``[accounts.imap]``).
#: Anything else is an error; ``config/mailbridge.example.toml`` documents each one
#: (a test keeps the two in step).
KNOWN_KEYS: Mapping[str, tuple[str, ...]] = {
    "": ("daemon", "database", "security", "outbox", "relay", "policy", "accounts"),
    "policy": ("rules", "link_domains", "max_text_chars"),
    "relay": ("confirm_to_staff", "attachment_types", "max_attachment_bytes", "max_attachments"),
    "daemon": ("templates", "log_level"),
    "database": ("url",),
    "security": ("secret_file", "secret_env", "secret"),
    "outbox": ("max_attempts", "retry_base_seconds", "retry_max_seconds", "reconcile_after_seconds"),
    "accounts": (
        "name", "marketplace", "seller_name", "seller_address", "staff_address",
        "staff_senders", "reply_address", "forward_existing", "imap", "smtp",
    ),
    "accounts.imap": (
        "host", "port", "security", "username", "password_file", "password_env", "password",
        "folder", "processed_folder", "quarantine_folder", "sent_folder", "idle",
        "poll_seconds", "batch_size", "max_message_bytes", "timeout_seconds",
    ),
    "accounts.smtp": (
        "host", "port", "security", "username", "password_file", "password_env", "password",
        "sent_copies", "timeout_seconds",
    ),
}

#: The templates shipped with mailbridge: the repository's ``templates/`` folder.
SHIPPED_TEMPLATES_DIR = Path(bridge.__file__).resolve().parent.parent / "templates"

#: systemd puts ``LoadCredential=`` files in this folder and names it in this variable.
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_SECRET_CHARS = 16
ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

_SECURITIES: dict[str, Security] = {"tls": "tls", "starttls": "starttls", "none": "none"}
_SENT_COPIES: dict[str, SentCopies] = {"append": "append", "server": "server", "none": "none"}
# Well-known ports whose TLS mode is fixed by RFC 8314 (implicit TLS) or RFC 3207/2595
# (STARTTLS). Mixing them up makes the connection hang or fail with an obscure error.
_IMPLICIT_TLS_PORTS = {"imap": 993, "smtp": 465}
_STARTTLS_PORTS = {"imap": (143,), "smtp": (25, 587)}
_ADDRESS_FORBIDDEN = set('<>()[],;:"\\')
_GLOB_CHARS = set("*?[]")

_T = TypeVar("_T")


class _Missing:
    """Marks a key that is absent from its table."""


_MISSING = _Missing()


def find_config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path:
    """The configuration file to read: ``-c/--config``, else ``$MAILBRIDGE_CONFIG``,
    else ``/etc/mailbridge/mailbridge.toml``. Empty values count as unset."""
    if cli_path:
        return Path(cli_path)
    from_env = environ.get(CONFIG_ENV, "")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and validate the configuration file at ``path``.

    ``environ`` (default: ``os.environ``) supplies ``password_env``/``secret_env``
    variables and ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigError` listing
    every problem found, one per line; secret values never appear in it.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; pass -c/--config PATH or set "
            f"${CONFIG_ENV} (default: {DEFAULT_CONFIG_PATH}); "
            "config/mailbridge.example.toml is a documented starting point"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc.strerror or exc}"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib reports line and column, never the text itself (which may hold a password).
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    settings = parse_settings(data, path, env, _read_text)
    if not settings.templates_dir.is_dir():
        daemon = data.get("daemon")
        where = "is set to" if isinstance(daemon, dict) and "templates" in daemon else "defaults to"
        raise ConfigError(
            f"{path}: daemon.templates: {where} {settings.templates_dir}, which is not a "
            "folder; point [daemon] templates at the folder holding the Jinja templates "
            "(a copy of the templates/ folder shipped with mailbridge)"
        )
    return settings


def parse_settings(
    data: Mapping[str, object],
    path: Path,
    environ: Mapping[str, str],
    read_file: Callable[[Path], str],
) -> Settings:
    """Validate parsed TOML ``data`` (read from ``path``) into :class:`Settings`.

    Pure apart from ``read_file`` (used for ``password_file``/``secret_file``) and
    the current directory when ``path`` is relative. Relative paths resolve
    against ``path``'s folder. Raises :class:`ConfigError` with all problems.
    """
    problems = _Problems(path)
    ctx = _Context(problems, path.absolute().parent, environ, read_file)
    root = _Table(data, "", "", problems)

    daemon = root.table("daemon")
    templates_dir = SHIPPED_TEMPLATES_DIR
    templates = daemon.string("templates", None)
    if templates is not None:
        if templates == "":
            daemon.problem("templates", "is empty; give the folder holding the Jinja templates or leave the key out for the shipped ones")
        else:
            templates_dir = ctx.base / templates
    log_level = daemon.string("log_level", "INFO")
    if log_level.upper() not in LOG_LEVELS:
        daemon.problem("log_level", f"got {_quote(log_level)}; expected one of {', '.join(LOG_LEVELS)}")
        log_level = "INFO"

    database = DatabaseSettings(url=_database_url(root.table("database"), ctx))
    security = SecuritySettings(secret=_security_secret(root.table("security"), ctx))
    outbox = _outbox(root.table("outbox"))
    relay = _relay(root.table("relay"))
    policy = _policy(root.table("policy"))
    accounts = _accounts(root, ctx)

    if problems.lines:
        raise ConfigError("\n".join(problems.lines))
    return Settings(
        path=path,
        database=database,
        security=security,
        outbox=outbox,
        templates_dir=templates_dir,
        log_level=log_level.upper(),
        accounts=accounts,
        relay=relay,
        policy=policy,
    )


# --------------------------------------------------------------------------
# Reading tables
# --------------------------------------------------------------------------

class _Problems:
    """Collects one line per problem, each naming the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.path}: {key}: {message}")


class _Context:
    def __init__(
        self,
        problems: _Problems,
        base: Path,
        environ: Mapping[str, str],
        read_file: Callable[[Path], str],
    ) -> None:
        self.problems = problems
        self.base = base
        self.environ = environ
        self.read_file = read_file


class _Table:
    """One TOML table: typed getters that record problems under the dotted key
    and fall back to the default, so that every problem is found in one pass."""

    def __init__(self, data: Mapping[str, object], where: str, schema: str, problems: _Problems) -> None:
        self.data = data
        self.where = where          # dotted name for messages: 'accounts[0] ("acme").imap'
        self.schema = schema        # key of KNOWN_KEYS: "accounts.imap"
        self.problems = problems
        # Set when the table itself was of the wrong type: its keys are then not
        # reported missing one by one (the operator has one thing to fix).
        self.broken = False
        known = KNOWN_KEYS[schema]
        for key in data:
            if key not in known:
                self.problems.add(self.key(key), _unknown_key(key, known))

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def problem(self, name: str, message: str) -> None:
        self.problems.add(self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str) -> object:
        assert name in KNOWN_KEYS[self.schema], f"{name!r} missing from KNOWN_KEYS[{self.schema!r}]"
        return self.data.get(name, _MISSING)

    def table(self, name: str) -> _Table:
        schema = f"{self.schema}.{name}" if self.schema else name
        value = self.get(name)
        if isinstance(value, _Missing):
            return _Table({}, self.key(name), schema, self.problems)
        if not isinstance(value, dict):
            self.problem(name, f"expected a table ([{schema}]), got {_given(value)}")
            broken = _Table({}, self.key(name), schema, self.problems)
            broken.broken = True
            return broken
        return _Table(value, self.key(name), schema, self.problems)

    def required(self, name: str, what: str) -> str:
        """A required non-empty string; ``what`` explains the key when it is missing."""
        value = self.string(name, None)
        if value is None:
            # Absent (reported unless the whole table was), or of the wrong type (reported).
            if not self.has(name) and not self.broken:
                self.problem(name, f"missing; required: {what}")
            return ""
        if not value.strip():
            self.problem(name, f"is empty; required: {what}")
            return ""
        return value

    def string(self, name: str, default: _T) -> str | _T:
        value = self.get(name)
        if isinstance(value, _Missing):
            return default
        if not isinstance(value, str):
            self.problem(name, f"expected a string, got {_given(value)}")
            return default
        return value

    def integer(self, name: str, default: int, low: int, high: int | None = None, note: str = "") -> int:
        value = self.get(name)
        if isinstance(value, _Missing):
            return default
        expected = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, str) and value.strip().isdigit():
                hint = f"; write {name} = {value.strip()} without quotes"
            self.problem(name, f"expected {expected}, got {_given(value)}{hint}")
            return default
        if value < low or (high is not None and value > high):
            self.problem(name, f"got {value}; expected {expected}{note}")
            return default
        return value

    def seconds(self, name: str, default: float) -> float:
        """A positive, finite number of seconds (integer or float)."""
        value = self.get(name)
        if isinstance(value, _Missing):
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(name, f"expected a positive number of seconds, got {_given(value)}")
            return default
        if not (math.isfinite(value) and value > 0):
            self.problem(name, f"got {value}; expected a positive number of seconds")
            return default
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if isinstance(value, _Missing):
            return default
        if not isinstance(value, bool):
            self.problem(name, f"expected true or false (no quotes), got {_given(value)}")
            return default
        return value

    def choice(self, name: str, default: _T, choices: Mapping[str, _T], note: str = "") -> _T:
        value = self.string(name, None)
        if value is None:
            return default
        if value not in choices:
            allowed = ", ".join(_quote(c) for c in choices)
            self.problem(name, f"got {_quote(value)}; expected one of {allowed}{note}")
            return default
        return choices[value]


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"  # the only other TOML values


def _given(value: object) -> str:
    """What the operator wrote, for messages. Never call this on a secret."""
    if isinstance(value, bool):
        return f"{_kind(value)} ({'true' if value else 'false'})"
    if isinstance(value, (int, float, str)):
        return f"{_kind(value)} ({_quote(value)})"
    return _kind(value)


def _quote(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(key: str, known: tuple[str, ...]) -> str:
    # The value is deliberately not shown: a misspelt "pasword" holds a password.
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key; known keys here: {', '.join(known)}"


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------

_DATABASE_HELP = (
    'expected "sqlite:///PATH" (relative paths resolve against the config file\'s folder) '
    'or "postgresql+psycopg://USER@HOST/DBNAME"'
)


def _database_url(tbl: _Table, ctx: _Context) -> str:
    default = DatabaseSettings().url
    url = tbl.string("url", default)
    if url.startswith("sqlite:///"):
        file_part, sep, query = url[len("sqlite:///"):].partition("?")
        if file_part in ("", ":memory:"):
            tbl.problem("url", "names no database file (an in-memory database would lose every "
                               "message and checkpoint at restart); " + _DATABASE_HELP)
            return default
        if not file_part.startswith("/"):
            file_part = str(ctx.base / file_part)  # absolute, so "sqlite:///" + "/x" = "sqlite:////x"
        return f"sqlite:///{file_part}{sep}{query}"
    scheme = url.partition("://")[0]
    # The URL is only echoed back by scheme: the rest may hold a password.
    if scheme not in ("postgresql", "postgresql+psycopg"):
        if scheme.startswith(("postgresql+", "postgres")):
            tbl.problem("url", f"unsupported scheme {_quote(scheme)}; mailbridge uses psycopg 3: "
                               "write postgresql+psycopg://USER@HOST/DBNAME")
        else:
            tbl.problem("url", f"unsupported database (scheme {_quote(scheme)}); {_DATABASE_HELP}")
        return default
    parts = urlsplit(url)
    if parts.password is not None or "password" in parse_qs(parts.query):
        tbl.problem("url", "contains a password; keep secrets out of this file and out of logs: "
                           "leave it out of the URL and give it to libpq instead, with a .pgpass "
                           "file (mode 0600) named by PGPASSFILE (e.g. a systemd credential: "
                           "Environment=PGPASSFILE=%d/pgpass) or with PGPASSWORD")
        return default
    # SQLAlchemy reads a bare "postgresql://" as psycopg2, which mailbridge does not ship.
    return "postgresql+psycopg://" + url[len(scheme) + 3:]


def _security_secret(tbl: _Table, ctx: _Context) -> Secret | None:
    secret = _secret(tbl, ctx, "secret_file", "secret_env", "secret")
    if secret is not None and secret.value and len(secret.value) < MIN_SECRET_CHARS:
        tbl.problem(_source_key(secret, "secret_file", "secret_env", "secret"),
                    f"the secret is shorter than {MIN_SECRET_CHARS} characters; use a long random "
                    "value, e.g. `openssl rand -hex 32`, or leave [security] empty to have one "
                    "generated and kept in the database")
    return secret


def _policy(tbl: _Table) -> PolicySettings:
    from bridge.domain.policy import (
        RULE_IDS,  # the rule ids are the guard's own; config only names them
    )

    defaults = PolicySettings()
    rules: list[tuple[str, str]] = []
    if tbl.has("rules"):
        raw = tbl.get("rules")
        if not isinstance(raw, dict):
            tbl.problem("rules", f'got {_given(raw)}; expected a table such as {{ no_links = "warn" }}')
        else:
            for rule, mode in raw.items():
                if rule not in RULE_IDS:
                    close = difflib.get_close_matches(rule, RULE_IDS, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    tbl.problem(f"rules.{rule}", f"no such rule; {hint}rules: {', '.join(RULE_IDS)}")
                elif mode not in ("block", "warn", "off"):
                    tbl.problem(f"rules.{rule}", f'got {_given(mode)}; expected "block", "warn" or "off"')
                else:
                    rules.append((rule, str(mode)))
    domains: tuple[str, ...] = ()
    if tbl.has("link_domains"):
        raw = tbl.get("link_domains")
        if not isinstance(raw, list) or not all(isinstance(d, str) and "." in d and " " not in d for d in raw):
            tbl.problem("link_domains", f'got {_given(raw)}; expected an array of domains such as ["acme.example"]')
        else:
            domains = tuple(d.lower().strip(".") for d in raw)
    return PolicySettings(rules=tuple(rules), link_domains=domains,
                          max_text_chars=tbl.integer("max_text_chars", defaults.max_text_chars, 1))


def _relay(tbl: _Table) -> RelaySettings:
    defaults = RelaySettings()
    types = defaults.attachment_types
    if tbl.has("attachment_types"):
        raw = tbl.get("attachment_types")
        if not isinstance(raw, list) or not all(isinstance(t, str) and t.strip(".").isalnum() for t in raw):
            tbl.problem("attachment_types", f"got {_given(raw)}; expected an array of file name extensions "
                                            'such as ["pdf", "jpg", "png"]')
        else:
            types = tuple(t.strip(".").lower() for t in raw)
    return RelaySettings(
        confirm_to_staff=tbl.flag("confirm_to_staff", defaults.confirm_to_staff),
        attachment_types=types,
        max_attachment_bytes=tbl.integer("max_attachment_bytes", defaults.max_attachment_bytes, 0),
        max_attachments=tbl.integer("max_attachments", defaults.max_attachments, 0),
    )


def _outbox(tbl: _Table) -> OutboxSettings:
    defaults = OutboxSettings()
    base = tbl.seconds("retry_base_seconds", defaults.retry_base_seconds)
    top = tbl.seconds("retry_max_seconds", defaults.retry_max_seconds)
    if top < base:
        tbl.problem("retry_max_seconds", f"got {top:g}, less than retry_base_seconds ({base:g}); "
                                         "the cap must be at least the first delay")
    return OutboxSettings(
        max_attempts=tbl.integer("max_attempts", defaults.max_attempts, 1),
        retry_base_seconds=base,
        retry_max_seconds=top,
        reconcile_after_seconds=tbl.seconds("reconcile_after_seconds", defaults.reconcile_after_seconds),
    )


# --------------------------------------------------------------------------
# Secrets: <name>_file, <name>_env or inline <name>; exactly one source.
# --------------------------------------------------------------------------

def _secret(tbl: _Table, ctx: _Context, file_key: str, env_key: str, inline_key: str) -> Secret | None:
    """The secret from whichever source is set; None when none is set.

    On a problem, returns an empty placeholder (the problem is recorded). Values
    never reach a message: only key names, file paths and variable names do.
    """
    given = [k for k in (file_key, env_key, inline_key) if tbl.has(k)]
    if not given:
        return None
    if len(given) > 1:
        tbl.problem(given[1], f"set only one of {', '.join(given)} (they are alternative "
                              "sources for the same secret)")
        return Secret("", "invalid")
    key = given[0]
    raw = tbl.get(key)
    if not isinstance(raw, str) or not raw:
        what = {file_key: "a file path", env_key: "an environment variable name",
                inline_key: "the secret"}[key]
        shown = "an empty string" if raw == "" else _kind(raw) if key == inline_key else _given(raw)
        tbl.problem(key, f"expected {what} (a non-empty string), got {shown}")
        return Secret("", "invalid")
    if key == inline_key:
        return Secret(raw, "inline")
    if key == env_key:
        value = ctx.environ.get(raw)
        if value is None:
            tbl.problem(key, f"environment variable {raw} is not set; set it in the service's "
                             "environment (systemd: Environment= or EnvironmentFile=)")
            return Secret("", "invalid")
        if not value:
            tbl.problem(key, f"environment variable {raw} is empty")
            return Secret("", "invalid")
        return Secret(value, f"env:{raw}")
    return _secret_from_file(tbl, ctx, key, raw)


def _secret_from_file(tbl: _Table, ctx: _Context, key: str, raw: str) -> Secret:
    # Relative names are systemd credentials (LoadCredential=NAME:...) when the
    # service manager provides a credentials folder, else relative to the config file.
    cred_dir = ctx.environ.get(CREDENTIALS_ENV, "")
    file = Path(raw)
    if not file.is_absolute():
        file = (Path(cred_dir) if cred_dir else ctx.base) / file
    try:
        text = ctx.read_file(file)
    except OSError as exc:
        where = (f"relative names resolve against ${CREDENTIALS_ENV} ({cred_dir})" if cred_dir else
                 f"relative names resolve against ${CREDENTIALS_ENV} when systemd sets it "
                 "(LoadCredential=), else against the config file's folder")
        hint = "" if Path(raw).is_absolute() else f"; {where}"
        tbl.problem(key, f"cannot read {file}: {exc.strerror or exc}{hint}")
        return Secret("", "invalid")
    except UnicodeDecodeError:
        tbl.problem(key, f"{file} is not UTF-8 text")
        return Secret("", "invalid")
    # One trailing newline is what `echo` and editors add; anything more is the secret's.
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        tbl.problem(key, f"{file} is empty")
        return Secret("", "invalid")
    return Secret(text, f"file:{file}")


def _source_key(secret: Secret, file_key: str, env_key: str, inline_key: str) -> str:
    if secret.source.startswith("file:"):
        return file_key
    if secret.source.startswith("env:"):
        return env_key
    return inline_key


# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------

def _accounts(root: _Table, ctx: _Context) -> tuple[AccountSettings, ...]:
    raw = root.get("accounts")
    add_one = 'add at least one [[accounts]] table (see config/mailbridge.example.toml)'
    if isinstance(raw, _Missing) or raw == []:
        root.problem("accounts", f"no accounts configured; {add_one}")
        return ()
    if not isinstance(raw, list):
        root.problem("accounts", f"expected an array of tables ([[accounts]], double brackets), got {_kind(raw)}")
        return ()
    accounts: list[AccountSettings] = []
    labels: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            root.problem(f"accounts[{index}]", f"expected a table ([[accounts]]), got {_given(item)}")
            continue
        name = item.get("name")
        label = f"accounts[{index}]"
        if isinstance(name, str) and ACCOUNT_NAME_RE.fullmatch(name):
            label += f' ("{name}")'
        accounts.append(_account(_Table(item, label, "accounts", ctx.problems), ctx))
        labels.append(label)
    _check_unique(ctx.problems, accounts, labels)
    return tuple(accounts)


def _check_unique(problems: _Problems, accounts: list[AccountSettings], labels: list[str]) -> None:
    first_name: dict[str, str] = {}
    first_seller: dict[str, str] = {}
    for acct, label in zip(accounts, labels):
        if acct.name:
            if acct.name in first_name:
                problems.add(f"{label}.name", f"duplicate account name {_quote(acct.name)} "
                                              f"(also {first_name[acct.name]}); names must be unique")
            else:
                first_name[acct.name] = label
        if acct.seller_address:
            if acct.seller_address in first_seller:
                problems.add(f"{label}.seller_address",
                             f"{_quote(acct.seller_address)} is already the seller address of "
                             f"{first_seller[acct.seller_address]}; each mailbox may be bridged once")
            else:
                first_seller[acct.seller_address] = label
    for acct, label in zip(accounts, labels):
        # Its own seller address is reported by _account() with a plainer message.
        if acct.staff_address and acct.staff_address != acct.seller_address \
                and acct.staff_address in first_seller:
            problems.add(f"{label}.staff_address",
                         f"{_quote(acct.staff_address)} is the seller address of "
                         f"{first_seller[acct.staff_address]}; forwarding buyer mail into a bridged "
                         "mailbox would loop: use the support team's own address")


def _account(tbl: _Table, ctx: _Context) -> AccountSettings:
    name = tbl.required("name", 'a short unique id such as "acme-us"')
    if name and not ACCOUNT_NAME_RE.fullmatch(name):
        tbl.problem("name", f"got {_quote(name)}; expected 1-63 characters: lowercase letters, "
                            'digits, "-" and "_", starting with a letter or digit')
        name = ""

    marketplace = tbl.required("marketplace", "the marketplace this seller account is on, e.g. \"amazon.com\"").lower()
    if marketplace and marketplace not in MARKETPLACES:
        close = difflib.get_close_matches(marketplace, list(MARKETPLACES), n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        tbl.problem("marketplace", f"got {_quote(marketplace)}; {guess}"
                                   f"expected one of: {', '.join(sorted(MARKETPLACES))}")

    seller_name = tbl.required("seller_name", "the seller's display name, used in mail to buyers")
    seller_address = _address(tbl, "seller_address", "the address registered with the marketplace")
    staff_address = _address(tbl, "staff_address", "where buyer messages are forwarded to the support team")
    if seller_address and staff_address == seller_address:
        tbl.problem("staff_address", "is the seller address; forwarding buyer mail into the bridged "
                                     "mailbox would loop: use the support team's own address")
    staff_senders = _staff_senders(tbl)
    reply_address = _reply_address(tbl, seller_address)
    forward_existing = tbl.flag("forward_existing", _default_bool(AccountSettings, "forward_existing"))

    imap_table = tbl.table("imap")
    imap = _imap(imap_table, ctx)
    smtp = _smtp(tbl.table("smtp"), ctx, imap)
    if smtp.sent_copies != "none" and not imap.sent_folder:
        imap_table.problem("sent_folder", f'is empty but smtp.sent_copies is "{smtp.sent_copies}"; '
                                                 'name the Sent folder (needed to reconcile interrupted '
                                                 'sends) or set smtp.sent_copies = "none"')
    return AccountSettings(
        name=name,
        marketplace=marketplace,
        seller_name=seller_name,
        seller_address=seller_address,
        staff_address=staff_address,
        staff_senders=staff_senders,
        reply_address=reply_address,
        imap=imap,
        smtp=smtp,
        forward_existing=forward_existing,
    )


def _default_bool(cls: type[AccountSettings], name: str) -> bool:
    (default,) = [f.default for f in fields(cls) if f.name == name]
    assert isinstance(default, bool)
    return default


def _address_problem(address: str) -> str | None:
    """Why ``address`` is not a plain addr-spec (RFC 5322 3.4.1, simplified), or None."""
    if address.count("@") != 1:
        return "expected exactly one @"
    local, domain = address.split("@")
    if not local or not domain:
        return "expected text on both sides of the @"
    if any(c.isspace() for c in address) or any(ord(c) < 32 for c in address):
        return "expected no spaces (only the bare address, no display name)"
    bad = sorted(_ADDRESS_FORBIDDEN.intersection(address))
    if bad:
        return f"expected only the bare address, without {' '.join(bad)}"
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "the domain has an empty label"
    return None


def _address(tbl: _Table, key: str, what: str) -> str:
    """A required email address, lowercased; "" after a recorded problem."""
    value = tbl.required(key, f"{what}, e.g. {key} = \"name@example.com\"")
    if not value:
        return ""
    problem = _address_problem(value)
    if problem:
        tbl.problem(key, f"got {_quote(value)}, not an email address: {problem}")
        return ""
    return value.lower()


def _staff_senders(tbl: _Table) -> tuple[str, ...]:
    raw = tbl.get("staff_senders")
    what = 'who may reply to buyers, e.g. staff_senders = ["*@acme.example", "jo@acme.example"]'
    if isinstance(raw, _Missing):
        tbl.problem("staff_senders", f"missing; required: {what}")
        return ()
    if not isinstance(raw, list) or not raw:
        got = "an empty array" if raw == [] else _given(raw)
        tbl.problem("staff_senders", f"expected a non-empty array of address patterns ({what}), got {got}")
        return ()
    out: list[str] = []
    for i, item in enumerate(raw):
        key = f"staff_senders[{i}]"
        if not isinstance(item, str):
            tbl.problem(key, f"expected an address pattern string, got {_given(item)}")
            continue
        problem = _sender_glob_problem(item.lower())
        if problem:
            tbl.problem(key, f"got {_quote(item)}; {problem}")
            continue
        out.append(item.lower())
    return tuple(out)


def _sender_glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a safe staff sender glob, or None.

    Only staff may make mailbridge write to a buyer, so a pattern must not match
    any domain (``*@*``) nor the marketplaces' buyer relay addresses.
    """
    shape = "expected an address or a glob such as \"*@acme.example\""
    problem = _address_problem(pattern.replace("*", "x").replace("?", "x").replace("[", "").replace("]", ""))
    if problem:
        return f"{shape}: {problem}"
    domain = pattern.split("@")[1]
    if _GLOB_CHARS.intersection(domain):
        last_glob = max(domain.rfind(c) for c in _GLOB_CHARS)
        suffix = domain[last_glob + 1:]
        if not suffix.startswith(".") or suffix.count(".") < 2:
            return (f"{shape}: the domain part would match the domains of strangers; "
                    "wildcards in the domain may only cover subdomains (\"*@*.acme.example\")")
    for relay in sorted(ALL_RELAY_DOMAINS):
        if fnmatch.fnmatchcase(f"buyer@{relay}", pattern):
            return (f"it matches marketplace buyer relay addresses (@{relay}), which would let "
                    "buyers act as staff")
    return None


def _reply_address(tbl: _Table, seller_address: str) -> str:
    default = ""
    if seller_address:
        local, domain = seller_address.split("@")
        default = f"{local}+{{token}}@{domain}"
    value = tbl.string("reply_address", None)
    if value is None:
        return default
    value = value.lower()
    expected = ('expected an address with {token} once in the part before the @, '
                'e.g. "seller+{token}@acme.example" (mail to it must reach this IMAP mailbox)')
    count = value.count("{token}")
    if count != 1:
        tbl.problem("reply_address", f"got {_quote(value)}, which contains {{token}} {count} times; {expected}")
        return default
    if "{" in value.replace("{token}", "") or "}" in value.replace("{token}", ""):
        tbl.problem("reply_address", f"got {_quote(value)}; the only placeholder allowed is {{token}}; {expected}")
        return default
    problem = _address_problem(value.replace("{token}", "t"))
    if problem:
        tbl.problem("reply_address", f"got {_quote(value)}, not an email address: {problem}; {expected}")
        return default
    if "{token}" not in value.split("@")[0]:
        tbl.problem("reply_address", f"got {_quote(value)}, with {{token}} in the domain; {expected}")
        return default
    return value


# --------------------------------------------------------------------------
# IMAP and SMTP
# --------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _host(tbl: _Table, what: str) -> str:
    host = tbl.required("host", what)
    if not host:
        return ""
    if any(c.isspace() for c in host) or "/" in host:
        tbl.problem("host", f"got {_quote(host)}; expected a bare host name or IP address (no scheme, path or spaces)")
        return ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            tbl.problem("host", f"got {_quote(host)}; expected a bare host name: put the port in port")
            return ""
        return host.strip("[]")
    return host


def _security(tbl: _Table, protocol: str, host: str, port: int, default: Security) -> Security:
    security = tbl.choice("security", default, _SECURITIES)
    if security == "none" and host and not _is_loopback(host):
        tbl.problem("security", f'"none" is only allowed for a loopback host (127.0.0.0/8, ::1, '
                                f'localhost), not {_quote(host)}; TLS is required for non-local '
                                'servers; use security = "tls" or "starttls"')
    elif security == "starttls" and port == _IMPLICIT_TLS_PORTS[protocol]:
        tbl.problem("security", f'"starttls" does not work on port {port}, which speaks TLS from the '
                                f'first byte; use security = "tls" (or the STARTTLS port '
                                f'{_STARTTLS_PORTS[protocol][-1]})')
    elif security == "tls" and port in _STARTTLS_PORTS[protocol]:
        tbl.problem("security", f'"tls" does not work on port {port}, which starts in plain text and '
                                f'upgrades; use security = "starttls" (or the TLS port '
                                f'{_IMPLICIT_TLS_PORTS[protocol]})')
    return security


def _imap(tbl: _Table, ctx: _Context) -> ImapSettings:
    d = ImapSettings(host="")
    host = _host(tbl, "the IMAP server of the seller's mailbox")
    port = tbl.integer("port", d.port, 1, 65535)
    security = _security(tbl, "imap", host, port, d.security)
    username = tbl.required("username", "the IMAP login name")
    password = _secret(tbl, ctx, "password_file", "password_env", "password")
    if password is None and not tbl.broken:
        tbl.problem("password_file", "no password given; set exactly one of password_file (a file "
                                     "holding it, e.g. a systemd credential), password_env (an "
                                     "environment variable's name) or password (inline)")
    if password is None:
        password = Secret("", "invalid")

    folder = tbl.string("folder", d.folder)
    if not folder:
        tbl.problem("folder", 'is empty; name the folder to read, e.g. "INBOX"')
        folder = d.folder
    processed = tbl.string("processed_folder", d.processed_folder)
    quarantine = tbl.string("quarantine_folder", d.quarantine_folder)
    for key, value in (("processed_folder", processed), ("quarantine_folder", quarantine)):
        if value and value == folder:
            tbl.problem(key, f"is the folder being read ({_quote(folder)}); use another folder, "
                             'or "" to leave mail in place')
    if processed and processed == quarantine:
        tbl.problem("quarantine_folder", "is the same as processed_folder; quarantined mail must "
                                         "stay apart so that staff can find it")
    return ImapSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        folder=folder,
        processed_folder=processed,
        quarantine_folder=quarantine,
        sent_folder=tbl.string("sent_folder", d.sent_folder),
        idle=tbl.flag("idle", d.idle),
        poll_seconds=tbl.integer("poll_seconds", d.poll_seconds, 5, 3600),
        batch_size=tbl.integer("batch_size", d.batch_size, 1, 1000),
        max_message_bytes=tbl.integer("max_message_bytes", d.max_message_bytes, 1024 * 1024,
                                      note=" (1 MiB); marketplace mail with attachments needs room"),
        timeout_seconds=tbl.seconds("timeout_seconds", d.timeout_seconds),
    )


def _smtp(tbl: _Table, ctx: _Context, imap: ImapSettings) -> SmtpSettings:
    """SMTP settings; username and password default to the IMAP ones (same mailbox),
    and ``username = ""`` means no authentication (a local relay)."""
    d = SmtpSettings(host="")
    host = _host(tbl, "the SMTP server that sends as the seller")
    port = tbl.integer("port", d.port, 1, 65535)
    security = _security(tbl, "smtp", host, port, d.security)
    username = tbl.string("username", imap.username)
    password = _secret(tbl, ctx, "password_file", "password_env", "password")
    if password is None:
        password = imap.password if username else Secret("", "none")
    elif not username and password.source != "invalid":
        given = _source_key(password, "password_file", "password_env", "password")
        tbl.problem(given, 'is set but username is ""; set the username, or remove the password '
                           "to send without authentication")
    return SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        sent_copies=tbl.choice("sent_copies", d.sent_copies, _SENT_COPIES),
        timeout_seconds=tbl.seconds("timeout_seconds", d.timeout_seconds),
    )
