"""The serving set: the latest version that loads, pinned versions, statuses."""

import os

import pytest

from serving.model_store import ModelStore, ServingError


class _Model:
  def __init__(self, path):
    self.path = path
    self.signatures = {"serving_default": path}


def _loader(path):
  if os.path.exists(os.path.join(path, "broken")):
    raise ValueError("not a SavedModel")
  return _Model(path)


def _version(base, v, broken=False):
  d = base / str(v)
  d.mkdir(parents=True)
  (d / "saved_model.pb").write_bytes(b"x")
  if broken:
    (d / "broken").write_text("")


def test_latest_policy_serves_the_newest_that_loads(tmp_path):
  _version(tmp_path, 1)
  store = ModelStore("mnist", str(tmp_path), loader=_loader)
  store.refresh()
  assert store.get("mnist").version == 1
  _version(tmp_path, 2, broken=True)
  store.refresh()
  assert store.get("mnist").version == 1  # the broken newest does not replace it
  statuses = {s.version: s for s in store.status("mnist")}
  assert statuses[2].state == "END" and "not a SavedModel" in statuses[2].error_message
  _version(tmp_path, 3)
  store.refresh()
  assert store.get("mnist").version == 3 and statuses[1].state == "AVAILABLE"
  assert {s.version: s.state for s in store.status("mnist")}[1] == "END"


def test_pinned_versions_and_lookups(tmp_path):
  for v in (1, 2, 3):
    _version(tmp_path, v)
  store = ModelStore("mnist", str(tmp_path), versions=[1, 3], loader=_loader)
  store.refresh()
  assert store.get("mnist", 1).version == 1 and store.get("mnist").version == 3
  with pytest.raises(ServingError, match=r"Specific\(mnist, 2\)") as e:
    store.get("mnist", 2)
  assert e.value.code == "NOT_FOUND"
  with pytest.raises(ServingError, match="Latest\\(other\\)"):
    store.get("other")


def test_nothing_to_serve_yet(tmp_path):
  store = ModelStore("mnist", str(tmp_path / "none"), loader=_loader)
  store.refresh()
  with pytest.raises(ServingError) as e:
    store.get("mnist")
  assert e.value.code == "NOT_FOUND"
  (tmp_path / "none").mkdir()
  _version(tmp_path / "none", 5, broken=True)
  store.refresh()
  with pytest.raises(ServingError) as e:
    store.get("mnist")
  assert e.value.code == "UNAVAILABLE"  # a version exists but none loads


def test_a_failed_version_is_tried_again_once_its_files_change(tmp_path):
  _version(tmp_path, 1)
  _version(tmp_path, 2, broken=True)
  calls = []
  store = ModelStore("mnist", str(tmp_path),
                     loader=lambda path: calls.append(path) or _loader(path))
  store.refresh()
  assert store.get("mnist").version == 1
  store.refresh()
  store.refresh()
  assert calls.count(str(tmp_path / "2")) == 1  # unchanged: not tried again
  (tmp_path / "2" / "broken").unlink()  # repaired in place
  store.refresh()
  assert store.get("mnist").version == 2
  assert {s.version: s.state for s in store.status("mnist")}[2] == "AVAILABLE"
