"""Shared fixtures: tiny IDX datasets written by the tests themselves."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import components  # noqa: E402,F401  (defers tfx.v1.extensions)
from tests import tiny_mnist  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """300 train / 100 eval learnable images, gzipped like the real files."""
  directory = str(tmp_path_factory.mktemp("tiny_mnist"))
  tiny_mnist.write_dataset(directory)
  return directory


@pytest.fixture(scope="session")
def tft_output(tmp_path_factory):
  """A real Transform graph, written by TFT's Beam implementation."""
  import numpy as np
  import tensorflow_transform as tft
  from components import features
  import tensorflow_transform.beam as tft_beam
  from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
  from components.transform.preprocessing import preprocessing_fn

  tmp = str(tmp_path_factory.mktemp("tft"))
  spec = features.raw_feature_spec()
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(spec))
  labels = np.arange(4) % 10
  rows = [{features.IMAGE_KEY: img, features.LABEL_KEY: int(l)}
          for img, l in zip(tiny_mnist.make_images(labels).astype(np.int64), labels)]
  import apache_beam as beam
  with beam.Pipeline() as pipeline, tft_beam.Context(
      temp_dir=os.path.join(tmp, "tmp")):
    data = pipeline | beam.Create(rows)
    transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
    _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(tmp, "tf"))
  # TFX's Transform also writes the raw metadata; TFTransformOutput needs it.
  from tensorflow_transform.tf_metadata import metadata_io
  metadata_io.write_metadata(metadata, os.path.join(
      tmp, "tf", tft.TFTransformOutput.RAW_METADATA_DIR))
  return tft.TFTransformOutput(os.path.join(tmp, "tf"))


def _run(data_dir: str, out: str, **hyperparameters) -> dict:
  import io
  from pipeline import local_runner
  from pipeline.configs import PipelineConfig, with_overrides
  config = with_overrides(PipelineConfig(output_dir=out), **{
      f"hyperparameters.{k}": v for k, v in dict(epochs=1, **hyperparameters).items()})
  return local_runner.run(config, data_dir, out=io.StringIO())


@pytest.fixture(scope="session")
def tiny_run_dir(tiny_data_dir, tmp_path_factory) -> str:
  """One blessed pipeline run on the tiny data (shared by the report tests)."""
  out = str(tmp_path_factory.mktemp("tiny_run"))
  _run(tiny_data_dir, out)
  return out


@pytest.fixture(scope="session")
def baseline_run_dir(tiny_data_dir, tmp_path_factory) -> str:
  """A blessed run, then a weak model evaluated against it as the baseline."""
  out = str(tmp_path_factory.mktemp("baseline_run"))
  _run(tiny_data_dir, out)
  weak = _run(tiny_data_dir, out, learning_rate=1e-7, lr_schedule="constant")
  assert weak["baseline_accuracy"] is not None and not weak["blessed"]
  return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  """Headless Chromium (tests.browser), one per test module."""
  from tests.browser import chromium  # pylint: disable=g-import-not-at-top
  driver = chromium(str(tmp_path_factory.mktemp("chromium")))
  yield driver
  driver.quit()
