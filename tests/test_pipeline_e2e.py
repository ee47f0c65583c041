"""The whole pipeline with LocalDagRunner on tiny IDX files (1 epoch).

One output directory goes through the life of a deployment: a first run
that is blessed and pushed, a rerun that is fully cached, a worse model that
is evaluated against the blessed one and not pushed, and bad data that stops
before training.
"""

import gc
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from components import evaluation, features, idx, pusher
from mnist_tfx import speedups
from pipeline import local_runner
from pipeline.configs import PipelineConfig, with_overrides
from tests import pushed_model, tiny_mnist

# Every node that executes, in data-flow order (the resolver resolves).
EXECUTED = ["IdxExampleGen", "StatisticsGen", "CuratedSchemaGen", "ExampleValidator",
            "AnomaliesGate", "Transform", "Trainer", "Evaluator",
            "ServingInfraValidator", "ServingPusher"]
RESOLVER = "latest_blessed_model_resolver"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("e2e"))
  return with_overrides(PipelineConfig(output_dir=out),
                        **{"hyperparameters.epochs": 1})


@pytest.fixture(scope="module")
def first(config, tiny_data_dir):
  return local_runner.run(config, tiny_data_dir, out=io.StringIO())


@pytest.fixture(scope="module")
def rerun(config, tiny_data_dir, first):
  versions = sorted(os.listdir(config.serving_base_uri))
  summary = local_runner.run(config, tiny_data_dir, out=io.StringIO())
  return summary, versions


def test_every_component_ran(first):
  assert first["status"] == "succeeded"
  # Exactly these nodes ran, once each (the summary has one entry per node).
  assert list(first["component_status"]) == EXECUTED[:7] + [RESOLVER] + EXECUTED[7:]
  assert all(first["component_status"][n] == "complete" for n in EXECUTED)
  assert first["train_examples"] == 300 and first["eval_examples"] == 100


def test_the_runs_process_wide_speed_ups_are_in_place_unless_switched_off(first):
  """On by default; `make test` runs this module again with MNIST_TFX_SPEEDUPS=0."""
  on = speedups.enabled()
  assert first["status"] == "succeeded"
  # mnist_tfx.speedups.gc_freeze: later full collections skip the imports' objects.
  assert (gc.get_freeze_count() > 100_000) is on
  # mnist_tfx.speedups.beam: Beam's signatures memoized, its CRC in C.
  import google_crc32c
  from apache_beam.io import tfrecordio
  from apache_beam.typehints import decorators
  assert hasattr(decorators.get_signature, "memo") is on
  assert (tfrecordio._default_crc32c_fn.fn is google_crc32c.value) is on


def test_statistics_schema_and_anomalies_exist(first):
  art = first["artifacts"]
  for split in ("train", "eval"):
    assert tf.io.gfile.exists(os.path.join(
        art["StatisticsGen.statistics"], f"Split-{split}", "FeatureStats.pb"))
    assert tf.io.gfile.exists(os.path.join(
        art["ExampleValidator.anomalies"], f"Split-{split}", "SchemaDiff.pb"))
  schema = open(os.path.join(art["CuratedSchemaGen.schema"], "schema.pbtxt")).read()
  assert "max: 255" in schema and "max: 9" in schema


def test_evaluation_has_overall_label_slices_and_confusion_matrix(first):
  result = evaluation.load(first["artifacts"]["Evaluator.evaluation"])
  assert result.example_count == 100
  assert sorted(result.per_class_accuracy, key=int) == [str(i) for i in range(10)]
  matrix = np.array(result.confusion_matrix)
  assert matrix.sum() == 100
  assert [int(r) for r in matrix.sum(axis=1)] == list(result.per_class_count.values())
  # The summary's figures are TFMA's.
  assert first["accuracy"] == pytest.approx(result.accuracy)
  assert first["accuracy"] == pytest.approx(np.trace(matrix) / 100)


def test_blessed_model_is_pushed_in_tf_serving_layout(first, config):
  assert first["blessed"] and first["accuracy"] >= 0.95
  path = first["pushed_model_path"]
  assert os.path.dirname(path) == config.serving_base_uri
  assert os.path.basename(path).isdigit() and first["pushed_new"]
  model = tf.saved_model.load(path)
  labels = np.arange(50) % 10
  images = tiny_mnist.make_images(labels, seed=9)
  out = model.signatures[features.SERVING_SIGNATURE](
      images=tf.constant(images, tf.float32))
  # The pushed model is the reported one, and it learnt the tiny data.
  assert np.mean(out[features.CLASSES_KEY].numpy() == labels) >= 0.9
  # Pushed: the infra validator's copy of the Trainer's model, which adds
  # the warm-up requests and nothing else.
  pushed_model.assert_is_reported(path, first)


