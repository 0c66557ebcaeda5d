"""What opening the database can fail with; the CLI says each in one line (exit status 2)."""

from __future__ import annotations


class DatabaseError(Exception):
    """Raised when the database cannot be opened or has an unknown schema."""


class SchemaNotCurrent(DatabaseError):
    """The database's schema is not the one this mailbridge's code uses: older, newer, or unknown.

    ``upgradable`` says whether ``mailbridge db upgrade`` brings it to the current one
    (behind, or made by the previous release before migrations existed); when False
    the operator must run a newer mailbridge or point ``[database] url`` elsewhere.
    """

    def __init__(self, message: str, *, upgradable: bool) -> None:
        super().__init__(message)
        self.upgradable = upgradable


class DatabaseInUse(DatabaseError):
    """Another mailbridge daemon runs on this SQLite database (see ``bridge.store.daemon_lock``)."""


class LeaseLost(Exception):
    """A worker's transaction found its daemon no longer holds the account's lease (``store.leases.fence``).

    Nothing of the transaction is written; the daemon stops the account's workers.
    """
