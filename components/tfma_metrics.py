"""Native TFMA metrics: multi-class accuracy and the confusion-matrix plot.

TFMA evaluates a Keras metric such as SparseCategoricalAccuracy through its
TF-metric wrapper, which builds and traces Keras metric objects per slice;
on MNIST's 11 slices that was most of the Evaluator's time. Here the
accuracy is derived from the multi-class confusion matrices that the plot
computes: both ask for the same computation, which TFMA de-duplicates, so
each example is counted once, and the accuracy is the matrix's trace over
its total, read off when the slice is done.

Both pass the matrices' combiner the reader of labels and predictions that
`mnist_tfx.speedups.tfma_reader` chooses: TFMA's own, or a shortcut for
this model's inputs that returns the same.

Importing this module also mends TFMA's cross-slice validation (see
`mend_cross_slice_validation`): TFMA loads it wherever it computes these
metrics, so every process that validates them has it.
"""

import functools
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as matrices_lib
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_plot as plot_lib

from mnist_tfx.speedups import tfma_reader

NAME = "accuracy"
PLOT_NAME = plot_lib.MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME  # what readers look up
# The plot's default: the top class counts as predicted when its score is
# above 0, which a softmax's top score always is.
THRESHOLD = 0.0


def _matrices(eval_config: Optional[tfma.EvalConfig], model_name: str,
              output_name: str, example_weighted: bool
              ) -> tfma.metrics.MetricComputations:
  """The shared confusion matrices (TFMA keeps one of equal computations)."""
  return matrices_lib.multi_class_confusion_matrices(
      thresholds=[THRESHOLD], eval_config=eval_config,
      model_name=model_name, output_name=output_name,
      example_weighted=example_weighted,
      extract_label_prediction_and_weight=tfma_reader.reader())


def _per_model_and_output(key_type, result, name: str,
                          eval_config: Optional[tfma.EvalConfig] = None,
                          model_names: Optional[List[str]] = None,
                          output_names: Optional[List[str]] = None,
                          example_weighted: bool = False
                          ) -> tfma.metrics.MetricComputations:
  """The matrices and `result(key, matrices_key, metrics)` per model and output."""
  computations = []
  for model_name in model_names or [""]:
    for output_name in output_names or [""]:
      key = key_type(name=name, model_name=model_name, output_name=output_name,
                     example_weighted=example_weighted)
      matrices = _matrices(eval_config, model_name, output_name, example_weighted)
      computations.extend(matrices)
      computations.append(tfma.metrics.DerivedMetricComputation(
          keys=[key], result=functools.partial(result, key, matrices[-1].keys[-1])))
  return computations


class _FromMatrices(tfma.metrics.Metric):
  """A metric or plot read off the shared matrices (no per-class sub keys)."""

  def __init__(self, key_type, result, name: str):
    super().__init__(functools.partial(_per_model_and_output, key_type, result),
                     name=name)


class MultiClassAccuracy(_FromMatrices):
  """Fraction of examples whose highest-scoring class is the label."""

  def __init__(self, name: str = NAME):
    super().__init__(tfma.metrics.MetricKey, _accuracy, name)


def _accuracy(key: tfma.metrics.MetricKey, matrices_key: tfma.metrics.MetricKey,
              metrics: Dict[tfma.metrics.MetricKey, Dict]
              ) -> Dict[tfma.metrics.MetricKey, float]:
  """Weighted hits (actual == predicted class) over all weighted examples."""
  matrices = metrics[matrices_key]  # empty when the slice had no examples
  if matrices and THRESHOLD not in matrices:
    # Equal computations are shared by key, so another metric's matrices
    # would have to have been configured without this threshold.
    raise ValueError(f"{key.name}: the shared confusion matrices have no "
                     f"threshold {THRESHOLD} (thresholds: {sorted(matrices)})")
  entries = matrices.get(THRESHOLD, {})
  total = sum(entries.values())
  hits = sum(w for k, w in entries.items()
             if k.actual_class_id == k.predicted_class_id)
  return {key: hits / total if total else float("nan")}


def mend_cross_slice_validation() -> bool:
  """Makes TFMA's validation count the cross slices it checked; True if needed.

  TFMA 0.47.1 files each check under the spec of the slice it ran on, but
  keys that record by `slicing_spec` alone (`metrics_validator.
  _hashed_slicing_details`), so a cross slice's check lands on the overall
  spec and every cross-slice threshold is reported missing: validation
  fails whatever the values (the writer gap, `components.evaluation`).
  Applied only when a probe shows that behaviour, so a TFMA that keys by
  the right spec runs as shipped.
  """
  from tensorflow_model_analysis.evaluators import metrics_validator
  from tensorflow_model_analysis.proto import validation_result_pb2
  from tensorflow_model_analysis.slicer import slicer_lib
  probe = validation_result_pb2.SlicingDetails()
  probe.cross_slicing_spec.baseline_spec.feature_keys.append("probe")
  keys = list(metrics_validator._hashed_slicing_details([probe]))  # pylint: disable=protected-access
  if keys and isinstance(keys[0], slicer_lib.CrossSliceSpec):
    return False  # keyed right already

  def hashed_slicing_details(slicing_details):
    hashed = {}
    for details in slicing_details:
      spec = (details.cross_slicing_spec if details.HasField("cross_slicing_spec")
              else details.slicing_spec)
      hashed.setdefault(slicer_lib.deserialize_slice_spec(spec), details)
    return hashed

  metrics_validator._hashed_slicing_details = hashed_slicing_details  # pylint: disable=protected-access
  return True


MENDED = mend_cross_slice_validation()

MARGIN_NAME = "accuracy_margin"


class AccuracyMargin(_FromMatrices):
  """Accuracy less `over`, another model's accuracy: the margin by which
  this model beats it, a metric of its own so that TFMA bounds the margin
  and names it when it is too small."""

  def __init__(self, over: float, name: str = MARGIN_NAME):
    super().__init__(tfma.metrics.MetricKey, functools.partial(_margin, over), name)


def _margin(over: float, key: tfma.metrics.MetricKey,
            matrices_key: tfma.metrics.MetricKey,
            metrics: Dict[tfma.metrics.MetricKey, Dict]
            ) -> Dict[tfma.metrics.MetricKey, float]:
  return {key: _accuracy(key, matrices_key, metrics)[key] - float(over)}


class MultiClassConfusionMatrixPlot(_FromMatrices):
  """TFMA's multi-class confusion-matrix plot (same name, same output)."""

  def __init__(self, name: str = PLOT_NAME):
    super().__init__(tfma.metrics.PlotKey, _plot, name)


def _plot(key: tfma.metrics.PlotKey, matrices_key: tfma.metrics.MetricKey,
          metrics: Dict[tfma.metrics.MetricKey, Any]) -> Dict[tfma.metrics.PlotKey, Any]:
  return {key: metrics[matrices_key].to_proto()
                 .multi_class_confusion_matrix_at_thresholds}
