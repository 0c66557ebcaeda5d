"""Every configuration key, declared once.

Each key is one field of a frozen settings dataclass: its annotation is the
type, its default the default (a field without one is a required key), and its
metadata (:func:`~bridge.config.reading.key`) the description and the reader
holding the constraints. The loader, the set of keys each table accepts and
the check of ``config/mailbridge.example.toml`` all come from these fields.
Checks that involve several keys follow each table, registered with
:func:`~bridge.config.reading.across_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bridge.config import checks
from bridge.config.errors import quote
from bridge.config.reading import (
    Choice,
    Flag,
    Integer,
    Integers,
    Modes,
    Nested,
    OptionalNested,
    Seconds,
    Strings,
    Table,
    Tables,
    Text,
    across_keys,
    key,
    retire,
)
from bridge.config.secrets import Secret, SecretKeys, given_anywhere, missing, source_key
from bridge.domain import oauth2 as oauth2_rules
from bridge.domain.feedback import DAYS
from bridge.domain.reminders import DEFAULT_AFTER_HOURS, DEFAULT_NO_RESPONSE_PHRASES
from bridge.domain.leases import LeaseTiming
from bridge.domain.marketplaces import ATTACHMENT_TYPES, MARKETPLACES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS
from bridge.domain.policy import ALL_RULE_IDS  # the rule ids are the guard's own; config only names them

Security = Literal["tls", "starttls", "none"]
SentCopies = Literal["append", "server", "none"]
LogFormat = Literal["text", "json"]
Auth = Literal["password", "oauth2"]
OAuth2Provider = Literal["microsoft", "google", ""]

NO_SECRET = Secret("", "none")


# --------------------------------------------------------------------------
# [accounts.imap.oauth2] and [accounts.smtp.oauth2]
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class OAuth2Settings:
    """``[accounts.imap.oauth2]``: the OAuth2 client that gets access tokens for SASL XOAUTH2 logins.

    After reading, ``token_url`` and ``scopes`` hold the provider's when left empty.
    """

    provider: OAuth2Provider = field(default="", metadata=key(
        Choice(), '"microsoft" (Microsoft 365 / Exchange Online), "google" (Google Workspace, Gmail) or "" '
                  "(any other OAuth2 server: give token_url)"))
    tenant: str = field(default="common", metadata=key(
        Text(checks.tenant), 'microsoft only: the Entra tenant, "common", "organizations", a domain or a '
                             "directory id"))
    token_url: str = field(default="", metadata=key(
        Text(checks.token_url), "the token endpoint; https, except on loopback hosts",
        default_doc="the provider's (required when provider is \"\")"))
    client_id: str = field(default="", metadata=key(
        Text(), "the application (client) id of the app registration", required=True))
    client_secret: Secret = field(default=NO_SECRET, metadata=key(
        SecretKeys(what="client secret"), "the client secret (public clients have none)",
        default_doc="none (a public client)"))
    refresh_token: Secret = field(default=NO_SECRET, metadata=key(
        SecretKeys(what="refresh token"), "the first refresh token; mailbridge keeps the newest one in its "
                                          "database, so this only seeds it",
        default_doc="none: run `mailbridge oauth2 authorize --account NAME`"))
    scopes: tuple[str, ...] = field(default=(), metadata=key(
        Strings('an array of scopes such as ["https://mail.google.com/"]', "a scope string", checks.scope),
        "the scopes asked for", default_doc="the provider's (IMAP and SMTP send, and offline access)"))


@across_keys(OAuth2Settings)
def _oauth2_endpoint(o: OAuth2Settings, tbl: Table) -> OAuth2Settings:
    if o.provider != "microsoft" and tbl.has("tenant"):
        tbl.problem("tenant", 'is only used with provider = "microsoft"; remove it')
    url = o.token_url or oauth2_rules.token_url(o.provider, o.tenant)
    if not url and not tbl.broken and not tbl.has("token_url"):
        tbl.problem("token_url", 'missing; with provider = "" (a generic OAuth2 server) give the token endpoint, '
                                 'or set provider = "microsoft" or "google"')
    return replace(o, token_url=url, scopes=o.scopes or oauth2_rules.default_scopes(o.provider))


# --------------------------------------------------------------------------
# [accounts.imap] and [accounts.smtp]
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ImapSettings:
    """``[accounts.imap]``: the seller's mailbox."""

    host: str = field(metadata=key(Text(checks.host), "the IMAP server of the seller's mailbox"))
    port: int = field(default=993, metadata=key(Integer(1, 65535), "the IMAP server's port"))
    security: Security = field(default="tls", metadata=key(
        Choice(), 'TLS from the first byte ("tls", port 993), upgraded ("starttls", port 143) or '
                  'none ("none", loopback hosts only)'))
    username: str = field(default="", metadata=key(Text(), "the IMAP login name", required=True))
    auth: Auth = field(default="password", metadata=key(
        Choice(), '"password" (LOGIN) or "oauth2" (SASL XOAUTH2 with the [accounts.imap.oauth2] client)'))
    password: Secret = field(default=NO_SECRET, metadata=key(
        SecretKeys(what="password"), "the IMAP password", default_doc='none; required when auth = "password"'))
    oauth2: OAuth2Settings | None = field(default=None, metadata=key(
        OptionalNested(), 'the OAuth2 client, for auth = "oauth2"'))
    folder: str = field(default="INBOX", metadata=key(Text(checks.folder), "the folder buyer mail arrives in"))
    processed_folder: str = field(default="", metadata=key(
        Text(), 'where mail moves once it is safely recorded ("" keeps it in place)'))
    quarantine_folder: str = field(default="", metadata=key(
        Text(), 'where mail that could not be processed moves ("" keeps it in place)'))
    sent_folder: str = field(default="Sent", metadata=key(
        Text(), "the folder of copies of sent mail, used to reconcile sends interrupted by a crash"))
    idle: bool = field(default=True, metadata=key(Flag(), "learn of new mail by IMAP IDLE, not only by polling"))
    poll_seconds: int = field(default=60, metadata=key(
        Integer(5, 3600), "seconds between polls (the safety net under IDLE; IDLE is re-issued "
                          "at most every 25 minutes anyway)"))
    batch_size: int = field(default=200, metadata=key(Integer(1, 1000), "messages fetched per round trip"))
    max_message_bytes: int = field(default=25 * 1024 * 1024, metadata=key(
        Integer(1024 * 1024, note=" (1 MiB); marketplace mail with attachments needs room"),
        "larger mail is quarantined (left on the server) unread"))
    timeout_seconds: float = field(default=60.0, metadata=key(
        Seconds(), "how long to wait for the server before giving up on a command"))


