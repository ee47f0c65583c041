"""The native accuracy metric: argmax(prediction) == label, weighted."""

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components import tfma_metrics


def _combiner():
  (computation,) = tfma_metrics.MultiClassAccuracy().computations(
      eval_config=tfma.EvalConfig(model_specs=[tfma.ModelSpec()]))
  return computation.combiner, computation.keys[0]


def _inputs(label, prediction):
  return tfma.metrics.StandardMetricInputs(
      labels=np.array([label]), predictions=np.array(prediction),
      example_weights=np.array([1.0]))


def test_accuracy_is_fraction_of_top1_hits():
  combiner, key = _combiner()
  acc = combiner.create_accumulator()
  for label, pred in [(0, [0.9, 0.1, 0.0]), (1, [0.2, 0.7, 0.1]),
                      (2, [0.5, 0.1, 0.4]), (2, [0.0, 0.1, 0.9])]:
    acc = combiner.add_input(acc, _inputs(label, pred))
  assert combiner.extract_output(acc)[key] == pytest.approx(0.75)


def test_merging_accumulators():
  combiner, key = _combiner()
  a = combiner.add_input(combiner.create_accumulator(), _inputs(1, [0.1, 0.9]))
  b = combiner.add_input(combiner.create_accumulator(), _inputs(1, [0.9, 0.1]))
  merged = combiner.merge_accumulators([a, b])
  assert combiner.extract_output(merged)[key] == pytest.approx(0.5)
  assert key.name == "accuracy"


def test_blessing_thresholds_apply_to_the_overall_slice_only():
  from components import evaluation
  config = evaluation.eval_config(min_accuracy=0.9, max_regression=0.001)
  (accuracy,) = [m for spec in config.metrics_specs for m in spec.metrics
                 if m.class_name == "MultiClassAccuracy"]
  assert not accuracy.HasField("threshold")
  (scoped,) = accuracy.per_slice_thresholds
  assert len(scoped.slicing_specs) == 1
  assert not scoped.slicing_specs[0].feature_keys  # the overall slice
  assert scoped.threshold.value_threshold.lower_bound.value == 0.9
  assert scoped.threshold.change_threshold.absolute.value == -0.001
