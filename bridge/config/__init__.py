"""Settings: one TOML file -> frozen, validated values.

Every key is declared once, as a field of the settings dataclasses in
``schema.py`` (type, default, description, constraints); the loader
(``loading.py``), the keys each table accepts and the test of
``config/mailbridge.example.toml`` all come from there. Unknown keys, missing
keys and bad values raise :class:`ConfigError` naming the file, the dotted key
and what is expected. Secrets are :class:`Secret` values whose ``repr``/``str``
never show the secret.
"""

from __future__ import annotations

from bridge.config.errors import ConfigError
from bridge.config.loading import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    KNOWN_KEYS,
    find_config_path,
    load_settings,
    parse_settings,
)
from bridge.config.schema import (
    AccountSettings,
    DatabaseSettings,
    FeedbackSettings,
    ImapSettings,
    OAuth2Settings,
    ClusterSettings,
    MetricsSettings,
    OutboxSettings,
    PolicySettings,
    RelaySettings,
    ReminderSettings,
    SecuritySettings,
    Security,
    SentCopies,
    Settings,
    SmtpSettings,
)
from bridge.config.secrets import CREDENTIALS_ENV, Secret

__all__ = [
    "CONFIG_ENV",
    "CREDENTIALS_ENV",
    "DEFAULT_CONFIG_PATH",
    "KNOWN_KEYS",
    "AccountSettings",
    "ConfigError",
    "DatabaseSettings",
    "FeedbackSettings",
    "ImapSettings",
    "OAuth2Settings",
    "ClusterSettings",
    "MetricsSettings",
    "OutboxSettings",
    "PolicySettings",
    "RelaySettings",
    "ReminderSettings",
    "Secret",
    "Security",
    "SecuritySettings",
    "SentCopies",
    "Settings",
    "SmtpSettings",
    "find_config_path",
    "load_settings",
    "parse_settings",
]