retire(ImapSettings, "read_ahead",
       "has no effect any more (the read-ahead helper process was removed; mail is read over "
       "one connection per account) and can be deleted")


@across_keys(ImapSettings)
def _password_or_oauth2(settings: ImapSettings, tbl: Table) -> ImapSettings:
    """A password login needs a password; an OAuth2 login needs its table and no password."""
    table = f"[{tbl.path}.oauth2]"
    if settings.auth == "password":
        if settings.oauth2 is not None:
            tbl.problem("auth", f'is "password" but {table} is given; set auth = "oauth2" to log in with it, '
                                "or remove the table")
        if not given_anywhere(tbl, "password") and not tbl.broken:
            tbl.problem("password_file", missing("password", "password") +
                        f'; or log in with OAuth2: auth = "oauth2" and a {table} table')
    else:
        if settings.oauth2 is None and not tbl.has("oauth2"):
            tbl.problem("auth", f'is "oauth2" but there is no {table} table; add one with at least client_id '
                                "(see config/mailbridge.example.toml and docs/oauth2.md)")
        if given_anywhere(tbl, "password"):
            tbl.problem(source_key(settings.password, "password"),
                        'is set but auth = "oauth2" logs in with an access token; remove the password')
        settings = replace(settings, password=NO_SECRET)
    return settings


