"""The server's metrics, exposed at TF Serving's `/monitoring/prometheus/metrics`.

Names are TF Serving's (and TensorFlow's, for SavedModel loads) where TF
Serving has the metric, with its labels and units (latencies in
microseconds, its exponential buckets); the rest start with
`mnist_tfx_serving_`. TF Serving's exporter writes its counters without the
`_total` suffix that prometheus-client adds to a typed counter, so counters
are handed to prometheus-client untyped under TF Serving's exact names:
dashboards and alerts written for TF Serving read them unchanged.

Recording costs a lock and a dict update (no prometheus-client object per
request); prometheus-client builds the text only when scraped.
"""

import bisect
import collections
import threading
import time
from typing import Deque, Dict, Iterable, List, Optional, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

PATH = "/monitoring/prometheus/metrics"  # TF Serving's
RECENT_STEP = 10  # seconds per step of `Metrics.recent` (the page's traffic)
RECENT_STEPS = 60  # ten minutes of them
CONTENT_TYPE = CONTENT_TYPE_LATEST
# TF Serving's Buckets::Exponential(10, 1.8, 33), in microseconds (~20 min).
LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(32))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

# name -> (help, label names): TF Serving's and TensorFlow's.
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS = ":tensorflow:serving:model_warmup_records_read"
REQUEST_LOG_COUNT = ":tensorflow:serving:request_log_count"
# Ours.
BATCH_SIZE = "mnist_tfx_serving_batch_size"
VERSION_STATE = "mnist_tfx_serving_model_version_available"
LABELS = "mnist_tfx_serving_model_version_label"
UNLOADS = "mnist_tfx_serving_model_unload_count"
CONFIG_RELOADS = "mnist_tfx_serving_model_config_reload_count"
REQUEST_LOG_ERRORS = "mnist_tfx_serving_request_log_error_count"

_COUNTERS = {
    REQUEST_COUNT: ("The total number of requests.", ("model_name", "status")),
    LOAD_ATTEMPTS: ("The number of times a SavedModel was loaded, by outcome.",
                    ("model_path", "status")),
    LOAD_LATENCY: ("Latency in microseconds for SavedModels that were "
                   "successfully loaded (a running total).", ("model_path",)),
    WARMUP_RECORDS: ("Total number of warmup records read during model warmup.",
                     ("model_path", "status")),
    REQUEST_LOG_COUNT: ("The total number of requests logged from the model "
                        "server sliced down by model_name and status code.",
                        ("model_name", "status_code")),
    UNLOADS: ("Versions taken out of service (a newer one replaced them, or "
              "the config dropped them).", ("model_name",)),
    CONFIG_RELOADS: ("Model config file reads, by outcome (a refused file "
                     "leaves the previous config serving).", ("status",)),
    REQUEST_LOG_ERRORS: ("Sampled requests the request log could not keep "
                         "(disk full, unwritable dir, queue full), by reason.",
                         ("reason",)),
}
_HISTOGRAMS = {
    REQUEST_LATENCY: ("Distribution of wall time (in microseconds) for "
                      "Tensorflow Serving request.", ("model_name", "API", "entrypoint"),
                      LATENCY_BUCKETS_US),
    WARMUP_LATENCY: ("Distribution of wall time (in microseconds) for warming "
                     "up the model.", ("model_path", "status"), LATENCY_BUCKETS_US),
    BATCH_SIZE: ("Rows per model call of the batcher (greedy or timed).",
                 ("batcher",), BATCH_BUCKETS),
}


class _Histogram:
  __slots__ = ("bounds", "counts", "total")

  def __init__(self, bounds):
    self.bounds = bounds
    self.counts = [0] * (len(bounds) + 1)
    self.total = 0.0

  def observe(self, value: float) -> None:
    self.counts[bisect.bisect_left(self.bounds, value)] += 1
    self.total += value

  def buckets(self) -> List[Tuple[str, float]]:
    found, running = [], 0
    for bound, count in zip(list(self.bounds) + [float("inf")], self.counts):
      running += count
      found.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
    return found


