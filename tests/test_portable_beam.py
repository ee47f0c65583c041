"""The data half of the pipeline through Beam's portable job API (the path of
Flink, Spark and Dataflow), with LOOPBACK and EXTERNAL SDK workers, gives the
same examples, statistics and Transform graph as in-process Beam."""

import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from components import features
from pipeline import local_runner, portable_beam
from pipeline.configs import PipelineConfig
from tests import tiny_mnist


def _data_run(data_dir, out, beam_args):
  summary = local_runner.run(PipelineConfig(output_dir=out, beam_args=beam_args),
                             data_dir, out=io.StringIO(), data_only=True)
  assert summary["status"] == "succeeded", summary.get("error")
  return summary["artifacts"]


def _records(examples_uri, split):
  files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
  return sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def _statistics(statistics_uri, split):
  from tensorflow_metadata.proto.v0 import statistics_pb2
  stats = statistics_pb2.DatasetFeatureStatisticsList()
  with open(os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb"), "rb") as f:
    stats.ParseFromString(f.read())
  return stats


def _transformed(transform_graph_uri):
  import tensorflow_transform as tft
  labels = np.arange(10)
  images = tiny_mnist.make_images(labels, seed=9).astype(np.int64)
  layer = tft.TFTransformOutput(transform_graph_uri).transform_features_layer()
  out = layer({features.IMAGE_KEY: tf.constant(images),
               features.LABEL_KEY: tf.constant(labels)})
  return out[features.TRANSFORMED_IMAGE_KEY].numpy()


@pytest.fixture(scope="module")
def in_process(tiny_data_dir, tmp_path_factory):
  return _data_run(tiny_data_dir, str(tmp_path_factory.mktemp("in_process")),
                   ["--direct_running_mode=in_memory", "--direct_num_workers=1"])


@pytest.mark.parametrize("environment", portable_beam.ENVIRONMENTS)
def test_portable_runner_gives_what_in_process_beam_gives(
    environment, in_process, tiny_data_dir, tmp_path):
  with portable_beam.JobService(environment, log_dir=str(tmp_path)) as service:
    assert all(p.poll() is None for p in service._procs)  # pylint: disable=protected-access
    portable = _data_run(tiny_data_dir, str(tmp_path / "out"), service.beam_args)
    procs = list(service._procs)  # pylint: disable=protected-access
  assert all(p.poll() is not None for p in procs)  # stopped with the context
  for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
    ours = _records(portable["IdxExampleGen.examples"], split)
    assert ours == _records(in_process["IdxExampleGen.examples"], split)
    assert len(ours) == {"train": 300, "eval": 100}[split]
    a = _statistics(portable["StatisticsGen.statistics"], split)
    b = _statistics(in_process["StatisticsGen.statistics"], split)
    assert a.datasets[0].num_examples == b.datasets[0].num_examples
    for fa, fb in zip(a.datasets[0].features, b.datasets[0].features):
      assert fa.path == fb.path
      for field in ("mean", "std_dev", "min", "max", "num_zeros"):
        assert getattr(fa.num_stats, field) == pytest.approx(
            getattr(fb.num_stats, field), rel=1e-9)
  np.testing.assert_array_equal(_transformed(portable["Transform.transform_graph"]),
                                _transformed(in_process["Transform.transform_graph"]))


def test_job_service_refuses_an_unknown_environment():
  with pytest.raises(ValueError, match="environment must be one of"):
    portable_beam.JobService("DOCKER")
