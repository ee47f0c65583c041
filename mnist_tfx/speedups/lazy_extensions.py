"""Speed-up `tfx_extensions`: `tfx.v1.extensions` (Vertex AI) imported on first use.

`from tfx import v1` imports `google.cloud.aiplatform` through the Vertex
extensions: ~9 s of a ~30 s import, spent on every local run that never
touches Vertex. `defer_tfx_extensions()` puts a stand-in module in its
place before `tfx.v1` is imported; the first attribute looked up on it
imports the real subpackage and swaps it in, so nothing behaves differently.
Call it before the first `from tfx import v1` (both our packages do).
It replaces an entry of `sys.modules` and relies on TFX's file layout:
checked against tfx 1.16.0; another version, or the switch off, imports
TFX as shipped.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types

from mnist_tfx import speedups

_NAME = "tfx.v1.extensions"


class _Deferred(types.ModuleType):

  def __getattr__(self, attr: str):
    if attr.startswith("__"):
      raise AttributeError(attr)
    return getattr(_load(), attr)


def _load() -> types.ModuleType:
  if isinstance(sys.modules.get(_NAME), _Deferred):
    del sys.modules[_NAME]
  real = importlib.import_module(_NAME)
  parent = sys.modules.get(_NAME.rsplit(".", 1)[0])
  if parent is not None:
    setattr(parent, "extensions", real)
  return real


def defer_tfx_extensions() -> None:
  if _NAME in sys.modules or "tfx.v1" in sys.modules:
    return
  if not speedups.allowed("tfx_extensions", "tfx"):
    return
  # Locate the file without find_spec(_NAME), which would import tfx.v1.
  top = importlib.machinery.PathFinder.find_spec("tfx")
  if top is None or not top.submodule_search_locations:
    speedups.step_aside("tfx_extensions", "tfx is not importable")
    return
  folder = os.path.join(list(top.submodule_search_locations)[0], "v1",
                        "extensions")
  spec = importlib.util.spec_from_file_location(
      _NAME, os.path.join(folder, "__init__.py"),
      submodule_search_locations=[folder])
  if spec is None or not os.path.exists(spec.origin):
    speedups.step_aside("tfx_extensions", "tfx has no v1/extensions package")
    return
  stub = _Deferred(_NAME)
  stub.__spec__ = spec
  stub.__file__ = spec.origin
  stub.__package__ = _NAME
  sys.modules[_NAME] = stub
