"""The collector settings the daemon and the backlog reader take after start-up."""

from __future__ import annotations

import gc
import subprocess
import sys

from bridge import gctune


def test_settle_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    code = ("import gc; from bridge import gctune; before = gc.get_threshold(); gctune.settle(); "
            "print(gc.get_freeze_count() > 1000, gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(gctune.YOUNG_THRESHOLD), "True"]


def test_cycles_are_still_collected_after_settling() -> None:
    code = ("import gc, weakref; from bridge import gctune; gctune.settle()\n"
            "class Node: pass\n"
            "a = Node(); a.self = a; probe = weakref.ref(a); del a\n"
            "keep = [[] for _ in range(3 * gctune.YOUNG_THRESHOLD)]   # net allocations: a pass comes\n"
            "print(probe() is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"
    assert gc.isenabled()
