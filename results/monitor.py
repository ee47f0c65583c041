"""`mnist-tfx monitor`: do the served requests still look like the training data?

Reads PredictionLog TFRecords (the server's `--request-log`, or TF
Serving's own), takes the served images and the predicted classes, and
compares them with the training run's data:

- TFDV statistics of the served images, validated against the run's schema
  in its SERVING environment (where `label` is not expected), and TFDV's
  skew comparator: the Jensen-Shannon divergence of the pixel values
  against the train split's statistics;
- the predicted-class shares against the train split's label shares
  (L-infinity distance, the measure TFDV's comparator uses for classes);
- the served version's age (its push time) against `max_age_days`.

Each anomaly is one line; the report (HTML, with the served inputs' mean
image beside the training one) goes into the output dir, the result into ML
Metadata (an execution of type `mnist_tfx.Monitor` with the report as its
output). `run()` returns the anomalies: the CLI exits 1 when there is one.
"""

import collections
import dataclasses
import html
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

from components import features
from mnist_tfx import defaults

MONITOR_DIR = "monitor"  # in the output dir
EXECUTION_TYPE = "mnist_tfx.Monitor"
ARTIFACT_TYPE = "mnist_tfx.MonitorReport"
TRAIN_SAMPLE = 2000  # train examples read for the mean training image


class MonitorError(Exception):
  """Nothing to compare (no log, no requests, no training run): says why."""


@dataclasses.dataclass
class Served:
  images: np.ndarray  # [N, 784] int64 pixels
  classes: np.ndarray  # [N] predicted digits
  versions: Dict[int, int]  # version -> requests
  files: int
  records: int
  skipped: Dict[str, int]  # why records were not used -> how many


def log_paths(paths: List[str]) -> List[str]:
  """Files given, and the TFRecord files in directories given."""
  from serving import request_log  # pylint: disable=g-import-not-at-top
  found = []
  for path in paths:
    if os.path.isdir(path):
      files = request_log.log_files(path) or sorted(
          os.path.join(path, n) for n in os.listdir(path)
          if n.endswith((".tfrecord", ".tfrecords")))
      found.extend(files)
    elif os.path.exists(path):
      found.append(path)
    else:
      raise MonitorError(f"{path}: no such file or directory")
  return found


def _images(request) -> Optional[np.ndarray]:
  """A PredictRequest's images as [N, 784] integers, or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from serving import grpc_server  # pylint: disable=g-import-not-at-top
  if features.IMAGES_INPUT in request.inputs:
    array = grpc_server.to_array(request.inputs[features.IMAGES_INPUT],
                                 features.IMAGES_INPUT, defaults.MAX_TENSOR_ELEMENTS)
    return np.rint(array.reshape(len(array), -1)).astype(np.int64)
  if features.EXAMPLES_INPUT in request.inputs:
    raw = tf.make_ndarray(request.inputs[features.EXAMPLES_INPUT])
    rows = [tf.train.Example.FromString(r).features.feature[
        features.IMAGE_KEY].int64_list.value for r in raw.reshape(-1)]
    return np.array(rows, dtype=np.int64)
  return None


def read_served(paths: List[str]) -> Served:
  """Every usable predict record of the log files."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from serving import request_log  # pylint: disable=g-import-not-at-top
  files = log_paths(paths)
  if not files:
    raise MonitorError(f"no PredictionLog files in {', '.join(paths)}")
  images, classes, versions = [], [], collections.Counter()
  skipped, records = collections.Counter(), 0
  for _, log in request_log.read(files):
    records += 1
    if log.WhichOneof("log_type") != "predict_log":
      skipped[f"{log.WhichOneof('log_type') or 'empty'} log"] += 1
      continue
    request, response = log.predict_log.request, log.predict_log.response
    try:
      found = _images(request)
    except Exception:  # pylint: disable=broad-except
      found = None
    probabilities = response.outputs.get(features.PROBABILITIES_KEY)
    if (found is None or found.shape[1:] != (features.IMAGE_SIZE,)
        or probabilities is None):
      skipped["not an MNIST predict request and response"] += 1
      continue
    predicted = tf.make_ndarray(probabilities).argmax(axis=-1).reshape(-1)
    if len(predicted) != len(found):
      skipped["response rows differ from request rows"] += 1
      continue
    images.append(found)
    classes.append(predicted)
    versions[request.model_spec.version.value] += len(found)
  if not images:
    raise MonitorError(f"no predict requests in {len(files)} file(s) ({records} "
                       "records): nothing to compare" + (
                           f"; skipped: {dict(skipped)}" if skipped else ""))
  return Served(np.concatenate(images), np.concatenate(classes), dict(versions),
                len(files), records, dict(skipped))


@dataclasses.dataclass
class Reference:
  """The training run's data, as ML Metadata finds it."""
  statistics_path: str
  schema_path: str
  label_shares: List[float]
  mean_image: np.ndarray
  examples_uri: str


