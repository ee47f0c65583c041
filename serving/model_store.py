"""Versions of one model under a TF Serving base path, loaded and hot-swapped.

Like TF Serving's file-system source: numeric sub-directories holding a
`saved_model.pb` are versions (our Pusher renames complete versions into
place; a stock Pusher writes `saved_model.pb` last). By default the latest
version is served; a list of versions can be pinned. A poller loads new
versions in the background and swaps the serving set in one assignment, so a
request in flight keeps the version it started with and none is dropped. A
version that fails to load is reported with its error and the versions
already serving stay; it is tried again once its files change (a version
re-pushed or repaired in place), not only at the next start.

A version is warmed before it is AVAILABLE: the requests in its
`assets.extra/tf_serving_warmup_requests` (TF Serving's file) are replayed
first, so its first client is not the one that pays for the cold start.
Version labels (`stable`, `canary`) name served versions, as in TF Serving's
model config; a label may only point at an AVAILABLE version.
"""

import dataclasses
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from components.model_layout import versions
from serving import metrics as metrics_lib

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
  """TF Serving's model_version_policy: latest N, all, or specific versions."""
  kind: str = "latest"  # latest | all | specific
  num_versions: int = 1
  versions: Tuple[int, ...] = ()

  def wanted(self, loadable: List[int]) -> List[int]:
    if self.kind == "specific":
      return [v for v in sorted(self.versions) if v in loadable]
    if self.kind == "all":
      return sorted(loadable)
    return sorted(loadable)[-self.num_versions:]

  def keep(self, serving: List[int]) -> List[int]:
    """Of the loaded versions, those this policy serves."""
    if self.kind == "latest":
      return sorted(serving)[-self.num_versions:]
    return serving

class ServingError(Exception):
  """An error with a TF Serving (gRPC) status code, e.g. NOT_FOUND."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


@dataclasses.dataclass
class Servable:
  version: int
  path: str
  model: Any  # the loaded SavedModel
  signatures: Dict[str, Any]


@dataclasses.dataclass
class VersionStatus:
  version: int
  state: str  # LOADING, AVAILABLE, END (TF Serving's ModelVersionStatus.State)
  error_code: str = "OK"
  error_message: str = ""


def files_stamp(path: str) -> Tuple:
  """What a version's files are now (names, sizes, modification times): a
  change tells a failed version to be tried again."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = []
  for root, _, names in tf.io.gfile.walk(path):
    for name in names:
      file_path = os.path.join(root, name)
      try:
        stat = tf.io.gfile.stat(file_path)
        found.append((file_path, stat.length, stat.mtime_nsec))
      except Exception:  # pylint: disable=broad-except
        found.append((file_path, None, None))  # vanished meanwhile
  return tuple(sorted(found))


def _load(path: str) -> Any:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.saved_model.load(path)