@across_keys(ImapSettings)
def _imap_tls_fits(imap: ImapSettings, tbl: Table) -> ImapSettings:
    problem = checks.tls_problem("imap", imap.host, imap.port, imap.security)
    if problem:
        tbl.problem("security", problem)
    return imap


@across_keys(ImapSettings)
def _imap_folders_differ(imap: ImapSettings, tbl: Table) -> ImapSettings:
    for name, value in (("processed_folder", imap.processed_folder),
                        ("quarantine_folder", imap.quarantine_folder)):
        if value and value == imap.folder:
            tbl.problem(name, f"is the folder being read ({quote(imap.folder)}); use another "
                              'folder, or "" to leave mail in place')
    if imap.processed_folder and imap.processed_folder == imap.quarantine_folder:
        tbl.problem("quarantine_folder", "is the same as processed_folder; quarantined mail must "
                                         "stay apart so that staff can find it")
    return imap


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """``[accounts.smtp]``: the server that sends as the seller."""

    host: str = field(metadata=key(Text(checks.host), "the SMTP server that sends as the seller"))
    port: int = field(default=587, metadata=key(Integer(1, 65535), "the SMTP server's port"))
    security: Security = field(default="starttls", metadata=key(
        Choice(), 'upgraded ("starttls", port 587 or 25), TLS from the first byte ("tls", port 465) '
                  'or none ("none", loopback hosts only)'))
    username: str = field(default="", metadata=key(
        Text(), 'the SMTP login name; "" sends without authentication (a local relay)',
        default_doc="imap.username"))
    auth: Auth = field(default="password", metadata=key(
        Choice(), '"password" (AUTH PLAIN/LOGIN) or "oauth2" (AUTH XOAUTH2)', default_doc="imap.auth"))
    password: Secret = field(default=NO_SECRET, metadata=key(
        SecretKeys(what="password"), "the SMTP password", default_doc="the IMAP password"))
    oauth2: OAuth2Settings | None = field(default=None, metadata=key(
        OptionalNested(), 'the OAuth2 client, for auth = "oauth2"', default_doc="[accounts.imap.oauth2]"))
    # "append": mailbridge APPENDs a copy of each sent message to imap.sent_folder;
    # "server": the SMTP server files sent mail there itself (Gmail, Microsoft 365);
    # "none": no copies (interrupted sends to buyers then always need a human).
    sent_copies: SentCopies = field(default="append", metadata=key(
        Choice(), "how copies of sent mail reach imap.sent_folder"))
    timeout_seconds: float = field(default=60.0, metadata=key(
        Seconds(), "how long a whole send (connect, log in, MAIL, RCPT, DATA) may take; less than [outbox] "
                   "reconcile_after_seconds"))
    # None: the provider's documented limit for a known host (bridge.domain.delivery), none otherwise.
    max_per_minute: int | None = field(default=None, metadata=key(
        Integer(0), "messages sent in any minute at most; 0 for no limit",
        default_doc="the provider's limit for a known host (smtp.office365.com: 30), else no limit"))
    max_per_day: int | None = field(default=None, metadata=key(
        Integer(0), "messages sent in any 24 hours at most; 0 for no limit",
        default_doc="the provider's limit for a known host (smtp.office365.com: 10000; smtp.gmail.com: 2000, "
                    "or 500 for a gmail.com login), else no limit"))


@across_keys(SmtpSettings)
def _smtp_tls_fits(smtp: SmtpSettings, tbl: Table) -> SmtpSettings:
    problem = checks.tls_problem("smtp", smtp.host, smtp.port, smtp.security)
    if problem:
        tbl.problem("security", problem)
    return smtp