class Metrics:
  """Counters and histograms of one server; `text()` is the scrape."""

  def __init__(self):
    self._lock = threading.Lock()  # REST, gRPC, the poller and the log writer record
    self._counters: Dict[str, Dict[Tuple, float]] = {
        n: collections.defaultdict(float) for n in _COUNTERS}
    self._histograms: Dict[str, Dict[Tuple, _Histogram]] = {n: {} for n in _HISTOGRAMS}
    self._versions: Dict[str, Dict[int, str]] = {}  # model -> version -> state
    self._labels: Dict[str, Dict[str, int]] = {}
    # The last minutes of traffic, one entry per RECENT_STEP seconds:
    # [start, requests, errors, latency sum of the successful (us)].
    self._recent: Deque[List[float]] = collections.deque(maxlen=RECENT_STEPS)
    self._registry = CollectorRegistry(auto_describe=False)
    self._registry.register(self)

  # --- recording -------------------------------------------------------------

  def count(self, name: str, labels: Tuple, by: float = 1) -> None:
    with self._lock:
      self._counters[name][labels] += by

  def _histogram(self, name: str, labels: Tuple) -> _Histogram:
    """`name`'s histogram for `labels`, made on first use (hold the lock)."""
    histogram = self._histograms[name].get(labels)
    if histogram is None:
      histogram = self._histograms[name][labels] = _Histogram(_HISTOGRAMS[name][2])
    return histogram

  def observe(self, name: str, labels: Tuple, value: float) -> None:
    with self._lock:
      self._histogram(name, labels).observe(value)

  def request(self, model: str, api: str, entrypoint: str, status: str,
              started: float) -> None:
    """One answered request; like TF Serving, latency of successful ones only."""
    micros = (time.perf_counter() - started) * 1e6
    step = time.time() // RECENT_STEP * RECENT_STEP
    with self._lock:
      self._counters[REQUEST_COUNT][(model, status)] += 1
      if status == "OK":
        self._histogram(REQUEST_LATENCY, (model, api, entrypoint)).observe(micros)
      if not self._recent or self._recent[-1][0] != step:
        self._recent.append([step, 0, 0, 0.0])
      entry = self._recent[-1]
      entry[1] += 1
      if status == "OK":
        entry[3] += micros
      else:
        entry[2] += 1

  def recent(self, now: Optional[float] = None) -> List[Dict[str, float]]:
    """Requests, errors and mean latency (ms) per RECENT_STEP seconds over
    the last RECENT_STEPS steps, oldest first; steps without requests are 0."""
    now = time.time() if now is None else now
    last = now // RECENT_STEP * RECENT_STEP
    with self._lock:
      by_step = {e[0]: list(e) for e in self._recent}
    out = []
    for i in range(RECENT_STEPS - 1, -1, -1):
      start = last - i * RECENT_STEP
      _, requests, errors, micros = by_step.get(start, (start, 0, 0, 0.0))
      ok = requests - errors
      out.append({"start": start, "requests": int(requests), "errors": int(errors),
                  "rate": requests / RECENT_STEP,
                  "latency_ms": round(micros / ok / 1000, 3) if ok else None})
    return out

  def batch_recorder(self, batcher: str):
    """A batcher's `on_batch(rows)` hook."""
    key = (batcher,)
    return lambda rows: self.observe(BATCH_SIZE, key, rows)

  def set_versions(self, model: str, states: Dict[int, str]) -> None:
    with self._lock:
      self._versions[model] = dict(states)

  def set_labels(self, model: str, labels: Dict[str, int]) -> None:
    with self._lock:
      self._labels[model] = dict(labels)

  # --- the scrape ------------------------------------------------------------

  def collect(self) -> Iterable[Metric]:
    """prometheus-client's collector interface."""
    with self._lock:
      counters = {n: dict(v) for n, v in self._counters.items()}
      histograms = {n: {k: (h.buckets(), h.total) for k, h in v.items()}
                    for n, v in self._histograms.items()}
      versions = {m: dict(v) for m, v in self._versions.items()}
      labels = {m: dict(v) for m, v in self._labels.items()}
    for name, (doc, label_names) in _COUNTERS.items():
      metric = Metric(name, doc, "unknown")  # TF Serving's exact name (module doc)
      for values, value in sorted(counters[name].items()):
        metric.add_sample(name, dict(zip(label_names, values)), value)
      yield metric
    for name, (doc, label_names, _) in _HISTOGRAMS.items():
      family = HistogramMetricFamily(name, doc, labels=label_names)
      for values, (buckets, total) in sorted(histograms[name].items()):
        family.add_metric(list(values), buckets, sum_value=total)
      yield family
    state = GaugeMetricFamily(VERSION_STATE, "1 for each version that answers "
                              "requests, 0 for one loading or ended.",
                              labels=["model_name", "version", "state"])
    for model, states in sorted(versions.items()):
      for version, value in sorted(states.items()):
        state.add_metric([model, str(version), value], float(value == "AVAILABLE"))
    yield state
    label = GaugeMetricFamily(LABELS, "The version each label points at "
                              "(from --model-config-file).",
                              labels=["model_name", "label"])
    for model, found in sorted(labels.items()):
      for name, version in sorted(found.items()):
        label.add_metric([model, name], float(version))
    yield label

  def text(self) -> bytes:
    return generate_latest(self._registry)


def parse(text: str) -> Dict[Tuple[str, Tuple], float]:
  """A scrape's samples as {(name, sorted label items): value} (tools, tests)."""
  from prometheus_client.parser import text_string_to_metric_families  # pylint: disable=g-import-not-at-top
  found = {}
  for family in text_string_to_metric_families(text):
    for sample in family.samples:
      found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
  return found


def value(samples: Dict, name: str, **labels) -> Optional[float]:
  """The sum of `name`'s samples whose labels include `labels`."""
  wanted = set(labels.items())
  hits = [v for (n, items), v in samples.items()
          if n == name and wanted <= set(items)]
  return sum(hits) if hits else None
