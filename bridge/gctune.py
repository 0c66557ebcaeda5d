"""Cyclic garbage collector settings for mailbridge's processes (the daemon, the backlog reader).

CPython runs its cyclic collector every 700 net container allocations, and
each older-generation pass walks every object alive, including the ~70,000
that importing SQLAlchemy, SQLModel and Jinja leaves behind. Mail processing
allocates a great deal but makes almost no reference cycles (reference
counting frees it at once), so in a 5,000-message backlog the ingest thread
spent about 0.1 s in collections that found next to nothing.

During start-up (:func:`hold` to :func:`settle`) the collector is off: the
imports make some 120,000 objects and next to no garbage, and the passes over
them took about an eighth of the time ``import bridge.daemon`` takes.

After start-up, :func:`settle` freezes what exists (those objects are never
walked again; they live as long as the process anyway) and lets the young
generation grow to ``YOUNG_THRESHOLD`` before a pass. Cycles are still
collected, in rarer and somewhat larger passes. (Cyclic garbage that exists
at the moment of freezing is kept: a few objects left over from imports, once.
Collecting it first would cost 35 ms of every start.)
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


_held = False


def hold() -> None:
    """Call first thing in a process that will :func:`settle`: no collections until then."""
    global _held
    if gc.isenabled():
        _held = True
        gc.disable()


def release() -> None:
    """Turn the collector back on if :func:`hold` turned it off and :func:`settle` never came
    (start-up ended early, say on a configuration error, in a process that goes on)."""
    global _held
    if _held:
        _held = False
        gc.enable()


def settle() -> None:
    """Call once start-up (imports, configuration) is done."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    release()