# --------------------------------------------------------------------------
# [accounts.feedback]
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FeedbackSettings:
    """``[accounts.feedback]``: requests for feedback, one per eligible order (bridge.domain.feedback).

    The marketplace's window (5 to 30 days after delivery) is not a setting; these only
    place a request inside it. ``time_zone`` and ``language`` are filled with the
    marketplace's when left empty.
    """

    enabled: bool = field(default=False, metadata=key(Flag(), "ask buyers of eligible orders for feedback"))
    days_after: int = field(default=7, metadata=key(
        Integer(5, 30, note=" (the marketplace's window: 5 to 30 days after delivery)"),
        "days after delivery (else after the earliest estimated delivery date) a request is due"))
    send_window: str = field(default="09:00-18:00", metadata=key(
        Text(checks.send_window), 'the local hours requests go out in, "HH:MM-HH:MM" ("00:00-24:00": any time)'))
    send_days: tuple[str, ...] = field(default=DAYS, metadata=key(
        Strings('a non-empty array of days such as ["mon", "tue", "wed", "thu", "fri"]', "a day string",
                checks.send_day),
        "the local days of the week requests go out on"))
    timezone: str = field(default="", metadata=key(
        Text(checks.time_zone), "the IANA time zone of send_window, send_days and the daily cap",
        default_doc="the marketplace's time zone"))
    daily_cap: int = field(default=0, metadata=key(
        Integer(0), "requests per local day at most; 0: 4 x the average daily orders of the last 30 days + 600"))
    exclude_skus: tuple[str, ...] = field(default=(), metadata=key(
        Strings('an array of SKUs such as ["GIFT-CARD"]', "a SKU string", checks.sku),
        "orders holding any of these SKUs are never asked"))
    exclude_recent_conversation_days: int = field(default=14, metadata=key(
        Integer(0, 365), "a buyer who wrote within this many days is not asked yet (0: off)"))
    language: str = field(default="", metadata=key(
        Text(checks.language), "the language of requests when the order does not say the buyer's",
        default_doc="the marketplace's language"))


@across_keys(FeedbackSettings)
def _some_send_day(fb: FeedbackSettings, tbl: Table) -> FeedbackSettings:
    if tbl.get("send_days") == []:
        tbl.problem("send_days", 'is empty; name at least one day such as "mon", or set enabled = false')
    return fb


# --------------------------------------------------------------------------
# [accounts.reminders]
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ReminderSettings:
    """``[accounts.reminders]``: reminders to staff about buyer messages still unanswered
    (bridge.domain.reminders). They only ever write to staff, so they are on by default."""

    after_hours: tuple[int, ...] = field(default=DEFAULT_AFTER_HOURS, metadata=key(
        Integers("an array of hours such as [12, 20]", 1, 23),
        "remind staff this many hours after a buyer message that is still unanswered (the marketplace "
        "counts 24 hours, weekends included); [] turns reminders off"))
    no_response_phrases: tuple[str, ...] = field(default=DEFAULT_NO_RESPONSE_PHRASES, metadata=key(
        Strings('an array of phrases such as ["no response needed"]', "a phrase string", checks.no_response_phrase),
        "a staff reply that says only one of these (case and punctuation ignored) closes the conversation "
        "without writing to the buyer; [] turns this off"))


