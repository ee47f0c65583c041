"""Schema curation and the anomalies gate between validation and training.

SchemaGen alone infers types and shapes but never integer domains, so a label
of 12 would pass validation. `CuratedSchemaGen` infers the schema with TFDV
and then pins what we know about the data (from `features`): the image shape,
the pixel domain and the label domain. `AnomaliesGate` turns the anomalies
ExampleValidator found into a failed run that names them, so nothing
downstream (Transform, Trainer, Pusher) runs on bad data.
"""


import os
from typing import Dict, List

from tfx import v1 as tfx

from components import features

SCHEMA_FILE = "schema.pbtxt"
ANOMALIES_FILE = "SchemaDiff.pb"
STATS_FILE = "FeatureStats.pb"
TRAINING, SERVING = "TRAINING", "SERVING"  # the schema's environments


class DataAnomaliesError(RuntimeError):
  """ExampleValidator found anomalies: training on this data is refused."""


def curate(schema):  # -> schema_pb2.Schema
  """Pins shapes, domains and presence from `features` onto an inferred schema."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top

  image = tfdv.get_feature(schema, features.IMAGE_KEY)
  image.type = schema_pb2.INT
  image.shape.Clear()
  for size in features.IMAGE_SHAPE:
    image.shape.dim.add().size = size
  tfdv.set_domain(schema, features.IMAGE_KEY, schema_pb2.IntDomain(
      name=features.IMAGE_KEY, min=features.PIXEL_MIN, max=features.PIXEL_MAX))

  label = tfdv.get_feature(schema, features.LABEL_KEY)
  label.type = schema_pb2.INT
  label.shape.Clear()  # a scalar
  tfdv.set_domain(schema, features.LABEL_KEY, schema_pb2.IntDomain(
      name=features.LABEL_KEY, min=0, max=features.NUM_CLASSES - 1,
      is_categorical=True))
  for feature in (image, label):
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
  # The test split's records say their writer population (the Evaluator's
  # slices); the train split's do not, hence no presence bound.
  writer = _feature(schema, features.WRITER_KEY)
  writer.type = schema_pb2.BYTES
  writer.ClearField("shape")
  writer.value_count.min = writer.value_count.max = 1
  writer.presence.min_fraction = 0.0
  writer.presence.min_count = 0
  tfdv.set_domain(schema, features.WRITER_KEY, schema_pb2.StringDomain(
      name=features.WRITER_KEY, value=list(features.WRITERS)))
  # Served requests carry the image only: neither the label nor the writer
  # is expected there (what `mnist-tfx monitor` validates served inputs
  # against).
  del schema.default_environment[:]
  schema.default_environment.extend([TRAINING, SERVING])
  for feature in (label, writer):
    del feature.not_in_environment[:]
    feature.not_in_environment.append(SERVING)
  return schema


def _feature(schema, name: str):
  """The schema's feature `name`, added if the statistics lacked it."""
  for feature in schema.feature:
    if feature.name == name:
      return feature
  return schema.feature.add(name=name)


@tfx.dsl.components.component
def CuratedSchemaGen(  # pylint: disable=invalid-name
    statistics: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.Schema],
) -> None:
  """Infers a schema from the train split's statistics and curates it."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  stats = tfdv.load_stats_binary(os.path.join(
      statistics.uri, f"Split-{features.TRAIN_SPLIT}", STATS_FILE))
  inferred = tfdv.infer_schema(stats, infer_feature_shape=True)
  tfdv.write_schema_text(curate(inferred),
                         os.path.join(schema.uri, SCHEMA_FILE))


def describe_anomalies(anomalies_artifact_uri: str,
                       splits: List[str]) -> Dict[str, List[str]]:
  """{split: ["feature: short description (detail)", ...]} for splits with anomalies."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for split in splits:
    path = os.path.join(anomalies_artifact_uri, f"Split-{split}", ANOMALIES_FILE)
    anomalies = anomalies_pb2.Anomalies()
    with tf.io.gfile.GFile(path, "rb") as f:
      anomalies.ParseFromString(f.read())
    lines = [f"{name}: {info.short_description} ({info.description})"
             for name, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
      info = anomalies.dataset_anomaly_info
      lines.append(f"dataset: {info.short_description} ({info.description})")
    if lines:
      found[split] = lines
  return found


def check_anomalies(anomalies_artifact_uri: str, splits: List[str]) -> None:
  """Raises DataAnomaliesError listing every anomaly, if there is any."""
  found = describe_anomalies(anomalies_artifact_uri, splits)
  if found:
    report = "; ".join(f"[{split}] " + "; ".join(lines)
                       for split, lines in found.items())
    raise DataAnomaliesError(
        f"ExampleValidator found anomalies, so nothing is trained or pushed: "
        f"{report}. Details: {anomalies_artifact_uri}")


def label_distribution_anomalies(counts: Dict[str, List[int]],
                                 min_share: float,
                                 max_drift: float) -> List[str]:
  """What is wrong with the label distribution of each split, as sentences.

  `counts` is {split: records per class}. Every class must hold at least
  `min_share` of each split (a split of one digit trains a model that
  always answers that digit), and a class's share may differ between the
  train and eval splits by at most `max_drift` (TFDV's L-infinity distance):
  beyond it, evaluation does not measure what training learned.
  """
  found = []
  shares = {}
  for split, per_class in counts.items():
    per_class = [int(c) for c in per_class]
    total = sum(per_class)
    if not total:
      continue
    shares[split] = [c / total for c in per_class]
    rare = [f"{digit} ({share:.1%})" for digit, share in enumerate(shares[split])
            if share < min_share]
    if rare:
      found.append(f"[{split}] {features.LABEL_KEY}: classes below the minimum "
                   f"share of {min_share:.1%} of {total} records: "
                   f"{', '.join(rare)}")
  if features.TRAIN_SPLIT in shares and features.EVAL_SPLIT in shares:
    diffs = [abs(a - b) for a, b in zip(shares[features.TRAIN_SPLIT],
                                        shares[features.EVAL_SPLIT])]
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    if diffs[worst] > max_drift:
      found.append(
          f"[{features.TRAIN_SPLIT} vs {features.EVAL_SPLIT}] "
          f"{features.LABEL_KEY}: distributions differ by L-infinity "
          f"{diffs[worst]:.3f} > {max_drift} (class {worst}: "
          f"{shares[features.TRAIN_SPLIT][worst]:.1%} vs "
          f"{shares[features.EVAL_SPLIT][worst]:.1%})")
  return found


@tfx.dsl.components.component
def AnomaliesGate(  # pylint: disable=invalid-name
    anomalies: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies],
    examples: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.Examples],
    min_label_share: tfx.dsl.components.Parameter[float],
    max_label_drift: tfx.dsl.components.Parameter[float],
) -> None:
  """Fails the run on ExampleValidator's anomalies or a broken label distribution.

  The label counts are exact: IdxExampleGen counts them while checking the
  files (`idx_files` on the Examples artifact).
  """
  import json  # pylint: disable=g-import-not-at-top
  check_anomalies(anomalies.uri, json.loads(anomalies.split_names))
  files = _idx_files(examples)
  counts = {split: info["label_counts"] for split, info in files.items()
            if info.get("label_counts")}
  found = label_distribution_anomalies(counts, min_label_share, max_label_drift)
  if found:
    raise DataAnomaliesError(
        "the label distribution is broken, so nothing is trained or pushed: "
        + "; ".join(found))


def _idx_files(examples) -> Dict[str, Dict]:
  value = examples.get_json_value_custom_property("idx_files")
  return dict(value) if value else {}
