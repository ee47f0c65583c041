"""Speed-up `malloc`: the Trainer's peak memory, large buffers returned when freed.

glibc's malloc maps a block of 128 KiB or more on its own (unmapped on
free) when the heap has no room for it, but raises that threshold to the
size of each such block freed, up to 32 MiB. Once TFX's data components
have run, the Trainer's multi-megabyte buffers (1,024-example read
batches, each epoch's validation batches) grow the heap instead, and the
heap keeps what is freed: the process grew ~30 MB an epoch. Measured with
`mnist-tfx run` on the full MNIST, peak RSS: 1,251-1,316 MB before, 1,141-
1,146 MB with a fixed 1 MiB threshold while training and, first, the data
components' garbage collected and the heap's free pages returned (~35 MB,
0.3 s). A 128 KiB threshold lowered the peak as much but mapped and
faulted in every training step's gradients (the improved model's 784x100
kernel is 313 KB): the Trainer took 18-22 s instead of 11. Setting the
threshold also stops glibc adjusting the trim threshold (how much free
memory a heap keeps at its top), which then stays where it was, 128 KiB in
a process that set it early: every few steps a heap gave pages back and
faulted them in again (minor faults in a 5-epoch fit with the thresholds
set at start: ~47k by default, 390-475k with the 1 MiB threshold alone,
71-80k with a 32 MiB trim threshold as well; system time 1.4-1.6, 2.5-2.6
and 1.3-1.8 s; peak 1,160-1,169, 1,062-1,065 and 1,069-1,076 MB). So both
are set, whatever they were. Set values no longer move by themselves, so
leaving sets what glibc's adjustment reaches on its own: 32 and 64 MiB.
glibc's public mallopt/malloc_trim (checked on glibc 2.36); elsewhere (musl,
macOS) or with the speed-ups off, nothing is set.
"""

import contextlib
import ctypes
import functools
import gc
from typing import Iterator, Optional

from mnist_tfx import speedups

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3
TRAINING_THRESHOLD = 1 << 20  # bytes; see the module docstring
TRAINING_TRIM = 32 << 20  # free heap top kept for reuse while training
AFTER_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
AFTER_TRIM = 2 * AFTER_THRESHOLD  # where glibc's own adjustment would put it


@functools.lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
  """The process's C library if it is glibc, else None (musl, macOS); looked
  up and typed once."""
  try:
    libc = ctypes.CDLL(None)
  except OSError:
    return None
  if not all(hasattr(libc, name) for name in
             ("gnu_get_libc_version", "mallopt", "malloc_trim")):
    return None
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.mallopt.restype = ctypes.c_int
  libc.malloc_trim.argtypes = (ctypes.c_size_t,)
  libc.malloc_trim.restype = ctypes.c_int
  return libc


def release_freed() -> None:
  """Frees unreachable Python objects and gives the heap's free pages back."""
  gc.collect()
  libc = _glibc() if speedups.enabled() else None
  if libc is not None:
    libc.malloc_trim(0)


def set_thresholds(mmap_size: int, trim_size: int) -> bool:
  """Blocks of `mmap_size` bytes or more get mappings of their own, and a
  heap gives back free memory at its top beyond `trim_size`; False if not
  glibc or refused."""
  libc = _glibc()
  return bool(libc is not None
              and libc.mallopt(_M_MMAP_THRESHOLD, mmap_size) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, trim_size) == 1)


@contextlib.contextmanager
def large_blocks_unpooled() -> Iterator[bool]:
  """Within, a block of 1 MiB or more that the heap's free space cannot hold is
  mapped alone instead of growing the heap. Yields whether that applies."""
  applied = speedups.enabled() and set_thresholds(TRAINING_THRESHOLD,
                                                  TRAINING_TRIM)
  try:
    yield applied
  finally:
    if applied:
      set_thresholds(AFTER_THRESHOLD, AFTER_TRIM)
