"""components.trainer.memory: glibc's mmap threshold, observed through malloc itself."""

import ctypes
import gc
import json
import os
import subprocess
import sys

import pytest

from mnist_tfx.speedups import malloc as memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Mallinfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
      "uordblks", "fordblks", "keepcost")]


def malloc_libc():
  """glibc with malloc, free and mallinfo2 typed; None where not available."""
  if memory._glibc() is None:
    return None
  libc = ctypes.CDLL(None)
  if not hasattr(libc, "mallinfo2"):  # glibc < 2.33
    return None
  libc.mallinfo2.restype = _Mallinfo2
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = (ctypes.c_size_t,)
  libc.free.argtypes = (ctypes.c_void_p,)
  return libc


def _libc():
  libc = malloc_libc()
  if libc is None:
    pytest.skip("not glibc >= 2.33 (mallinfo2)")
  return libc


# Run in a fresh interpreter: malloc serves a large request from free space
# the heap already has before it considers a mapping, so the answer depends
# on the process's history. The 20 MiB block freed first raises glibc's
# dynamic threshold as TFX's data components do before the Trainer; the
# trim threshold is then put at its start value, whatever it had become.
_PROBE = r"""
import json, sys
from mnist_tfx.speedups import malloc as memory
from tests.test_speedups_malloc import malloc_libc

libc = malloc_libc()

def mapped_alone(size):
  before = libc.mallinfo2().hblks
  block = libc.malloc(size)
  assert block
  alone = libc.mallinfo2().hblks == before + 1
  libc.free(block)
  return alone

def kept_at_top():  # free bytes kept at the heap's top after 6.4 MB came and went
  blocks = [libc.malloc(400_000) for _ in range(16)]
  for block in reversed(blocks):
    libc.free(block)
  return libc.mallinfo2().keepcost

libc.free(libc.malloc(20 << 20))
libc.mallopt(memory._M_TRIM_THRESHOLD, 128 << 10)  # glibc's start value
sizes = {"1MiB+4KiB": memory.TRAINING_THRESHOLD + 4096, "3MiB": 3 << 20,
         "320KB": 320_000, "512KiB": memory.TRAINING_THRESHOLD // 2}
out = {}
if sys.argv[1] == "within":
  with memory.large_blocks_unpooled() as applied:
    out["applied"] = applied
    out["within"] = {k: mapped_alone(v) for k, v in sizes.items()}
    out["kept_at_top"] = kept_at_top()
  out["after"] = {"3MiB": mapped_alone(3 << 20),
                  "33MiB": mapped_alone(memory.AFTER_THRESHOLD + (1 << 20))}
elif sys.argv[1] == "mmap_only":
  libc.mallopt(memory._M_MMAP_THRESHOLD, memory.TRAINING_THRESHOLD)
  out["kept_at_top"] = kept_at_top()
else:
  out["without"] = {k: mapped_alone(v) for k, v in sizes.items()}
print(json.dumps(out))
"""


def _probe(mode: str) -> dict:
  _libc()  # skips where the probe cannot run
  done = subprocess.run([sys.executable, "-c", _PROBE, mode], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=True)
  return json.loads(done.stdout)


def test_within_blocks_of_a_mebibyte_or_more_are_mapped_alone_and_smaller_are_not():
  out = _probe("within")
  assert out["applied"] is True
  assert out["within"] == {
      "1MiB+4KiB": True,
      "3MiB": True,  # a 1,024-example batch of 784 float32
      "320KB": False,  # a training step's gradient stays pooled
      "512KiB": False}
  assert out["kept_at_top"] >= 6_000_000  # reused, not given back and refaulted
  # After leaving: glibc's ceiling, set and fixed.
  assert out["after"] == {"3MiB": False, "33MiB": True}


def test_the_mmap_threshold_alone_would_give_the_heap_top_back_at_each_free():
  """Why the trim threshold is set too: glibc leaves it at 128 KiB then."""
  assert _probe("mmap_only")["kept_at_top"] < 1_000_000


def test_without_it_the_risen_threshold_pools_large_blocks():
  """The control: the same process history, no threshold set."""
  assert _probe("without") == {"without": {
      "1MiB+4KiB": False, "3MiB": False, "320KB": False, "512KiB": False}}


class _FakeLibc:

  def __init__(self, result=1):
    self.calls, self.result = [], result

  def mallopt(self, param, value):
    self.calls.append((param, value))
    return self.result

  def malloc_trim(self, pad):
    self.calls.append(("trim", pad))
    return 1


def test_the_threshold_is_reset_when_the_block_raises(monkeypatch):
  fake = _FakeLibc()
  monkeypatch.setattr(memory, "_glibc", lambda: fake)
  with pytest.raises(RuntimeError):
    with memory.large_blocks_unpooled():
      raise RuntimeError("training failed")
  assert fake.calls == [(-3, memory.TRAINING_THRESHOLD), (-1, memory.TRAINING_TRIM),
                        (-3, memory.AFTER_THRESHOLD), (-1, memory.AFTER_TRIM)]


def test_without_glibc_nothing_is_set_and_training_goes_on(monkeypatch):
  monkeypatch.setattr(memory, "_glibc", lambda: None)
  with memory.large_blocks_unpooled() as applied:
    assert applied is False
  memory.release_freed()  # collects Python's garbage only


def test_a_refused_setting_is_not_undone(monkeypatch):
  fake = _FakeLibc(result=0)  # mallopt reports failure with 0
  monkeypatch.setattr(memory, "_glibc", lambda: fake)
  with memory.large_blocks_unpooled() as applied:
    assert applied is False
  assert fake.calls == [(-3, memory.TRAINING_THRESHOLD)]



def _resident_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096 / 2**20


def test_release_freed_returns_the_heaps_free_pages():
  libc = _libc()
  # 60 MB in 4 KiB blocks, written to: pooled in the heap. The last stays
  # allocated, so freeing the rest leaves free pages below it that free()
  # itself does not give back.
  blocks = [libc.malloc(4096) for _ in range(15_000)]
  assert all(blocks)
  for block in blocks:
    ctypes.memset(block, 1, 4096)
  for block in blocks[:-1]:
    libc.free(block)
  before = _resident_mb()
  memory.release_freed()
  after = _resident_mb()
  libc.free(blocks[-1])
  assert before - after > 40, (before, after)


def test_release_freed_frees_memory_held_by_unreachable_cycles():
  gc.disable()  # or a collection could happen on its own, before the call
  try:
    cycle = [bytearray(b"\1" * (50 << 20))]
    cycle.append(cycle)
    del cycle
    before = _resident_mb()
    memory.release_freed()
    after = _resident_mb()
  finally:
    gc.enable()
  assert before - after > 40, (before, after)
