"""The serving process's garbage collector (`settle_collector`): a request's objects, freed by reference counting
when it ends, are no longer scanned by young collections several times a request; garbage with cycles is still
collected. Each case runs in a fresh interpreter, so that the test process's own collector is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys
from flowship.serving.__main__ import settle_collector
if {settle}:
    settle_collector()
young = lambda: gc.get_stats()[0]["collections"]
before = young()
for request in range(50):  # a 1,000-record request's containers: rows, answers, events
    alive = [({{"p": 0.5}}, [i]) for i in range(4000)]
    del alive
plain = young() - before
before = young()
for cycle in range(60_000):  # garbage that only the collector frees
    a = []
    a.append(a)
cyclic = young() - before
print(json.dumps({{"plain": plain, "cyclic": cyclic, "frozen": gc.get_freeze_count()}}))
"""


def collections(settle: bool) -> dict[str, int]:
    code = PROBE.format(settle=settle)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_requests_own_objects_set_off_no_young_collection() -> None:
    settled = collections(settle=True)
    assert settled["plain"] == 0
    assert settled["frozen"] > 1_000  # what was loaded before serving: out of every pass


def test_garbage_with_cycles_is_still_collected() -> None:
    assert collections(settle=True)["cyclic"] >= 1


def test_without_it_the_same_objects_set_off_young_collections() -> None:
    """The probe itself: at the interpreter's defaults, the same requests set off many young collections."""
    default = collections(settle=False)
    assert default["plain"] > 100 and default["frozen"] == 0