def reference(store) -> Reference:
  """The newest run's train statistics, schema, label shares and mean image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components import data_validation  # pylint: disable=g-import-not-at-top

  def newest(type_name, keep=lambda a: True):
    found = [a for a in store.get_artifacts_by_type(type_name) if keep(a)]
    live = [a for a in found if a.state == a.LIVE] or found
    return max(live, key=lambda a: a.id) if live else None

  stats, schema = newest("ExampleStatistics"), newest("Schema")
  # ExampleGen's examples (they carry the label counts), not a hold-out's.
  examples = newest("Examples", lambda a: "idx_files" in a.custom_properties)
  if stats is None or schema is None or examples is None:
    raise MonitorError("no training run in this ML Metadata store (statistics, "
                       "schema and examples are needed): run the pipeline first")
  counts = (_json_property(store, examples, "idx_files") or {}).get(
      features.TRAIN_SPLIT, {}).get("label_counts")
  if not counts:
    raise MonitorError(f"the examples artifact {examples.uri} has no label counts")
  total = sum(counts)
  files = sorted(tf.io.gfile.glob(os.path.join(
      examples.uri, f"Split-{features.TRAIN_SPLIT}", "*")))
  sample = tf.data.TFRecordDataset(files, compression_type="GZIP").take(TRAIN_SAMPLE)
  pixels = np.array([tf.train.Example.FromString(r).features.feature[
      features.IMAGE_KEY].int64_list.value for r in sample.as_numpy_iterator()],
                    dtype=np.float64)
  return Reference(
      os.path.join(stats.uri, f"Split-{features.TRAIN_SPLIT}",
                   data_validation.STATS_FILE),
      os.path.join(schema.uri, data_validation.SCHEMA_FILE),
      [c / total for c in counts], pixels.mean(axis=0), examples.uri)


def _json_property(store, artifact, name: str) -> Any:
  """A JSON custom property as TFX wrote it (via TFX's own artifact class)."""
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  artifact_type, = store.get_artifact_types_by_id([artifact.type_id])
  value = artifact_utils.deserialize_artifact(artifact_type, artifact) \
      .get_json_value_custom_property(name)
  return json.loads(json.dumps(value)) if value is not None else None


def served_statistics(served: Served):
  """TFDV statistics of the served images (as StatisticsGen computes them)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  from tensorflow_data_validation.statistics import stats_impl  # pylint: disable=g-import-not-at-top
  images = pa.array(list(served.images), type=pa.list_(pa.int64()))
  batch = pa.RecordBatch.from_arrays([images], [features.IMAGE_KEY])
  return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def anomalies(served: Served, ref: Reference, statistics,
              pixel_jsd: float = defaults.MONITOR_PIXEL_JSD,
              class_linf: float = defaults.MONITOR_CLASS_LINF,
              min_requests: int = defaults.MONITOR_MIN_REQUESTS) -> List[str]:
  """One line per anomaly of the served data against the training data."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  found = []
  schema = tfdv.load_schema_text(ref.schema_path)
  result = tfdv.validate_statistics(statistics, schema,
                                    environment=_serving_environment(schema))
  for name, info in sorted(result.anomaly_info.items()):
    found.append(f"{name}: {info.short_description} ({info.description})")
  tfdv.get_feature(schema, features.IMAGE_KEY).skew_comparator \
      .jensen_shannon_divergence.threshold = pixel_jsd
  training = tfdv.load_stats_binary(ref.statistics_path)
  skew = tfdv.validate_statistics(training, schema, serving_statistics=statistics,
                                  environment=_serving_environment(schema))
  for name, info in sorted(skew.anomaly_info.items()):
    for reason in info.reason:
      if "SKEW" in str(reason.type) or "skew" in reason.short_description.lower() or \
          "divergence" in reason.description.lower():
        found.append(f"{name}: served pixel values differ from the training "
                     f"data's ({reason.description})")
  shares, diffs, worst = class_distance(served, ref)
  if len(served.classes) < min_requests:
    found.append(f"requests: only {len(served.classes)} served images logged, "
                 f"fewer than {min_requests}: too few to compare (log more, or "
                 "raise --request-log-sampling)")
  elif diffs[worst] > class_linf:
    found.append(f"predicted classes: their shares differ from the training "
                 f"labels' by L-infinity {diffs[worst]:.3f} > {class_linf} (digit "
                 f"{worst}: {shares[worst]:.1%} served vs {ref.label_shares[worst]:.1%} "
                 "in training)")
  return found


def class_distance(served: Served, ref: Reference):
  """(served class shares, |served - training| per class, the worst class)."""
  shares = np.bincount(served.classes, minlength=features.NUM_CLASSES) / len(served.classes)
  diffs = np.abs(shares - np.array(ref.label_shares))
  return shares, diffs, int(diffs.argmax())


def _serving_environment(schema) -> Optional[str]:
  from components.data_validation import SERVING  # pylint: disable=g-import-not-at-top
  return SERVING if SERVING in schema.default_environment else None


def version_age(serving_dir: str, version: int) -> Optional[float]:
  """Days since `version` was pushed (its push record, else its number)."""
  from components import pusher  # pylint: disable=g-import-not-at-top
  record = pusher.push_record(os.path.join(serving_dir, str(version)))
  pushed = record.get("pushed_at")
  if not isinstance(pushed, (int, float)):
    if not os.path.isdir(os.path.join(serving_dir, str(version))):
      return None
    pushed = version if 1e9 < version < 1e11 else None  # versions are push times
  return None if pushed is None else (time.time() - pushed) / 86400


def mean_picture(served: Served, ref: Reference, path: str) -> str:
  """The served inputs' mean image beside the training one, as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(1, 2, figsize=(5, 2.8))
  for ax, image, title in ((axes[0], ref.mean_image, "training (mean)"),
                           (axes[1], served.images.mean(axis=0), "served (mean)")):
    ax.imshow(image.reshape(features.IMAGE_SHAPE), cmap="gray_r", vmin=0, vmax=255)
    ax.set_title(title)
    ax.axis("off")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def write_report(directory: str, served: Served, ref: Reference,
                 found: List[str], lines: List[str]) -> str:
  """monitor.html (and its picture) in `directory`."""
  os.makedirs(directory, exist_ok=True)
  mean_picture(served, ref, os.path.join(directory, "mean_image.png"))
  shares = np.bincount(served.classes, minlength=features.NUM_CLASSES) / len(served.classes)
  rows = "".join(f"<tr><td>{d}</td><td>{shares[d]:.1%}</td><td>"
                 f"{ref.label_shares[d]:.1%}</td></tr>" for d in range(features.NUM_CLASSES))
  items = "".join(f"<li>{html.escape(a)}</li>" for a in found) or "<li>none</li>"
  page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>mnist-tfx monitor</title><style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:2px 8px}}</style></head><body>
<h1>Served data vs training data</h1>
<p>{html.escape(' '.join(lines))}</p>
<h2>Anomalies</h2><ul>{items}</ul>
<h2>Mean image</h2><img src="mean_image.png" alt="mean served image beside the mean training image">
<h2>Predicted classes vs training labels</h2>
<table><tr><th>digit</th><th>served</th><th>training</th></tr>{rows}</table>
</body></html>"""
  path = os.path.join(directory, "monitor.html")
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path


def record(store, report_path: str, served: Served, found: List[str]) -> int:
  """The check as an ML Metadata execution with its report as output."""
  from ml_metadata.proto import metadata_store_pb2 as mlmd  # pylint: disable=g-import-not-at-top
  execution_type = store.put_execution_type(mlmd.ExecutionType(name=EXECUTION_TYPE))
  artifact_type = store.put_artifact_type(mlmd.ArtifactType(name=ARTIFACT_TYPE))
  artifact = mlmd.Artifact(type_id=artifact_type, uri=os.path.dirname(report_path),
                           state=mlmd.Artifact.LIVE)
  execution = mlmd.Execution(type_id=execution_type,
                             last_known_state=mlmd.Execution.COMPLETE)
  for target in (artifact, execution):
    target.custom_properties["anomalies"].int_value = len(found)
    target.custom_properties["requests"].int_value = len(served.classes)
    target.custom_properties["versions"].string_value = json.dumps(served.versions)
  execution.custom_properties["drifted"].int_value = int(bool(found))
  execution.custom_properties["findings"].string_value = json.dumps(found)
  event = mlmd.Event(type=mlmd.Event.OUTPUT)
  execution_id, _, _ = store.put_execution(execution, [(artifact, event)], [])
  return execution_id


def run(paths: List[str], store, output_dir: str, serving_dir: str,
        max_age_days: float, **bounds: Any) -> Dict[str, Any]:
  """The whole check; what the CLI prints."""
  served = read_served(paths)
  ref = reference(store)
  found = anomalies(served, ref, served_statistics(served), **bounds)
  newest = max(served.versions)
  age = version_age(serving_dir, newest)
  if age is not None and age > max_age_days:
    found.append(f"staleness: version {newest} was pushed {age:.1f} days ago, "
                 f"more than --max-age-days {max_age_days:g}")
  lines = [f"{len(served.classes)} served images in {served.records} records of "
           f"{served.files} file(s), versions "
           + ", ".join(f"{v} ({n})" for v, n in sorted(served.versions.items())) + ";",
           f"version {newest} is " + (f"{age:.1f} days old" if age is not None
                                      else "of unknown age") + "."]
  _, diffs, worst = class_distance(served, ref)
  lines.append(f"Predicted classes vs training labels: L-infinity {diffs[worst]:.3f} "
               f"(digit {worst}).")
  if served.skipped:
    lines.append("Skipped: " + ", ".join(f"{n} {why}" for why, n in served.skipped.items())
                 + ".")
  directory = os.path.join(output_dir, MONITOR_DIR,
                           time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
  while os.path.exists(directory):  # two checks in one second
    directory += "+"
  report = write_report(directory, served, ref, found, lines)
  execution_id = record(store, report, served, found)
  return {"anomalies": found, "summary": " ".join(lines), "report": report,
          "execution_id": execution_id, "requests": int(len(served.classes)),
          "versions": served.versions, "age_days": age}
