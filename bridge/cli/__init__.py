"""The ``mailbridge`` command: one module per command group.

``command`` holds the parser and :func:`main`; each command's work is in the
module of its name (``run``, ``check``, ``status``, ``outbox``, ``optout``, ``orders``,
``feedback``, ``audit``, ``policy``, ``templates``, ``db``, ``demo``), imported only when
that command runs.
"""

from bridge.cli.command import main

__all__ = ["main"]
