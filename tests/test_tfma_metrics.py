"""The native accuracy metric: argmax(prediction) == label, weighted."""

import math

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components import tfma_metrics
from mnist_tfx import speedups
from mnist_tfx.speedups import tfma_reader

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


def test_each_blessing_bound_applies_to_its_own_slices():
  """The overall bounds on the overall slice only, the per-digit bounds on
  the label slices only: a plain `threshold` would apply one bound to all."""
  from components import evaluation
  config = evaluation.eval_config(min_accuracy=0.9, max_regression=0.001,
                                  min_class_accuracy=0.8, max_class_regression=0.02)
  (accuracy,) = [m for spec in config.metrics_specs for m in spec.metrics
                 if m.class_name == "MultiClassAccuracy"]
  assert not accuracy.HasField("threshold")
  overall, per_digit = accuracy.per_slice_thresholds
  for scoped, keys, low, change in ((overall, [], 0.9, -0.001),
                                    (per_digit, ["label"], 0.8, -0.02)):
    assert len(scoped.slicing_specs) == 1
    assert list(scoped.slicing_specs[0].feature_keys) == keys
    assert scoped.threshold.value_threshold.lower_bound.value == low
    assert scoped.threshold.change_threshold.absolute.value == change


# The inputs TFMA builds for this project's model: an int64 label of shape
# (1,), the signature's outputs as a dict, no example weights.
_MODEL_CONFIG = tfma.EvalConfig(model_specs=[tfma.ModelSpec(
    label_key="label", prediction_key="probabilities")])
_COMBINER_ARGS = dict(model_name="", output_name="", example_weighted=False,
                      flatten=False, require_single_example_weight=True)


def _model_inputs(label, scores, **extra):
  return tfma.metrics.StandardMetricInputs(
      labels=np.array([label], dtype=np.int64),
      predictions={"probabilities": np.asarray(scores, dtype=np.float32),
                   "classes": np.arange(len(scores))}, **extra)


def _as_lists(results):
  return [[(a.shape, a.dtype.str, a.tolist()) for a in r] for r in results]


def _tfma(inputs, config, **args):
  return _as_lists(tfma_reader.metric_util.to_label_prediction_example_weight(
      inputs, eval_config=config, **args))


def _ours(inputs, config, **args):
  return _as_lists(tfma_reader.label_prediction_weight(
      inputs, eval_config=config, **args))


@pytest.fixture
def fresh_check(monkeypatch):
  """The once-per-process comparison with TFMA, as in a new process."""
  state = {"checked": False, "on": True}
  monkeypatch.setattr(tfma_reader, "_state", state)
  monkeypatch.setattr(speedups, "_said", {})  # said once per process
  return state


def test_the_shortcut_reads_this_models_inputs_as_tfma_does(fresh_check):
  rng = np.random.default_rng(0)
  for label in range(10):
    inputs = _model_inputs(label, rng.random(10))
    assert tfma_reader._shortcut(inputs, _MODEL_CONFIG, _COMBINER_ARGS) is not None
    assert _ours(inputs, _MODEL_CONFIG, **_COMBINER_ARGS) == _tfma(
        inputs, _MODEL_CONFIG, **_COMBINER_ARGS)
  assert fresh_check == {"checked": True, "on": True}


_SCORES = [0.1, 0.7, 0.2]
_OTHER_FORMS = {
    "weighted": (_model_inputs(1, _SCORES, example_weights=np.array([2.0])),
                 _MODEL_CONFIG, dict(_COMBINER_ARGS, example_weighted=True)),
    "flattened": (_model_inputs(1, _SCORES), _MODEL_CONFIG,
                  dict(_COMBINER_ARGS, flatten=True)),
    "a model name": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([1]), predictions={
                "a": {"probabilities": np.array(_SCORES, np.float32)},
                "b": {"probabilities": np.array(_SCORES[::-1], np.float32)}}),
        tfma.EvalConfig(model_specs=[
            tfma.ModelSpec(name="a", prediction_key="probabilities"),
            tfma.ModelSpec(name="b", prediction_key="probabilities")]),
        dict(_COMBINER_ARGS, model_name="a")),
    "predictions not a dict": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([1]), predictions=np.array(_SCORES, np.float32)),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "no prediction key": (_model_inputs(1, _SCORES),
                          tfma.EvalConfig(model_specs=[tfma.ModelSpec()]),
                          _COMBINER_ARGS),
    "a float label": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([1.0]),
            predictions={"probabilities": np.array(_SCORES, np.float32)}),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "a batched label": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([[1]]),
            predictions={"probabilities": np.array(_SCORES, np.float32)}),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "batched scores": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([1]),
            predictions={"probabilities": np.array([_SCORES], np.float32)}),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "a label dict": (
        tfma.metrics.StandardMetricInputs(
            labels={"label": np.array([1])},
            predictions={"probabilities": np.array(_SCORES, np.float32)}),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "string labels and classes": (
        tfma.metrics.StandardMetricInputs(
            labels=np.array([b"b"]),
            predictions={"probabilities": np.array(_SCORES, np.float32),
                         "all_classes": np.array([b"a", b"b", b"c"])}),
        _MODEL_CONFIG, _COMBINER_ARGS),
    "a sub key": (_model_inputs(1, _SCORES), _MODEL_CONFIG,
                  dict(_COMBINER_ARGS, sub_key=tfma.metrics.SubKey(class_id=1))),
}