# --------------------------------------------------------------------------
# [[accounts]]
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class AccountSettings:
    """One ``[[accounts]]`` table: a marketplace seller account and its mailbox."""

    name: str = field(metadata=key(Text(checks.account_name), 'a short unique id such as "acme-us"'))
    marketplace: str = field(metadata=key(
        Text(checks.marketplace), 'the marketplace this seller account is on, e.g. "amazon.com"'))
    seller_name: str = field(metadata=key(Text(), "the seller's display name, used in mail to buyers"))
    seller_address: str = field(metadata=key(
        Text(checks.address), 'the address registered with the marketplace, e.g. '
                              'seller_address = "name@example.com"'))
    staff_address: str = field(metadata=key(
        Text(checks.address), 'where buyer messages are forwarded to the support team, e.g. '
                              'staff_address = "name@example.com"'))
    staff_senders: tuple[str, ...] = field(metadata=key(
        Strings('a non-empty array of address patterns such as ["*@acme.example", "jo@acme.example"]',
                "an address pattern string", checks.staff_sender),
        'who may reply to buyers, e.g. staff_senders = ["*@acme.example", "jo@acme.example"]'))
    reply_address: str = field(metadata=key(
        Text(checks.reply_address), 'where staff replies go; contains "{token}" once before the @',
        default_doc="seller_address plus-addressed"))
    forward_existing: bool = field(default=False, metadata=key(
        Flag(), "on the first run, also forward mail already in the mailbox (else: record it as history)"))
    imap: ImapSettings = field(metadata=key(Nested(), "the seller's mailbox"))
    smtp: SmtpSettings = field(metadata=key(Nested(), "the server that sends as the seller"))
    feedback: FeedbackSettings = field(default=FeedbackSettings(), metadata=key(
        Nested(), "requests for feedback on delivered orders"))
    reminders: ReminderSettings = field(default=ReminderSettings(), metadata=key(
        Nested(), "reminders to staff about unanswered buyer messages"))


@across_keys(AccountSettings)
def _staff_is_not_the_seller(acct: AccountSettings, tbl: Table) -> AccountSettings:
    if acct.seller_address and acct.staff_address == acct.seller_address:
        tbl.problem("staff_address", "is the seller address; forwarding buyer mail into the bridged "
                                     "mailbox would loop: use the support team's own address")
    return acct


@across_keys(AccountSettings)
def _reply_address_defaults_to_the_seller(acct: AccountSettings, tbl: Table) -> AccountSettings:
    if acct.reply_address or not acct.seller_address:
        return acct
    return replace(acct, reply_address=checks.plus_address(acct.seller_address))


@across_keys(AccountSettings)
def _feedback_defaults_to_the_marketplace(acct: AccountSettings, tbl: Table) -> AccountSettings:
    site = MARKETPLACES.get(acct.marketplace)
    if site is None:
        return acct   # reported by the marketplace key
    fb = acct.feedback
    return replace(acct, feedback=replace(fb, timezone=fb.timezone or site.time_zone,
                                          language=fb.language or site.language))


@across_keys(AccountSettings)
def _smtp_logs_in_like_imap(acct: AccountSettings, tbl: Table) -> AccountSettings:
    """SMTP username, password, auth and OAuth2 client default to the IMAP ones (same mailbox);
    ``username = ""`` means no authentication (a local relay)."""
    smtp_tbl = tbl.children["smtp"]
    username = acct.smtp.username if isinstance(smtp_tbl.get("username"), str) else acct.imap.username
    auth = acct.smtp.auth if smtp_tbl.has("auth") else acct.imap.auth
    password = acct.smtp.password
    oauth2 = acct.smtp.oauth2
    if auth == "oauth2":
        oauth2 = oauth2 or acct.imap.oauth2
        if not username:
            smtp_tbl.problem("username", 'is "" but auth = "oauth2" logs in as a user; set the username '
                                         "(default: imap.username)")
        if oauth2 is None and not smtp_tbl.has("oauth2") and acct.imap.auth != "oauth2":
            smtp_tbl.problem("auth", 'is "oauth2" but neither [accounts.smtp.oauth2] nor [accounts.imap.oauth2] '
                                     "is given; add one with at least client_id")
        if given_anywhere(smtp_tbl, "password"):
            smtp_tbl.problem(source_key(password, "password"),
                             'is set but auth = "oauth2" logs in with an access token; remove the password')
        password = NO_SECRET
    else:
        if oauth2 is not None:
            smtp_tbl.problem("auth", 'is "password" but [accounts.smtp.oauth2] is given; set auth = "oauth2" '
                                     "to log in with it, or remove the table")
        if not given_anywhere(smtp_tbl, "password"):
            password = acct.imap.password if username else NO_SECRET
            if username and acct.imap.auth == "oauth2" and not smtp_tbl.broken:
                smtp_tbl.problem("password_file", missing("password", "password") +
                                 '; the IMAP login uses OAuth2, so there is no password to reuse: set '
                                 'auth = "oauth2" here too, or username = "" for a local relay')
        elif not username and password.source != "invalid":
            smtp_tbl.problem(source_key(password, "password"),
                             'is set but username is ""; set the username, or remove the password '
                             "to send without authentication")
    return replace(acct, smtp=replace(acct.smtp, username=username, password=password, auth=auth,
                                      oauth2=oauth2 if auth == "oauth2" else None))


