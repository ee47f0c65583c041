"""mnist_tfx.speedups.gc_freeze: full collections wait during the imports, then freeze.

Each case runs in a fresh interpreter: freezing is once per process, and
freezing pytest's own objects would change every later test's collector.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Builds many long-lived containers (as imports do) and one dropped cycle,
# and records which generations the collector ran meanwhile.
_PROBE = r"""
import gc, json, sys, weakref
from mnist_tfx.speedups import gc_freeze as gc_policy

runs = []
gc.callbacks.append(lambda phase, info: phase == "stop" and runs.append(info["generation"]))

class Node:
  pass

def imports(keep, fail=False):
  cycle = Node(); cycle.self = cycle
  dropped = weakref.ref(cycle)
  del cycle
  keep.extend([i] for i in range(300_000))  # 300k tracked lists
  if fail:
    raise ImportError("no such module")
  return dropped

out = {}
kept = []
mode = sys.argv[1]
if mode == "disabled":
  gc.disable()
before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
try:
  with gc_policy.frozen_imports():
    dropped = imports(kept, fail=(mode == "fails"))
    out["threshold_within"] = gc.get_threshold()
    out["within"] = sorted(set(runs))
    out["cycle_freed_within"] = dropped() is None
except ImportError as e:
  out["raised"] = str(e)
out["threshold_after"] = gc.get_threshold()
out["threshold_before"] = before["threshold"]
out["frozen"] = gc.get_freeze_count() - before["frozen"]
if mode == "twice":
  first = gc.get_freeze_count()
  with gc_policy.frozen_imports():
    imports(kept)
  out["frozen_by_second"] = gc.get_freeze_count() - first
print(json.dumps(out))
"""


def _probe(mode: str) -> dict:
  done = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=True)
  return json.loads(done.stdout)


def test_imports_run_without_full_collections_and_what_they_built_is_frozen():
  out = _probe("once")
  # 300k lists: without the pause CPython runs several full collections.
  assert 2 not in out["within"]
  assert 0 in out["within"]  # young collections still run ...
  assert out["cycle_freed_within"] is True  # ... and free short-lived cycles
  assert out["threshold_within"][2] > 10**8
  assert out["threshold_after"] == out["threshold_before"]
  assert out["frozen"] >= 300_000


def test_a_failing_block_restores_the_threshold_and_freezes_nothing():
  out = _probe("fails")
  assert out["raised"] == "no such module"
  assert out["threshold_after"] == out["threshold_before"]
  assert out["frozen"] == 0


def test_once_per_process_a_second_block_is_left_alone():
  out = _probe("twice")
  assert out["frozen"] >= 300_000
  assert out["frozen_by_second"] == 0


def test_a_disabled_collector_is_left_as_the_process_set_it():
  out = _probe("disabled")
  assert out["threshold_within"] == out["threshold_before"]
  assert out["frozen"] == 0
