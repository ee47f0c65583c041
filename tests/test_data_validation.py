"""The curated schema catches what inference alone would not; the gate stops the run."""

import json

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from tfx import v1 as tfx

from components import data_validation, features
from tests import tiny_mnist


def _stats(labels, pixels_max=255, writers=None):
  images = tiny_mnist.make_images(np.asarray(labels) % 10)
  images = np.minimum(images, pixels_max)
  import pandas as pd
  columns = {features.IMAGE_KEY: [i.reshape(-1) for i in images],
             features.LABEL_KEY: list(labels)}
  if writers is not None:
    columns[features.WRITER_KEY] = [np.array([w], dtype=object) for w in writers]
  return tfdv.generate_statistics_from_dataframe(pd.DataFrame(columns))


def _schema():
  stats = _stats(np.arange(50) % 10)
  return data_validation.curate(tfdv.infer_schema(stats, infer_feature_shape=True))


def test_curated_schema_has_shapes_and_domains():
  schema = _schema()
  image = tfdv.get_feature(schema, features.IMAGE_KEY)
  label = tfdv.get_feature(schema, features.LABEL_KEY)
  assert [d.size for d in image.shape.dim] == [28, 28]
  assert (image.int_domain.min, image.int_domain.max) == (0, 255)
  assert (label.int_domain.min, label.int_domain.max) == (0, 9)
  assert label.int_domain.is_categorical
  assert not label.shape.dim


def test_valid_data_has_no_anomalies():
  anomalies = tfdv.validate_statistics(_stats(np.arange(40) % 10), _schema())
  assert not anomalies.anomaly_info


def test_the_test_split_s_writers_are_in_the_schema_and_checked():
  """Inferred from the train split (no writer), the schema still expects
  the test split's writer feature, with its two values only."""
  schema = _schema()
  writer = tfdv.get_feature(schema, features.WRITER_KEY)
  assert list(writer.string_domain.value) == ["SD-3", "SD-1"]
  assert list(writer.not_in_environment) == ["SERVING"]
  labels = np.arange(40) % 10
  good = tfdv.validate_statistics(_stats(labels, writers=["SD-3", "SD-1"] * 20), schema)
  assert not good.anomaly_info
  bad = tfdv.validate_statistics(_stats(labels, writers=["SD-3", "SD-7"] * 20), schema)
  assert features.WRITER_KEY in bad.anomaly_info


def test_out_of_range_label_is_an_anomaly():
  anomalies = tfdv.validate_statistics(_stats([0, 1, 2, 12]), _schema())
  assert features.LABEL_KEY in anomalies.anomaly_info


def _anomalies_artifact(tmp_path, anomalies_by_split):
  artifact = tfx.types.standard_artifacts.ExampleAnomalies()
  artifact.uri = str(tmp_path)
  artifact.split_names = json.dumps(list(anomalies_by_split))
  for split, anomalies in anomalies_by_split.items():
    d = tmp_path / f"Split-{split}"
    d.mkdir()
    (d / data_validation.ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())
  return artifact


def test_gate_names_the_anomalies(tmp_path):
  bad = tfdv.validate_statistics(_stats([0, 1, 12]), _schema())
  good = tfdv.validate_statistics(_stats(np.arange(20) % 10), _schema())
  artifact = _anomalies_artifact(tmp_path, {"train": bad, "eval": good})
  found = data_validation.describe_anomalies(artifact.uri, ["train", "eval"])
  assert list(found) == ["train"] and found["train"][0].startswith("label:")
  with pytest.raises(data_validation.DataAnomaliesError, match=r"\[train\] label:"):
    data_validation.check_anomalies(artifact.uri, ["train", "eval"])


def test_gate_passes_clean_data(tmp_path):
  good = tfdv.validate_statistics(_stats(np.arange(20) % 10), _schema())
  artifact = _anomalies_artifact(tmp_path, {"train": good})
  data_validation.check_anomalies(artifact.uri, ["train"])  # no raise