@across_keys(AccountSettings)
def _sent_folder_for_copies(acct: AccountSettings, tbl: Table) -> AccountSettings:
    if acct.smtp.sent_copies != "none" and not acct.imap.sent_folder:
        tbl.children["imap"].problem(
            "sent_folder", f'is empty but smtp.sent_copies is "{acct.smtp.sent_copies}"; name the '
                           "Sent folder (needed to reconcile interrupted sends) or set "
                           'smtp.sent_copies = "none"')
    return acct


# --------------------------------------------------------------------------
# The other tables
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """``[database]``."""

    url: str = field(default="sqlite:////var/lib/mailbridge/mailbridge.db", metadata=key(
        Text(checks.database_url), 'where mailbridge keeps its state: "sqlite:///PATH" or '
                                   '"postgresql+psycopg://USER@HOST/DBNAME"'))


@dataclass(frozen=True, kw_only=True)
class SecuritySettings:
    """``[security]``."""

    secret: Secret | None = field(default=None, metadata=key(
        SecretKeys(min_chars=16), "the HMAC key of reply tokens and of our origin header",
        default_doc="generated once and kept in the database"))


@dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    """``[outbox]``: outgoing mail waits here until the SMTP server takes it."""

    max_attempts: int = field(default=10, metadata=key(
        Integer(1), "transient failures before a message is marked failed"))
    retry_base_seconds: float = field(default=30.0, metadata=key(
        Seconds(), "the first retry delay; it doubles each attempt, with jitter"))
    retry_max_seconds: float = field(default=3600.0, metadata=key(
        Seconds(), "the longest delay between retries"))
    # A send interrupted by a crash is judged only after this long, so the Sent
    # folder has had time to receive the server's copy (see bridge.workers.outbox).
    # Small on purpose: a crash leaves at most this many rows in 'sending' to reconcile
    # (docs/architecture.md, "Stopping and crashing").
    batch_size: int = field(default=20, metadata=key(
        Integer(1, 200), "messages claimed together and sent one after another over one connection"))
    reconcile_after_seconds: float = field(default=120.0, metadata=key(
        Seconds(), "how old an interrupted send must be before it is looked up in the Sent folder (and a "
                   "feedback request claim before it counts as a dead process's)"))


@across_keys(OutboxSettings)
def _retry_cap_covers_the_first_delay(outbox: OutboxSettings, tbl: Table) -> OutboxSettings:
    if outbox.retry_max_seconds < outbox.retry_base_seconds:
        tbl.problem("retry_max_seconds", f"got {outbox.retry_max_seconds:g}, less than retry_base_seconds "
                                         f"({outbox.retry_base_seconds:g}); the cap must be at least the "
                                         "first delay")
    return outbox


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """``[relay]``: staff replies relayed to buyers (docs/marketplaces.md "Replying")."""

    confirm_to_staff: bool = field(default=True, metadata=key(
        Flag(), "after a send, tell the staff thread exactly what the buyer received"))
    attachment_types: tuple[str, ...] = field(default=ATTACHMENT_TYPES, metadata=key(
        Strings('an array of file name extensions such as ["pdf", "jpg", "png"]',
                "a file name extension string", checks.file_extension),
        "the file name extensions of attachments staff may send to buyers"))
    max_attachment_bytes: int = field(default=MAX_ATTACHMENT_BYTES, metadata=key(
        Integer(0), "all attachments of one reply together, in bytes"))
    max_attachments: int = field(default=MAX_ATTACHMENTS, metadata=key(
        Integer(0), "attachments per reply at most"))