class ModelStore:
  """The serving set of one model name, refreshed from its base path."""

  def __init__(self, name: str, base_path: str,
               versions: Optional[List[int]] = None, poll_seconds: float = 1.0,
               loader: Callable[[str], Any] = _load,
               warmup: Optional[Callable[[Any, str], int]] = None,
               metrics=None, policy: Optional[VersionPolicy] = None,
               labels: Optional[Dict[str, int]] = None):
    self.name = name
    self.base_path = base_path
    self.policy = policy or (VersionPolicy("specific", versions=tuple(sorted(set(
        versions)))) if versions else VersionPolicy())
    self.labels: Dict[str, int] = dict(labels or {})  # replaced, never mutated
    self._poll_seconds = poll_seconds
    self._loader = loader
    self._warmup = warmup  # (model, path) -> records replayed
    self.metrics = metrics
    self._serving: Dict[int, Servable] = {}  # replaced, never mutated
    self._status: Dict[int, VersionStatus] = {}
    # version -> (its error, its files then): retried when the files change
    self._failed: Dict[int, Tuple[str, Tuple]] = {}
    self._hold: set = set()  # versions kept through a config change
    self._lock = threading.Lock()  # one refresh at a time
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # --- loading ---------------------------------------------------------------

  def _retry_changed(self, present: Dict[int, str]) -> None:
    """Forgets the failure of a version whose files changed since."""
    for version in [v for v in self._failed if v in present]:
      if files_stamp(present[version]) != self._failed[version][1]:
        del self._failed[version]
        _LOG.info("version %d of %s changed on disk: loading it again",
                  version, self.name)

  def _wanted(self, present: Dict[int, str]) -> List[int]:
    return self.policy.wanted([v for v in present if v not in self._failed])

  def _load_one(self, version: int, path: str) -> Servable:
    """Loads and warms one version; counts both in the metrics."""
    started = time.perf_counter()
    try:
      model = self._loader(path)
    except Exception:
      self._count(metrics_lib.LOAD_ATTEMPTS, (path, "fail"))
      raise
    self._count(metrics_lib.LOAD_ATTEMPTS, (path, "success"))
    self._count(metrics_lib.LOAD_LATENCY, (path,),
                (time.perf_counter() - started) * 1e6)
    if self._warmup is not None:
      started = time.perf_counter()
      try:
        records = self._warmup(model, path)
      except Exception:
        self._observe_warmup(path, "fail", started)
        raise
      if records:
        self._observe_warmup(path, "OK", started)
        self._count(metrics_lib.WARMUP_RECORDS, (path, "OK"),
                    records)
    return Servable(version, path, model, dict(model.signatures))

  def _count(self, name, labels, by=1) -> None:
    if self.metrics is not None:
      self.metrics.count(name, labels, by)

  def _observe_warmup(self, path: str, status: str, started: float) -> None:
    if self.metrics is not None:
      self.metrics.observe(metrics_lib.WARMUP_LATENCY,
                           (path, status), (time.perf_counter() - started) * 1e6)

  def refresh(self) -> None:
    """Loads wanted versions that are new; swaps the serving set if it changed.

    Latest policy: serve the newest version on disk that loads; if the
    newest fails, the one before it is tried, and a version already serving
    stays until a newer one has loaded. A failed version is tried again
    only once its files have changed.
    """
    with self._lock:
      present = versions(self.base_path)
      self._retry_changed(present)
      serving = {v: s for v, s in self._serving.items() if v in present}
      # A failed load marks the version failed, so _wanted moves on to the
      # one before it: the loop ends when everything wanted is loaded.
      while True:
        new = [v for v in self._wanted(present) if v not in serving]
        if not new:
          break
        version = new[0]
        self._status[version] = VersionStatus(version, "LOADING")
        try:
          serving[version] = self._load_one(version, present[version])
          self._status[version] = VersionStatus(version, "AVAILABLE")
        except Exception as e:  # pylint: disable=broad-except
          self._failed[version] = (str(e), files_stamp(present[version]))
          self._status[version] = VersionStatus(
              version, "END", "UNKNOWN", f"failed to load: {e}")
      kept = set(self.policy.keep(list(serving))) | (self._hold & set(serving))
      serving = {v: s for v, s in serving.items() if v in kept}
      for version in set(self._serving) - set(serving):
        self._status[version] = VersionStatus(version, "END")
        self._count(metrics_lib.UNLOADS, (self.name,))
      self._serving = serving  # the swap: one reference assignment
      if self.metrics is not None:
        self.metrics.set_versions(self.name, {v: s.state for v, s in self._status.items()})

  def configure(self, policy: VersionPolicy, labels: Dict[str, int]) -> None:
    """Applies a new version policy and labels, or raises ServingError.

    The policy's versions are loaded first; then every label must point at
    a version that is AVAILABLE (TF Serving's rule), else the previous
    policy and labels stay and nothing changes for clients.
    """
    with self._lock:
      previous = self.policy
      self.policy = policy
      # What serves now stays until the labels have moved: a request for a
      # label never finds its version gone in between.
      self._hold = set(self._serving)
    try:
      self.refresh()
      # What the new policy serves once the versions held are let go.
      served = set(policy.keep(policy.wanted(list(self._serving))))
      missing = {l: v for l, v in labels.items() if v not in served}
      if missing:
        label, version = sorted(missing.items())[0]
        raise ServingError("FAILED_PRECONDITION", f"Request to assign label to "
                           f"version {version} of model {self.name}, which is not "
                           f"currently available for inference (label {label!r})")
      self.labels = dict(labels)
    except Exception:
      with self._lock:
        self.policy = previous
      raise
    finally:
      with self._lock:
        self._hold = set()
      self.refresh()
    if self.metrics is not None:
      self.metrics.set_labels(self.name, self.labels)

  def start(self) -> "ModelStore":
    self.refresh()
    self._thread = threading.Thread(target=self._poll, name="model-poller",
                                    daemon=True)
    self._thread.start()
    return self

  def _poll(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      try:
        self.refresh()
      except Exception:  # pylint: disable=broad-except
        # Keep serving what is loaded; say why the base path could not be read.
        logging.getLogger(__name__).warning(
            "refreshing %s from %s failed", self.name, self.base_path, exc_info=True)

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=10)

  # --- lookups ---------------------------------------------------------------

  def version_of(self, label: str) -> int:
    """The version a label points at (TF Serving's error if none)."""
    version = self.labels.get(label)
    if version is None:
      raise ServingError("INVALID_ARGUMENT",
                         f"Unrecognized servable version label: {label}")
    return version

  def get(self, name: str, version: Optional[int] = None,
          label: Optional[str] = None) -> Servable:
    if label is not None and name == self.name:
      version = self.version_of(label)
    if name != self.name:
      raise ServingError("NOT_FOUND", f"Servable not found for request: "
                         f"Latest({name})" if version is None else
                         f"Servable not found for request: Specific({name}, {version})")
    serving = self._serving  # one read: consistent for this request
    if version is None:
      if not serving:
        raise ServingError("UNAVAILABLE" if self._status else "NOT_FOUND",
                           f"No versions of servable {name} found under base "
                           f"path {self.base_path}")
      return serving[max(serving)]
    if version not in serving:
      raise ServingError("NOT_FOUND", "Servable not found for request: "
                         f"Specific({name}, {version})")
    return serving[version]

  def ready(self) -> bool:
    """A version loaded and warmed: what readiness probes ask."""
    return bool(self._serving)

  def status(self, name: str, version: Optional[int] = None,
             label: Optional[str] = None) -> List[VersionStatus]:
    if label is not None and name == self.name:
      version = self.version_of(label)
    if name != self.name:
      raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    statuses = dict(self._status)
    if version is not None:
      if version not in statuses:
        raise ServingError("NOT_FOUND", f"Could not find version {version} "
                           f"of model {name}")
      return [statuses[version]]
    if not statuses:
      raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    return [statuses[v] for v in sorted(statuses, reverse=True)]


def wait_for(store: ModelStore, version: int, timeout: float = 60.0) -> None:
  """Blocks until `version` is served (for tools and tests)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      store.get(store.name, version)
      return
    except ServingError:
      time.sleep(0.05)
  raise TimeoutError(f"version {version} of {store.name} not served in {timeout}s")
