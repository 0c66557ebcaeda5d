"""The collector settings the daemon and the backlog reader take after start-up."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import gctune


def python(code: str) -> list[str]:
    """What a fresh interpreter running ``code`` prints, word by word (collector state is per process)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_settle_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    code = ("import gc; from bridge import gctune; before = gc.get_threshold(); gctune.settle(); "
            "print(gc.get_freeze_count() > 1000, gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:])")
    assert python(code) == ["True", str(gctune.YOUNG_THRESHOLD), "True"]


def test_cycles_are_still_collected_after_settling() -> None:
    code = ("import gc, weakref; from bridge import gctune; gctune.settle()\n"
            "class Node: pass\n"
            "a = Node(); a.self = a; probe = weakref.ref(a); del a\n"
            "keep = [[] for _ in range(3 * gctune.YOUNG_THRESHOLD)]   # net allocations: a pass comes\n"
            "print(probe() is None, gc.isenabled())")
    assert python(code) == ["True", "True"]


def test_start_up_holds_the_collector_until_it_settles() -> None:
    code = ("import gc; from bridge import gctune\n"
            "gctune.hold(); a = gc.isenabled(); gctune.settle(); b = gc.isenabled()\n"
            "gctune.hold(); gctune.release(); c = gc.isenabled()\n"
            "gc.disable(); gctune.release(); gctune.settle(); d = gc.isenabled()   # not ours to turn on\n"
            "print(a, b, c, d)")
    assert python(code) == ["False", "True", "True", "False"]


def test_a_start_up_that_fails_leaves_the_collector_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import cli, reader

    monkeypatch.setattr(reader, "prestart", lambda: None)   # no spare helper for a start that fails
    assert gc.isenabled()
    assert cli.main(["-c", str(tmp_path / "missing.toml"), "run", "--once"]) == 2   # no such configuration
    assert gc.isenabled()