@dataclass(frozen=True, kw_only=True)
class PolicySettings:
    """``[policy]``: the compliance guard (bridge.domain.policy) every buyer-bound email passes."""

    rules: tuple[tuple[str, str], ...] = field(default=(), metadata=key(
        Modes(ALL_RULE_IDS, ("block", "warn", "off"), "rule", '{ no_links = "warn" }'),
        'per rule id: "block", "warn" or "off"; rules not named block'))
    link_domains: tuple[str, ...] = field(default=(), metadata=key(
        Strings('an array of domains such as ["acme.example"]', "a domain string", checks.link_domain),
        "domains links may point to, besides the marketplace's own"))
    max_text_chars: int = field(default=2000, metadata=key(
        Integer(1), "the longest text of our own in one message, in characters"))


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    """``[metrics]``: Prometheus metrics over HTTP (bridge.workers.metrics); off unless ``listen`` is set."""

    listen: str = field(default="", metadata=key(
        Text(checks.listen_address), 'the address and port /metrics is served on, e.g. "127.0.0.1:9464" '
                                     'or "[::1]:9464" ("" or absent: no metrics)'))


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """``[cluster]``: account leases, when several daemons share one PostgreSQL database
    (docs/architecture.md, "Several daemons"). A daemon on SQLite holds every lease itself."""

    lease_seconds: float = field(default=20.0, metadata=key(
        Seconds(), "how long a daemon's hold on an account lasts after each renewal; a dead daemon's accounts "
                   "are taken over within lease_seconds + renew_seconds"))
    renew_seconds: float = field(default=5.0, metadata=key(
        Seconds(), "how often a daemon renews its leases, beats its heartbeat and rebalances accounts"))
    operation_seconds: float = field(default=10.0, metadata=key(
        Seconds(), "the longest operation (an IMAP batch, an SMTP send) a daemon starts on an account: it starts "
                   "one only while its lease has this long left"))

    @property
    def timing(self) -> LeaseTiming:
        return LeaseTiming(self.lease_seconds, self.renew_seconds, self.operation_seconds)


@across_keys(ClusterSettings)
def _lease_outlasts_renewal_and_operation(cluster: ClusterSettings, tbl: Table) -> ClusterSettings:
    problem = cluster.timing.problem()
    if problem:
        tbl.problem("lease_seconds", problem)
    return cluster


# --------------------------------------------------------------------------
# The whole file
# --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Settings:
    """The whole configuration file, validated."""

    path: Path                       # the file these came from (for messages); not a key
    # None: the templates shipped inside the mailbridge package (bridge.adapters.templates finds them).
    templates_dir: Path | None = field(default=None, metadata=key(
        Text(checks.templates_folder), "the folder of the Jinja templates; relative paths resolve "
                                       "against the config file's folder",
        toml="templates", section="daemon", default_doc="the templates shipped with mailbridge"))
    log_level: str = field(default="INFO", metadata=key(
        Text(checks.log_level), "how much the daemon logs: DEBUG, INFO, WARNING or ERROR",
        section="daemon"))
    log_format: LogFormat = field(default="text", metadata=key(
        Choice(), 'how log lines look: "text" for people, "json" (one object per line) for log collectors',
        section="daemon"))
    database: DatabaseSettings = field(metadata=key(Nested(), "where mailbridge keeps its state"))
    security: SecuritySettings = field(metadata=key(Nested(), "the key that signs reply tokens"))
    outbox: OutboxSettings = field(metadata=key(Nested(), "retries of outgoing mail"))
    relay: RelaySettings = field(default=RelaySettings(), metadata=key(Nested(), "staff replies to buyers"))
    policy: PolicySettings = field(default=PolicySettings(), metadata=key(Nested(), "the compliance guard"))
    metrics: MetricsSettings = field(default=MetricsSettings(), metadata=key(Nested(), "Prometheus metrics"))
    cluster: ClusterSettings = field(default=ClusterSettings(), metadata=key(
        Nested(), "account leases between daemons sharing a database"))
    accounts: tuple[AccountSettings, ...] = field(metadata=key(
        Tables(named_by="name"), "the marketplace seller accounts bridged"))

    def account(self, name: str) -> AccountSettings:
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise KeyError(name)


