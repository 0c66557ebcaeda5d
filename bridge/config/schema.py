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
    Modes,
    Nested,
    Seconds,
    Strings,
    Table,
    Tables,
    Text,
    across_keys,
    key,
    retire,
)
from bridge.config.secrets import Secret, SecretKeys, source_key, source_names
from bridge.domain.feedback import DAYS
from bridge.domain.marketplaces import ATTACHMENT_TYPES, MARKETPLACES, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS
from bridge.domain.policy import ALL_RULE_IDS  # the rule ids are the guard's own; config only names them

Security = Literal["tls", "starttls", "none"]
SentCopies = Literal["append", "server", "none"]


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
    password: Secret = field(default=Secret(""), metadata=key(
        SecretKeys(what="password"), "the IMAP password", required=True))
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
    password: Secret = field(default=Secret(""), metadata=key(
        SecretKeys(what="password"), "the SMTP password", default_doc="the IMAP password"))
    # "append": mailbridge APPENDs a copy of each sent message to imap.sent_folder;
    # "server": the SMTP server files sent mail there itself (Gmail, Microsoft 365);
    # "none": no copies (interrupted sends to buyers then always need a human).
    sent_copies: SentCopies = field(default="append", metadata=key(
        Choice(), "how copies of sent mail reach imap.sent_folder"))
    timeout_seconds: float = field(default=60.0, metadata=key(
        Seconds(), "how long to wait for the server before giving up"))
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
    """SMTP username and password default to the IMAP ones (same mailbox);
    ``username = ""`` means no authentication (a local relay)."""
    smtp_tbl = tbl.children["smtp"]
    username = acct.smtp.username if isinstance(smtp_tbl.get("username"), str) else acct.imap.username
    password = acct.smtp.password
    if not any(smtp_tbl.has(k) for k in source_names("password")):
        password = acct.imap.password if username else Secret("", "none")
    elif not username and password.source != "invalid":
        smtp_tbl.problem(source_key(password, "password"),
                         'is set but username is ""; set the username, or remove the password '
                         "to send without authentication")
    return replace(acct, smtp=replace(acct.smtp, username=username, password=password))


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
    database: DatabaseSettings = field(metadata=key(Nested(), "where mailbridge keeps its state"))
    security: SecuritySettings = field(metadata=key(Nested(), "the key that signs reply tokens"))
    outbox: OutboxSettings = field(metadata=key(Nested(), "retries of outgoing mail"))
    relay: RelaySettings = field(default=RelaySettings(), metadata=key(Nested(), "staff replies to buyers"))
    policy: PolicySettings = field(default=PolicySettings(), metadata=key(Nested(), "the compliance guard"))
    accounts: tuple[AccountSettings, ...] = field(metadata=key(
        Tables(named_by="name"), "the marketplace seller accounts bridged"))

    def account(self, name: str) -> AccountSettings:
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise KeyError(name)


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
