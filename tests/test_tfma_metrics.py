"""The native accuracy metric: argmax(prediction) == label, weighted."""

import math

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components import tfma_metrics

_CONFIG = tfma.EvalConfig(model_specs=[tfma.ModelSpec()])


def _inputs(label, prediction):
  return tfma.metrics.StandardMetricInputs(
      labels=np.array([label]), predictions=np.array(prediction),
      example_weights=np.array([1.0]))


def _evaluate(computations, batches):
  """What TFMA does with computations: combine each batch, merge, derive."""
  metrics = {}
  for c in computations:
    if isinstance(c, tfma.metrics.MetricComputation):
      accumulators = []
      for batch in batches:
        acc = c.combiner.create_accumulator()
        for label, pred in batch:
          acc = c.combiner.add_input(acc, _inputs(label, pred))
        accumulators.append(acc)
      metrics.update(c.combiner.extract_output(
          c.combiner.merge_accumulators(accumulators)))
  for c in computations:
    if isinstance(c, tfma.metrics.DerivedMetricComputation):
      metrics.update(c.result(metrics))
  return metrics


def _accuracy(*batches):
  computations = tfma_metrics.MultiClassAccuracy().computations(
      eval_config=_CONFIG)
  (key,) = [k for c in computations for k in c.keys
            if k.name == tfma_metrics.NAME]
  return _evaluate(computations, batches)[key]


def test_accuracy_is_fraction_of_top1_hits():
  assert _accuracy([(0, [0.9, 0.1, 0.0]), (1, [0.2, 0.7, 0.1]),
                    (2, [0.5, 0.1, 0.4]), (2, [0.0, 0.1, 0.9])]) == pytest.approx(0.75)


def test_merging_accumulators():
  assert _accuracy([(1, [0.1, 0.9])], [(1, [0.9, 0.1])]) == pytest.approx(0.5)


def test_ties_go_to_the_first_class_as_argmax_does():
  assert _accuracy([(0, [0.5, 0.5]), (1, [0.5, 0.5])]) == pytest.approx(0.5)


def test_no_examples_is_nan_not_a_division_error():
  assert math.isnan(_accuracy([]))


def test_it_shares_the_confusion_matrix_plots_computation():
  ours = tfma_metrics.MultiClassAccuracy().computations(eval_config=_CONFIG)
  plots = tfma.metrics.MultiClassConfusionMatrixPlot().computations(
      eval_config=_CONFIG)
  combined = [c for c in ours + plots
              if isinstance(c, tfma.metrics.MetricComputation)]
  # TFMA keeps one of equal computations: one pass over the examples.
  assert len(combined) == 2 and combined[0] == combined[1]
  assert len(set(combined)) == 1


def test_matrices_without_its_threshold_are_a_clear_error():
  computations = tfma_metrics.MultiClassAccuracy().computations(
      eval_config=_CONFIG)
  (derived,) = [c for c in computations
                if isinstance(c, tfma.metrics.DerivedMetricComputation)]
  (matrices,) = [c for c in computations
                 if isinstance(c, tfma.metrics.MetricComputation)]
  with pytest.raises(ValueError, match="no threshold 0.0"):
    derived.result({matrices.keys[0]: {0.5: {}}})


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