@across_keys(Settings)
def _sends_end_before_they_are_reconciled(settings: Settings, tbl: Table) -> Settings:
    """A send lasts at most smtp.timeout_seconds (bridge.adapters.smtp); one interrupted by a daemon that lost
    the account is looked up in the Sent folder reconcile_after_seconds after that daemon's lease ended."""
    wait = settings.outbox.reconcile_after_seconds
    why = ("a send may last that long, so one cut short by a daemon losing the account could be looked up in "
           "the Sent folder before it ended, and sent twice")
    late = [(acct, acct_tbl) for acct, acct_tbl in zip(settings.accounts, tbl.items.get("accounts", []))
            if acct.smtp.timeout_seconds >= wait]
    if not late:
        return settings
    outbox = tbl.child("outbox", type(settings.outbox))
    if outbox.has("reconcile_after_seconds"):   # one message where the file set it
        acct, acct_tbl = max(late, key=lambda pair: pair[0].smtp.timeout_seconds)
        outbox.problem("reconcile_after_seconds",
                       f"got {wait:g}, not more than {acct_tbl.where}.smtp.timeout_seconds "
                       f"({acct.smtp.timeout_seconds:g}): {why}; raise reconcile_after_seconds or lower the "
                       "SMTP timeout")
        return settings
    for acct, acct_tbl in late:
        acct_tbl.child("smtp", type(acct.smtp)).problem(
            "timeout_seconds", f"got {acct.smtp.timeout_seconds:g}, not less than [outbox] reconcile_after_seconds "
                               f"({wait:g}): {why}; lower timeout_seconds or raise reconcile_after_seconds")
    return settings


@across_keys(Settings)
def _each_mailbox_once(settings: Settings, tbl: Table) -> Settings:
    tables = tbl.items.get("accounts", [])
    first_name: dict[str, str] = {}
    first_seller: dict[str, str] = {}
    for acct, acct_tbl in zip(settings.accounts, tables):
        label = acct_tbl.where
        if acct.name:
            if acct.name in first_name:
                acct_tbl.problem("name", f"duplicate account name {quote(acct.name)} "
                                         f"(also {first_name[acct.name]}); names must be unique")
            else:
                first_name[acct.name] = label
        if acct.seller_address:
            if acct.seller_address in first_seller:
                acct_tbl.problem("seller_address",
                                 f"{quote(acct.seller_address)} is already the seller address of "
                                 f"{first_seller[acct.seller_address]}; each mailbox may be bridged once")
            else:
                first_seller[acct.seller_address] = label
    for acct, acct_tbl in zip(settings.accounts, tables):
        # Its own seller address is reported by _staff_is_not_the_seller().
        if acct.staff_address and acct.staff_address != acct.seller_address \
                and acct.staff_address in first_seller:
            acct_tbl.problem("staff_address",
                             f"{quote(acct.staff_address)} is the seller address of "
                             f"{first_seller[acct.staff_address]}; forwarding buyer mail into a bridged "
                             "mailbox would loop: use the support team's own address")
    return settings
