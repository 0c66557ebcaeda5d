"""What a reload (SIGHUP) changes: which accounts start, stop or restart, or why it cannot apply.

The running daemon compares the configuration it runs with the one just read:

- an account only in the new file starts; one only in the old file stops after
  the work in hand; one whose settings differ restarts its workers;
- a change to what every account uses (the templates folder, the token secret,
  the outbox, relay and policy settings) restarts every account;
- the log level and format apply at once;
- a new database is refused: moving the state under running workers is a
  restart's job, not a reload's; so are new lease times (``[cluster]``).

A file that does not load is refused with one log line and the running
configuration is kept (the supervisor does that; see ``Daemon.reload``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import Settings

#: Settings every account's workers are built from: a change restarts them all.
SHARED = ("templates_dir", "security", "outbox", "relay", "policy")


@dataclass(frozen=True)
class ReloadPlan:
    start: tuple[str, ...] = ()      # accounts added
    stop: tuple[str, ...] = ()       # accounts removed
    restart: tuple[str, ...] = ()    # accounts whose settings (or shared settings) changed
    refused: str = ""                # why the new configuration cannot be applied by a reload

    def summary(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("started", self.start), ("stopped", self.stop), ("restarted", self.restart)) if names]
        return "; ".join(parts) or "no account changed"


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """Compare the running configuration with the new one (pure: settings in, plan out)."""
    if new.database != old.database:
        return ReloadPlan(refused="[database] changed; restart mailbridge to move to another database "
                                  "(systemctl restart mailbridge)")
    if new.cluster != old.cluster:
        # The keeper's times are what its leases and deadlines were counted with; changing them under
        # held leases would break the argument of docs/architecture.md, "Several daemons".
        return ReloadPlan(refused="[cluster] changed; restart mailbridge to apply new lease times "
                                  "(every daemon sharing the database should use the same)")
    before = {a.name: a for a in old.accounts}
    after = {a.name: a for a in new.accounts}
    shared_changed = any(getattr(old, name) != getattr(new, name) for name in SHARED)
    return ReloadPlan(
        start=tuple(n for n in after if n not in before),
        stop=tuple(n for n in before if n not in after),
        restart=tuple(n for n in after if n in before and (shared_changed or after[n] != before[n])),
    )


def one_line(error: object) -> str:
    """A configuration error as one log line (the loader gives one problem per line)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