def test_the_candidate_was_served_before_the_push(first):
  assert first["infra_blessed"] is True
  assert "answered over REST and gRPC as by the SavedModel" in first["infra_reason"]
  blessing = first["artifacts"]["ServingInfraValidator.blessing"]
  assert os.path.exists(os.path.join(blessing, "INFRA_BLESSED"))


def test_summary_json_has_the_promised_fields(first, config):
  import json
  on_disk = json.load(open(config.summary_uri))
  for key in ("model", "accuracy", "per_class_accuracy", "blessed",
              "pushed_model_path", "component_seconds", "total_seconds",
              "train_examples", "eval_examples"):
    assert key in on_disk
  assert sorted(on_disk["per_class_accuracy"], key=int) == [str(i) for i in range(10)]
  assert on_disk["model"] == "improved"


def test_rerun_is_fully_cached_and_pushes_nothing_new(rerun, config, first):
  summary, versions_before = rerun
  assert all(summary["component_status"][n] == "cached" for n in EXECUTED)
  # Each cached node shows the time of the run that made what it reused.
  from results import summary as summary_lib  # pylint: disable=g-import-not-at-top
  assert summary["component_seconds_made"] == {
      n: first["component_seconds"][n] for n in EXECUTED}
  shown = summary_lib.render(summary)
  seconds = first["component_seconds"]["StatisticsGen"]
  assert seconds > 0 and f"StatisticsGen {seconds:.1f}s (cached)" in shown
  # Why: each node's TFX cache key is the one its first execution was filed under.
  for node in EXECUTED:
    assert summary["cache"][node].startswith("cached: the same cache key "), node
    assert first["cache"][node].startswith("ran: cache key "), node
  assert f"Cache: {len(EXECUTED)} reused with unchanged cache keys" in shown
  assert not summary["pushed_new"]
  assert sorted(os.listdir(config.serving_base_uri)) == versions_before


def test_worse_model_is_compared_with_the_blessed_one_and_not_pushed(
    config, tiny_data_dir, rerun):
  versions_before = sorted(os.listdir(config.serving_base_uri))
  worse = with_overrides(config, **{"hyperparameters.learning_rate": 1e-7,
                                    "hyperparameters.lr_schedule": "constant"})
  summary = local_runner.run(worse, tiny_data_dir, out=io.StringIO())
  assert summary["status"] == "succeeded"  # not blessed is not a failure
  assert summary["component_status"]["Trainer"] == "complete"
  # The cache says why the Trainer ran again and the Transform did not.
  assert summary["cache"]["Transform"].startswith("cached: ")
  assert summary["cache"]["Trainer"].endswith(
      "changed: parameter custom_config.hyperparameters")
  from results import summary as summary_lib  # pylint: disable=g-import-not-at-top
  assert "ran again: Trainer (since execution " in summary_lib.render(summary)
  assert summary["baseline_accuracy"] == pytest.approx(1.0)
  assert not summary["blessed"] and summary["pushed_model_path"] is None
  assert "below" in summary["blessing"]
  assert sorted(os.listdir(config.serving_base_uri)) == versions_before


def test_out_of_range_label_stops_before_the_trainer(tmp_path):
  data_dir = str(tmp_path / "bad")
  tiny_mnist.write_dataset(data_dir, n_train=50, n_eval=20)
  labels_path = os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")
  labels = np.arange(20, dtype=np.uint8) % 10
  labels[5] = 11
  idx.write_labels(labels_path, labels, compress=True)
  config = PipelineConfig(output_dir=str(tmp_path / "out"))
  with pytest.raises(local_runner.PipelineFailed) as e:
    local_runner.run(config, data_dir, out=io.StringIO())
  summary = e.value.summary
  assert "label 11 at record 5 is out of range 0-9" in summary["error"]
  assert "t10k-labels-idx1-ubyte.gz" in summary["error"]
  assert summary["component_status"].get("IdxExampleGen") == "failed"
  assert "IdxExampleGen.examples" not in summary["artifacts"]  # nothing published
  assert "Trainer" not in summary["component_status"]
  assert not os.path.exists(config.serving_base_uri)