@pytest.mark.parametrize("form", sorted(_OTHER_FORMS))
def test_other_inputs_go_to_tfmas_reader(form, fresh_check):
  inputs, config, args = _OTHER_FORMS[form]
  assert tfma_reader._shortcut(inputs, config, args) is None
  assert _ours(inputs, config, **args) == _tfma(inputs, config, **args)
  assert fresh_check == {"checked": False, "on": True}


def test_a_difference_from_tfma_turns_the_shortcut_off(fresh_check, monkeypatch,
                                                       caplog):
  def reader_that_differs(inputs, eval_config=None, **args):
    del eval_config, args
    yield (inputs.label, np.array([0.0, 1.0], np.float32),
           np.array([1.0], np.float32))

  monkeypatch.setattr(tfma_reader.metric_util,
                      "to_label_prediction_example_weight", reader_that_differs)
  inputs = _model_inputs(3, [0.1] * 9 + [0.9])
  with caplog.at_level("WARNING", logger="mnist_tfx.speedups"):
    first = _ours(inputs, _MODEL_CONFIG, **_COMBINER_ARGS)
  assert first[0][1][2] == [0.0, 1.0]  # TFMA's answer, not the shortcut's
  assert fresh_check == {"checked": True, "on": False}
  assert "tfma_reader stepped aside" in caplog.text
  assert _ours(inputs, _MODEL_CONFIG, **_COMBINER_ARGS)[0][1][2] == [0.0, 1.0]


def _evaluate_model_inputs(computations, examples):
  metrics = {}
  for c in computations:
    if isinstance(c, tfma.metrics.MetricComputation):
      acc = c.combiner.create_accumulator()
      for label, scores in examples:
        acc = c.combiner.add_input(acc, _model_inputs(label, scores))
      metrics.update(c.combiner.extract_output(acc))
  for c in computations:
    if isinstance(c, tfma.metrics.DerivedMetricComputation):
      metrics.update(c.result(metrics))
  return metrics


def test_the_plot_is_tfmas_plot(fresh_check):
  del fresh_check
  rng = np.random.default_rng(1)
  examples = [(int(rng.integers(10)), rng.dirichlet(np.ones(10)))
              for _ in range(300)]
  ours = _evaluate_model_inputs(tfma_metrics.MultiClassConfusionMatrixPlot()
                                .computations(eval_config=_MODEL_CONFIG), examples)
  theirs = _evaluate_model_inputs(tfma.metrics.MultiClassConfusionMatrixPlot()
                                  .computations(eval_config=_MODEL_CONFIG), examples)
  (key,) = [k for k in theirs if k.name == tfma_metrics.PLOT_NAME]
  assert ours[key] == theirs[key]
  assert sum(e.num_weighted_examples for e in ours[key].matrices[0].entries) == 300


def test_accuracy_and_plot_count_each_example_once():
  computations = (tfma_metrics.MultiClassAccuracy().computations(
      eval_config=_MODEL_CONFIG) + tfma_metrics.MultiClassConfusionMatrixPlot()
                  .computations(eval_config=_MODEL_CONFIG))
  combined = [c for c in computations
              if isinstance(c, tfma.metrics.MetricComputation)]
  assert len(set(combined)) == 1
  assert all(c.combiner._extract_label_prediction_and_weight
             is tfma_reader.label_prediction_weight for c in combined)


def test_a_cross_slice_bound_is_validated_and_not_reported_missing():
  """TFMA 0.47.1 filed a cross slice's check under the overall spec, so a
  writer-gap bound always failed as missing; mended on import of
  components.tfma_metrics."""
  from tensorflow_model_analysis.evaluators import metrics_validator
  from tensorflow_model_analysis.proto import config_pb2
  from components import evaluation
  config = evaluation.eval_config(min_accuracy=0, max_regression=1, max_writer_gap=0.05)
  key = tfma.metrics.MetricKey(name=tfma_metrics.NAME, example_weighted=False)
  cross = ((("writer", "SD-3"),), (("writer", "SD-1"),))  # as TFMA keys slices

  def validated(gap):
    result = metrics_validator.validate_metrics((cross, {key: gap}), config)
    missing = metrics_validator.get_missing_slices(
        result.validation_details.slicing_details, config)
    return result.validation_ok, [m for m in missing
                                  if isinstance(m, config_pb2.CrossSlicingSpec)]

  assert validated(0.02) == (True, [])
  assert validated(-0.04) == (True, [])
  assert validated(0.08)[0] is False
  assert tfma_metrics.mend_cross_slice_validation() is False  # in place already
