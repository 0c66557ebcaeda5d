"""Value checks for single keys: addresses, sender patterns, hosts, URLs, names.

Each takes the string as written and the config file's folder, and returns the
value to keep (lowercased, resolved) or raises :class:`Invalid` with the message
that follows the key's name. They are pure: no files, no network.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bridge.config.errors import Invalid, quote
from bridge.domain import feedback, reminders
from bridge.domain.marketplaces import ALL_RELAY_DOMAINS, MARKETPLACES

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

_ADDRESS_FORBIDDEN = set('<>()[],;:"\\')
_GLOB_CHARS = set("*?[]")


def log_level(value: str, base: Path) -> str:
    if value.upper() not in LOG_LEVELS:
        raise Invalid(f"got {quote(value)}; expected one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def templates_folder(value: str, base: Path) -> Path:
    """Relative to the config file's folder. Whether it exists is for the loader to see."""
    if value == "":
        raise Invalid("is empty; give the folder holding the Jinja templates or leave the key "
                      "out for the shipped ones")
    return base / value


def account_name(value: str, base: Path) -> str:
    if not ACCOUNT_NAME_RE.fullmatch(value):
        raise Invalid(f"got {quote(value)}; expected 1-63 characters: lowercase letters, "
                      'digits, "-" and "_", starting with a letter or digit')
    return value


def marketplace(value: str, base: Path) -> str:
    value = value.lower()
    if value not in MARKETPLACES:
        close = difflib.get_close_matches(value, list(MARKETPLACES), n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise Invalid(f"got {quote(value)}; {guess}expected one of: {', '.join(sorted(MARKETPLACES))}")
    return value


# --------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------

def address_problem(address: str) -> str | None:
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


def address(value: str, base: Path) -> str:
    """An email address, lowercased."""
    problem = address_problem(value)
    if problem:
        raise Invalid(f"got {quote(value)}, not an email address: {problem}")
    return value.lower()


def staff_sender(value: str, base: Path) -> str:
    """A staff sender glob, lowercased.

    Only staff may make mailbridge write to a buyer, so a pattern must not match
    any domain (``*@*``) nor the marketplaces' buyer relay addresses.
    """
    pattern = value.lower()
    shape = "expected an address or a glob such as \"*@acme.example\""
    problem = address_problem(pattern.replace("*", "x").replace("?", "x").replace("[", "").replace("]", ""))
    if problem:
        raise Invalid(f"{shape}: {problem}")
    domain = pattern.split("@")[1]
    if _GLOB_CHARS.intersection(domain):
        last_glob = max(domain.rfind(c) for c in _GLOB_CHARS)
        suffix = domain[last_glob + 1:]
        if not suffix.startswith(".") or suffix.count(".") < 2:
            raise Invalid(f"{shape}: the domain part would match the domains of strangers; "
                          "wildcards in the domain may only cover subdomains (\"*@*.acme.example\")")
    for relay in sorted(ALL_RELAY_DOMAINS):
        if fnmatch.fnmatchcase(f"buyer@{relay}", pattern):
            raise Invalid(f"it matches marketplace buyer relay addresses (@{relay}), which would let "
                          "buyers act as staff")
    return pattern


def reply_address(value: str, base: Path) -> str:
    """An address with ``{token}`` once before the @, lowercased."""
    value = value.lower()
    expected = ('expected an address with {token} once in the part before the @, '
                'e.g. "seller+{token}@acme.example" (mail to it must reach this IMAP mailbox)')
    count = value.count("{token}")
    if count != 1:
        raise Invalid(f"got {quote(value)}, which contains {{token}} {count} times; {expected}")
    rest = value.replace("{token}", "")
    if "{" in rest or "}" in rest:
        raise Invalid(f"got {quote(value)}; the only placeholder allowed is {{token}}; {expected}")
    problem = address_problem(value.replace("{token}", "t"))
    if problem:
        raise Invalid(f"got {quote(value)}, not an email address: {problem}; {expected}")
    if "{token}" not in value.split("@")[0]:
        raise Invalid(f"got {quote(value)}, with {{token}} in the domain; {expected}")
    return value


def plus_address(seller_address: str) -> str:
    """The default reply address: the seller address plus-addressed with the token."""
    local, domain = seller_address.split("@")
    return f"{local}+{{token}}@{domain}"


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

def host(value: str, base: Path) -> str:
    """A bare host name or IP address (IPv6 brackets removed)."""
    if any(c.isspace() for c in value) or "/" in value:
        raise Invalid(f"got {quote(value)}; expected a bare host name or IP address (no scheme, "
                      "path or spaces)")
    if ":" in value:
        try:
            ipaddress.IPv6Address(value.strip("[]"))
        except ValueError:
            raise Invalid(f"got {quote(value)}; expected a bare host name: put the port in port") from None
        return value.strip("[]")
    return value


def is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


# Well-known ports whose TLS mode is fixed by RFC 8314 (implicit TLS) or RFC 3207/2595
# (STARTTLS). Mixing them up makes the connection hang or fail with an obscure error.
IMPLICIT_TLS_PORTS = {"imap": 993, "smtp": 465}
STARTTLS_PORTS = {"imap": (143,), "smtp": (25, 587)}


def tls_problem(protocol: str, host: str, port: int, security: str) -> str | None:
    """Why ``security`` does not fit ``host`` and ``port``, or None."""
    if security == "none" and host and not is_loopback(host):
        return (f'"none" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not '
                f'{quote(host)}; TLS is required for non-local servers; use security = "tls" or "starttls"')
    if security == "starttls" and port == IMPLICIT_TLS_PORTS[protocol]:
        return (f'"starttls" does not work on port {port}, which speaks TLS from the first byte; '
                f'use security = "tls" (or the STARTTLS port {STARTTLS_PORTS[protocol][-1]})')
    if security == "tls" and port in STARTTLS_PORTS[protocol]:
        return (f'"tls" does not work on port {port}, which starts in plain text and upgrades; '
                f'use security = "starttls" (or the TLS port {IMPLICIT_TLS_PORTS[protocol]})')
    return None


_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,127}")


