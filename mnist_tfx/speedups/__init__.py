"""Every patch of a dependency's internals, in one place, behind one switch.

Each module here changes how a library or the interpreter does something
(never what it computes) for speed or memory. Each was measured, names the
versions it was checked against, and guards itself: where the installed
version is not one of those, or its own check finds the library behaves
otherwise, it says so once in the log and steps aside, and the library runs
as shipped.

| patch             | module             | what                                   | measured gain                    |
| ----------------- | ------------------ | -------------------------------------- | -------------------------------- |
| gc_freeze         | gc_freeze.py       | imports without full collections, then | collector 1.8 s -> 0.5 s a run   |
|                   |                    | gc.freeze()                            |                                  |
| beam_signatures   | beam.py            | Beam's get_signature memoized          | 1.3 s -> 0.16 s a run            |
| beam_crc          | beam.py            | TFRecord CRC-32C with google_crc32c    | 2.9 -> 0.2 us a record           |
| tfx_extensions    | lazy_extensions.py | tfx.v1.extensions imported on use      | ~9 s of import (before bytecode) |
| malloc            | malloc.py          | glibc mallopt/malloc_trim in Trainer   | peak RSS 1,251-1,316 -> 1,141 MB |
| tfma_reader       | tfma_reader.py     | TFMA's label/prediction reader, short  | 43 -> 14 us an example and slice |
| tf_direct_call    | tf_direct_call.py  | a signature's graph function by name   | 326 -> 184 us a one-image call   |
| fast_exit         | fast_exit.py       | exit without interpreter teardown      | ~2.7 s a command                 |

`MNIST_TFX_SPEEDUPS=0` in the environment, or `--no-speedups` on any
command (which sets it, so the processes a command starts inherit it),
turns every one of them off. Nothing heavy is imported here.
"""

import functools
import logging
import os
import threading
from typing import Dict, Optional, Tuple

ENV = "MNIST_TFX_SPEEDUPS"
_ON = frozenset({"", "1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})
# The versions every patch was measured and checked against (the lock's).
CHECKED: Dict[str, Tuple[str, ...]] = {
    "apache-beam": ("2.60.0",),
    "tensorflow": ("2.16.2",),
    "tensorflow-model-analysis": ("0.47.1",),
    "tfx": ("1.16.0",),
}
_LOG = logging.getLogger("mnist_tfx.speedups")
_lock = threading.Lock()
_said: Dict[str, str] = {}  # patch -> why it stepped aside, in this process


class SwitchError(ValueError):
  """MNIST_TFX_SPEEDUPS holds something that is neither on nor off."""


def enabled() -> bool:
  """Whether the speed-ups may apply (the switch; each guard still decides)."""
  value = os.environ.get(ENV, "1").strip().lower()
  if value in _ON:
    return True
  if value in _OFF:
    return False
  raise SwitchError(f"{ENV}={os.environ[ENV]!r}: expected 1 (speed-ups on, "
                    "the default) or 0 (off)")


def disable() -> None:
  """Turns every speed-up off here and in the processes started from here."""
  os.environ[ENV] = "0"


@functools.lru_cache(maxsize=None)
def installed_version(distribution: str) -> Optional[str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(distribution)
  except metadata.PackageNotFoundError:
    return None


def allowed(patch: str, *distributions: str) -> bool:
  """The switch is on and each library is at a version the patch was checked
  against; otherwise the patch steps aside (said once). Never raises: a
  switch set to nonsense counts as off (the CLI refuses it first)."""
  try:
    if not enabled():
      return False
  except SwitchError:
    return False
  for name in distributions:
    found = installed_version(name)
    if found not in CHECKED[name]:
      step_aside(patch, f"checked against {name} {', '.join(CHECKED[name])}, "
                 f"found {found or 'none'}")
      return False
  return True


def step_aside(patch: str, why: str) -> None:
  """Logs once per process that `patch` is not applied, and why."""
  with _lock:
    if patch in _said:
      return
    _said[patch] = why
  _LOG.warning("speed-up %s stepped aside (%s); the library runs as shipped",
               patch, why)


def stepped_aside() -> Dict[str, str]:
  """{patch: why} for the patches whose guard turned them off in this process."""
  with _lock:
    return dict(_said)
