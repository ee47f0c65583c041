"""Speed-ups `beam_signatures` and `beam_crc`: two of Beam's per-use costs,
made once or cheaper, in this process. Checked against apache-beam 2.60.0.

Function signatures, computed once per function instead of per use.
Building and running a Beam pipeline asks for the signature of every method
of every DoFn, again at each step: the ParDo's construction, the pipeline's
translation and each bundle processor's set-up all walk `dir(dofn)` and
call `apache_beam.typehints.decorators.get_signature` on each method. A
local run made ~70,000 such calls for ~650 distinct functions: 1.3 s of
`inspect.signature`. `memoize_signatures()` puts a memo in front of it, in this
process, for Python functions and methods of them (a bound method's
signature is its function's without the first parameter, whatever the
instance). A function whose code, defaults, annotations, `__signature__` or
`__wrapped__` change afterwards is looked up again; anything else (builtins,
partials, classes) goes to Beam's function as before. It is put in place
only where it answers as Beam does.

The TFRecord reader's CRC-32C of each record: Beam uses python-snappy's if
installed, else crcmod's (2.9 us for a 1 KB record; StatisticsGen reads
70,000); google_crc32c, installed with Beam's GCP extras, takes 0.2 us. It
is put where Beam keeps its choice, only if it is the C implementation and
gives crcmod's values. `install()` does both, where the switch is on and
Beam is a version they were checked against (see `mnist_tfx.speedups`); a
guard that fails says so once and leaves Beam as it is.
"""

import functools
import importlib
import inspect
import threading
import types
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from mnist_tfx import speedups

# Modules that import get_signature by name (so each holds its own reference).
_USERS = ("apache_beam.typehints.decorators", "apache_beam.transforms.core",
          "apache_beam.transforms.ptransform", "apache_beam.transforms.util")
_CRC_SAMPLES = (b"", b"a", b"123456789", bytes(range(256)) * 5)
_lock = threading.Lock()
_installed: Optional[Callable[[Any], inspect.Signature]] = None


def _state(f: types.FunctionType) -> Tuple[Any, ...]:
  """What a function's signature is computed from, compared by value."""
  extra = f.__dict__
  return (f.__code__, f.__defaults__, f.__kwdefaults__,
          tuple(f.__annotations__.items()),
          extra.get("__signature__"), extra.get("__wrapped__"))


def _equal(a: Tuple[Any, ...], b: Tuple[Any, ...]) -> bool:
  """Equal states; False where a changed default cannot say (numpy arrays)."""
  try:
    return bool(a == b)
  except Exception:  # pylint: disable=broad-except
    return False


def memoized(get_signature: Callable[[Any], inspect.Signature]
             ) -> Callable[[Any], inspect.Signature]:
  """`get_signature` with a memo keyed by function (weakly), checked by state."""
  memo: "weakref.WeakKeyDictionary[types.FunctionType, Tuple[Tuple[Any, ...], Dict[bool, inspect.Signature]]]" = (
      weakref.WeakKeyDictionary())

  @functools.wraps(get_signature)
  def lookup(func):
    if type(func) is types.MethodType and type(func.__func__) is types.FunctionType:
      function, bound = func.__func__, True
    elif type(func) is types.FunctionType:
      function, bound = func, False
    else:
      return get_signature(func)
    state = _state(function)
    entry = memo.get(function)
    same = entry is not None and _equal(entry[0], state)
    if same and bound in entry[1]:
      return entry[1][bound]
    signature = get_signature(func)  # raises as before; nothing kept then
    if not same:
      entry = (state, {})
      memo[function] = entry
    entry[1][bound] = signature
    return signature

  lookup.memo = memo  # for tests
  return lookup


class _Probe:  # a method with defaults and annotations, bound and not

  def process(self, element: int, side=None, *args, flag: bool = False, **kw):
    del element, side, args, flag, kw


def _agrees(original, candidate) -> bool:
  """The memo gives Beam's answers, twice (computed, then remembered)."""
  def plain(a, b=2, *, c: str = "x"):
    del a, b, c

  @functools.wraps(plain)
  def wrapped(*args, **kwargs):
    return plain(*args, **kwargs)

  cases = [plain, wrapped, _Probe.process, _Probe().process, len, str.upper]
  try:
    return all(candidate(c) == original(c) for c in cases + cases)
  except Exception:  # pylint: disable=broad-except
    return False


def install() -> Dict[str, bool]:
  """Both, in this process; says which are in place."""
  return {"signatures": memoize_signatures(), "tfrecord_crc": fast_tfrecord_crc()}


def fast_tfrecord_crc() -> bool:
  """Beam's TFRecord reader checks CRCs with google_crc32c; True if it does."""
  if not speedups.allowed("beam_crc", "apache-beam"):
    return False
  try:
    import crcmod.predefined  # pylint: disable=g-import-not-at-top
    import google_crc32c  # pylint: disable=g-import-not-at-top
    from apache_beam.io import tfrecordio  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    speedups.step_aside("beam_crc", f"cannot import {e.name}")
    return False
  chooser = getattr(tfrecordio, "_default_crc32c_fn", None)
  if not hasattr(chooser, "fn"):
    speedups.step_aside("beam_crc", "Beam keeps its CRC choice elsewhere")
    return False
  if getattr(google_crc32c, "implementation", None) != "c":
    speedups.step_aside("beam_crc", "google_crc32c is its pure-Python fallback")
    return False
  reference = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
  if any(google_crc32c.value(s) != reference(s) for s in _CRC_SAMPLES):
    speedups.step_aside("beam_crc", "google_crc32c disagrees with crcmod")
    return False
  chooser.fn = google_crc32c.value
  return True


def memoize_signatures() -> bool:
  """Memoizes Beam's get_signature in this process; True if it is in place.

  Idempotent. False (and Beam untouched) where Beam has no such function
  or the memo would answer differently.
  """
  global _installed
  if not speedups.allowed("beam_signatures", "apache-beam"):
    return False
  with _lock:
    if _installed is not None:
      return True
    try:
      modules = [importlib.import_module(name) for name in _USERS]
    except ImportError as e:
      speedups.step_aside("beam_signatures", f"cannot import {e.name}")
      return False
    original = getattr(modules[0], "get_signature", None)
    if not callable(original) or any(
        getattr(m, "get_signature", None) is not original for m in modules):
      speedups.step_aside("beam_signatures", "Beam's modules no longer share "
                          "one get_signature")
      return False
    candidate = memoized(original)
    if not _agrees(original, candidate):
      speedups.step_aside("beam_signatures", "the memo answers differently "
                          "than Beam")
      return False
    for m in modules:
      m.get_signature = candidate
    _installed = candidate
    return True
