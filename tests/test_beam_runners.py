"""The data components on Beam's multi-processing DirectRunner.

A stand-in for a distributed runner that really parallelises: two worker
processes, elements crossing process boundaries. Its outputs must equal the
in-process run's: the same examples, statistics and transformed values.
"""

import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import tensorflow_transform as tft

from components import features
from pipeline import local_runner
from pipeline.configs import PipelineConfig

MULTI_PROCESS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _run(root, data_dir, beam_args):
  config = PipelineConfig(output_dir=str(root), beam_args=beam_args)
  return local_runner.run(config, data_dir, out=io.StringIO(), data_only=True)


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
  in_process = _run(tmp_path_factory.mktemp("in_process"), tiny_data_dir,
                    list(PipelineConfig().beam_args))
  parallel = _run(tmp_path_factory.mktemp("multi_process"), tiny_data_dir,
                  MULTI_PROCESS)
  return in_process, parallel


def _examples(summary, split):
  files = glob.glob(os.path.join(summary["artifacts"]["IdxExampleGen.examples"],
                                 f"Split-{split}", "*"))
  return sorted(r.numpy() for r in tf.data.TFRecordDataset(
      files, compression_type="GZIP"))


def test_both_runs_ran_the_data_components(runs):
  for summary in runs:
    assert summary["status"] == "succeeded"
    assert {"IdxExampleGen", "StatisticsGen", "Transform"} <= set(
        n for n, s in summary["component_status"].items() if s == "complete")
    assert "Trainer" not in summary["component_status"]


@pytest.mark.parametrize("split,count", [("train", 300), ("eval", 100)])
def test_same_examples(runs, split, count):
  a, b = (_examples(s, split) for s in runs)
  assert len(a) == len(b) == count
  assert a == b  # the very same serialized records


@pytest.mark.parametrize("split", ["train", "eval"])
def test_same_statistics(runs, split):
  stats = [tfdv.load_stats_binary(os.path.join(
      s["artifacts"]["StatisticsGen.statistics"], f"Split-{split}",
      "FeatureStats.pb")) for s in runs]
  a, b = (st.datasets[0] for st in stats)
  assert a.num_examples == b.num_examples
  for feature in (features.IMAGE_KEY, features.LABEL_KEY):
    fa = tfdv.get_feature_stats(a, tfdv.FeaturePath([feature]))
    fb = tfdv.get_feature_stats(b, tfdv.FeaturePath([feature]))
    na, nb = fa.num_stats, fb.num_stats
    assert (na.min, na.max, na.num_zeros) == (nb.min, nb.max, nb.num_zeros)
    assert na.mean == pytest.approx(nb.mean, rel=1e-9)
    assert na.std_dev == pytest.approx(nb.std_dev, rel=1e-9)
    assert (na.common_stats.num_non_missing ==
            nb.common_stats.num_non_missing)


def test_same_transformed_values(runs):
  raw = [tf.train.Example.FromString(r) for r in _examples(runs[0], "eval")[:20]]
  spec = features.raw_feature_spec()
  batch = tf.io.parse_example([e.SerializeToString() for e in raw], spec)
  outs = [tft.TFTransformOutput(s["artifacts"]["Transform.transform_graph"])
          .transform_raw_features(dict(batch)) for s in runs]
  np.testing.assert_array_equal(outs[0][features.TRANSFORMED_IMAGE_KEY].numpy(),
                                outs[1][features.TRANSFORMED_IMAGE_KEY].numpy())
  np.testing.assert_allclose(outs[0][features.TRANSFORMED_IMAGE_KEY].numpy(),
                             batch[features.IMAGE_KEY].numpy().reshape(20, -1) / 255.0,
                             rtol=1e-6)