def tenant(value: str, base: Path) -> str:
    """A Microsoft Entra tenant: "common", "organizations", a domain or a directory id."""
    if not _TENANT_RE.fullmatch(value):
        raise Invalid(f'got {quote(value)}; expected "common", "organizations", the tenant\'s domain '
                      '(acme.onmicrosoft.com) or its directory id (a GUID)')
    return value


def token_url(value: str, base: Path) -> str:
    """An OAuth2 token endpoint: https, or http on a loopback host only (RFC 6749 section 3.2)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid(f"got {quote(value)}; expected the token endpoint's URL, e.g. "
                      '"https://login.example/oauth2/token"')
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise Invalid(f"got {quote(value)}; the token endpoint receives the client secret and refresh "
                      "token, so https is required (plain http only on 127.0.0.1, ::1 or localhost)")
    if parts.password is not None or parts.username is not None:
        raise Invalid("contains a user name or password; give the client secret with client_secret_file, "
                      "client_secret_env or client_secret instead")
    return value


def scope(value: str, base: Path) -> str:
    if not value or any(c.isspace() for c in value):
        raise Invalid('expected one scope without spaces, e.g. "https://mail.google.com/"')
    return value


def folder(value: str, base: Path) -> str:
    if not value:
        raise Invalid('is empty; name the folder to read, e.g. "INBOX"')
    return value


def split_listen(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``"[::1]:PORT"``) -> (host, port); raises :class:`Invalid`."""
    shape = 'expected an address and a port such as "127.0.0.1:9464" or "[::1]:9464"'
    host, sep, port = value.rpartition(":")
    if not sep or not host or "/" in value or any(c.isspace() for c in value):
        raise Invalid(f"got {quote(value)}; {shape}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"got {quote(value)}: {quote(host)} is not an IPv6 address; {shape}") from None
    elif ":" in host:
        raise Invalid(f"got {quote(value)}; put an IPv6 address in brackets: \"[{host}]:{port}\"")
    if not host:
        raise Invalid(f"got {quote(value)}; {shape}")
    if not port.isdecimal() or not 1 <= int(port) <= 65535:
        raise Invalid(f"got {quote(value)}: the port must be a number from 1 to 65535; {shape}")
    return host, int(port)


def listen_address(value: str, base: Path) -> str:
    """Where ``/metrics`` is served; "" turns metrics off."""
    if value == "":
        return value
    host, port = split_listen(value.strip())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------

_DATABASE_HELP = (
    'expected "sqlite:///PATH" (relative paths resolve against the config file\'s folder) '
    'or "postgresql+psycopg://USER@HOST/DBNAME"'
)


def database_url(url: str, base: Path) -> str:
    """A SQLite URL (relative paths made absolute) or a psycopg 3 PostgreSQL URL without a password.

    The URL is only echoed back by scheme: the rest may hold a password.
    """
    if url.startswith("sqlite:///"):
        file_part, sep, query = url[len("sqlite:///"):].partition("?")
        if file_part in ("", ":memory:"):
            raise Invalid("names no database file (an in-memory database would lose every "
                          "message and checkpoint at restart); " + _DATABASE_HELP)
        if not file_part.startswith("/"):
            file_part = str(base / file_part)  # absolute, so "sqlite:///" + "/x" = "sqlite:////x"
        return f"sqlite:///{file_part}{sep}{query}"
    scheme = url.partition("://")[0]
    if scheme not in ("postgresql", "postgresql+psycopg"):
        if scheme.startswith(("postgresql+", "postgres")):
            raise Invalid(f"unsupported scheme {quote(scheme)}; mailbridge uses psycopg 3: "
                          "write postgresql+psycopg://USER@HOST/DBNAME")
        raise Invalid(f"unsupported database (scheme {quote(scheme)}); {_DATABASE_HELP}")
    parts = urlsplit(url)
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise Invalid("contains a password; keep secrets out of this file and out of logs: "
                      "leave it out of the URL and give it to libpq instead, with a .pgpass "
                      "file (mode 0600) named by PGPASSFILE (e.g. a systemd credential: "
                      "Environment=PGPASSFILE=%d/pgpass) or with PGPASSWORD")
    # SQLAlchemy reads a bare "postgresql://" as psycopg2, which mailbridge does not ship.
    return "postgresql+psycopg://" + url[len(scheme) + 3:]


# --------------------------------------------------------------------------
# Relay and policy
# --------------------------------------------------------------------------

def file_extension(value: str, base: Path) -> str:
    extension = value.strip(".").lower()
    if not extension.isalnum():
        raise Invalid('expected a file name extension such as "pdf" (letters and digits)')
    return extension


def link_domain(value: str, base: Path) -> str:
    if "." not in value or any(c.isspace() for c in value):
        raise Invalid('expected a domain such as "acme.example"')
    return value.lower().strip(".")


# --------------------------------------------------------------------------
# Feedback requests
# --------------------------------------------------------------------------

_LANGUAGE_RE = re.compile(r"[a-z]{2,3}")


def send_window(value: str, base: Path) -> str:
    """``"09:00-18:00"``, kept as written in canonical form."""
    try:
        return str(feedback.SendWindow.parse(value))
    except ValueError as exc:
        raise Invalid(f"got {quote(value)}; {exc}") from None


def send_day(value: str, base: Path) -> str:
    try:
        return feedback.DAYS[feedback.weekday(value)]
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def time_zone(value: str, base: Path) -> str:
    """An IANA time zone name, or "" for the marketplace's."""
    if value == "":
        return value
    try:
        feedback.zone(value)
    except ValueError:
        close = difflib.get_close_matches(value, _zone_names(), n=1)
        guess = f"did you mean {quote(close[0])}? " if close else ""
        raise Invalid(f"got {quote(value)}, not a time zone; {guess}expected an IANA name such as "
                      '"Europe/Berlin", or "" for the marketplace\'s') from None
    return value


def _zone_names() -> list[str]:
    import zoneinfo

    return sorted(zoneinfo.available_timezones())


def language(value: str, base: Path) -> str:
    """An ISO 639-1 language code ("de"), or "" for the marketplace's."""
    code = value.strip().lower()
    if code and not _LANGUAGE_RE.fullmatch(code):
        raise Invalid(f'got {quote(value)}; expected a language code such as "de", or "" for the marketplace\'s')
    return code


def sku(value: str, base: Path) -> str:
    if not value.strip():
        raise Invalid("is empty; expected a SKU as the marketplace shows it")
    return value.strip()


def no_response_phrase(value: str, base: Path) -> str:
    """A phrase a staff reply may consist of to close a conversation; compared without case or punctuation."""
    if not reminders.normalised_phrase(value):
        raise Invalid('has no words; expected a phrase such as "no response needed"')
    return value.strip()
