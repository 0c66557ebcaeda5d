"""Account leases, as decisions: each daemon's fair share, what one keeper round takes and gives up, and
when a daemon may still start an operation on an account (docs/architecture.md, "Several daemons").

Pure: the keeper (``bridge.workers.leases``) passes in what the database says and the
monotonic time, and applies what comes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

#: Subtracted from the lease when the local deadline is set: covers a monotonic clock
#: that runs a little slower than the database server's (ppm in practice) and the time
#: between reading the monotonic clock and the renewal statement reaching the server is
#: already on the safe side (the deadline counts from before the round trip).
SAFETY_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class LeaseTiming:
    """``lease_seconds``: how long a renewal holds; ``renew_seconds``: how often the keeper renews;
    ``operation_seconds``: the longest operation a daemon starts on an account (an IMAP batch, a send)."""

    lease_seconds: float
    renew_seconds: float
    operation_seconds: float
    margin_seconds: float = SAFETY_MARGIN_SECONDS

    def problem(self) -> str | None:
        """Why these times cannot keep two holders apart, or None when they can."""
        needed = self.renew_seconds + self.operation_seconds + self.margin_seconds
        if self.lease_seconds <= needed:
            return (f"lease_seconds ({self.lease_seconds:g}) must be more than renew_seconds "
                    f"({self.renew_seconds:g}) + operation_seconds ({self.operation_seconds:g}) + "
                    f"{self.margin_seconds:g} s of margin = {needed:g}: otherwise a daemon that just renewed "
                    "would already be too close to its lease's end to start an operation")
        return None

    def deadline(self, round_started: float) -> float:
        """The local (monotonic) end of a lease renewed in a round trip that began at ``round_started``.

        The database set the expiry at least ``lease_seconds`` after that moment, so the
        local deadline comes at least ``margin_seconds`` before the expiry others see.
        """
        return round_started + self.lease_seconds - self.margin_seconds

    def may_start(self, deadline: float, now: float) -> bool:
        """Whether an operation started ``now`` ends (at the latest) before ``deadline``."""
        return deadline - now >= self.operation_seconds

    @property
    def takeover_seconds(self) -> float:
        """The longest time a dead daemon's account stays unattended: its lease runs out, plus one round."""
        return self.lease_seconds + self.renew_seconds


def share(accounts: int, daemons: Sequence[str], me: str) -> int:
    """How many of ``accounts`` the daemon ``me`` should hold when ``daemons`` (sorted holders) are live.

    ``me`` is counted among the daemons even when it is not (yet) among the live ones (its
    first heartbeat not written): it takes its place in holder order like the others. The
    shares add up to ``accounts``: the first ``accounts % n`` of the n daemons in holder
    order take ceil(accounts / n), the others floor.
    """
    everyone = sorted(set(daemons) | {me})
    base, extra = divmod(accounts, len(everyone))
    return base + (1 if everyone.index(me) < extra else 0)


def fair_share(accounts: int, daemons: int) -> int:
    """The most accounts any one of ``daemons`` live daemons holds once balanced: ceil(accounts / daemons)."""
    return math.ceil(accounts / max(1, daemons))


@dataclass(frozen=True)
class Plan:
    """One keeper round's decisions: leases to try to take, leases to give up (after stopping their workers)."""

    target: int
    take: tuple[str, ...] = ()
    give_up: tuple[str, ...] = ()


def plan_round(me: str, accounts: Sequence[str], held: Sequence[str], taken_by_others: Sequence[str],
               daemons: Sequence[str]) -> Plan:
    """What ``me`` does this round.

    ``accounts``: the configured accounts; ``held``: those whose lease ``me`` renewed;
    ``taken_by_others``: those with a live lease of another daemon; ``daemons``: the live
    holders. Free accounts are taken up to the share; above it, the surplus is given up
    (a daemon joined). Which ones: the free accounts are tried from a point that depends
    on the daemon's place, so daemons starting together mostly reach for different ones;
    the accounts given up are the last held, in name order.
    """
    everyone = sorted(set(daemons) | {me})
    target = share(len(accounts), everyone, me)
    mine = sorted(a for a in held if a in set(accounts))
    if len(mine) > target:
        return Plan(target, give_up=tuple(mine[target:]))
    busy = set(mine) | set(taken_by_others)
    free = [a for a in sorted(accounts) if a not in busy]
    if not free or len(mine) == target:
        return Plan(target)
    start = everyone.index(me) * len(free) // len(everyone)
    order = free[start:] + free[:start]
    return Plan(target, take=tuple(order[:target - len(mine)]))


def to_stop(deadlines: Mapping[str, float], renewed: Sequence[str] | None, now: float,
            operation_seconds: float) -> list[str]:
    """The held accounts whose workers must stop now.

    ``deadlines``: the local deadline of each account whose workers run; ``renewed``: the
    accounts the renewal kept, or None when it failed (database unreachable). After a
    renewal, an account it did not keep is lost at once. Without one, an account stops
    as soon as no operation may start on it any more (less than ``operation_seconds``
    left): its workers then finish what they have in hand well before the lease
    expires and another daemon may take it.
    """
    if renewed is None:
        return sorted(a for a, deadline in deadlines.items() if deadline - now < operation_seconds)
    kept = set(renewed)
    return sorted(a for a in deadlines if a not in kept)
