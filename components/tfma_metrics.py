"""Native TFMA metrics: multi-class accuracy and the confusion-matrix plot.

TFMA evaluates a Keras metric such as SparseCategoricalAccuracy through its
TF-metric wrapper, which builds and traces Keras metric objects per slice;
on MNIST's 11 slices that was most of the Evaluator's time. Here the
accuracy is derived from the multi-class confusion matrices that the plot
computes: both ask for the same computation, which TFMA de-duplicates, so
each example is counted once, and the accuracy is the matrix's trace over
its total, read off when the slice is done.

Both pass the matrices' combiner `label_prediction_weight`: for the inputs
this project's model gives TFMA (an integer label, a dict of outputs with a
1-D float vector under the prediction key, no weights) it returns what
TFMA's generic `to_label_prediction_example_weight` returns, without its
per-example lookups and checks (43 -> 14 us an example and slice; 20,000
calls an evaluation); anything else goes to TFMA's function. The first
example a process sees is also put through TFMA's function and compared:
any difference turns the shortcut off for the process, with a warning.
"""

import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as matrices_lib
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_plot as plot_lib

NAME = "accuracy"
PLOT_NAME = plot_lib.MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME  # what readers look up
# The plot's default: the top class counts as predicted when its score is
# above 0, which a softmax's top score always is.
THRESHOLD = 0.0

_LOG = logging.getLogger(__name__)
# The arguments TFMA's function takes with the values the shortcut covers.
_COVERED = {"model_name": "", "output_name": "", "sub_key": None,
            "aggregation_type": None, "class_weights": None,
            "example_weighted": False, "fractional_labels": False,
            "flatten": False, "squeeze": True, "allow_none": False}
_ACCEPTED = frozenset(_COVERED) | {"require_single_example_weight"}
_state = {"checked": False, "on": True}
_state_lock = threading.Lock()


def _shortcut(inputs: Any, eval_config: Optional[tfma.EvalConfig],
              options: Dict[str, Any]
              ) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(label, prediction, weight) for the covered case; None otherwise."""
  if any(options.get(k, v) != v for k, v in _COVERED.items()):
    return None
  if not options.keys() <= _ACCEPTED:
    return None
  if eval_config is None or len(eval_config.model_specs) != 1:
    return None
  key = eval_config.model_specs[0].prediction_key
  label, outputs = inputs.label, inputs.prediction
  if not key or not isinstance(outputs, Mapping) or key not in outputs:
    return None
  prediction = outputs[key]
  if (type(label) is not np.ndarray or label.shape != (1,)  # pylint: disable=unidiomatic-typecheck
      or label.dtype.kind not in "iu"):
    return None
  if (type(prediction) is not np.ndarray or prediction.ndim != 1  # pylint: disable=unidiomatic-typecheck
      or prediction.size < 2 or prediction.dtype.kind != "f"):
    return None
  return label, prediction, np.array([1.0], dtype=np.float32)


def _same(a: Tuple[np.ndarray, ...], b: Tuple[np.ndarray, ...]) -> bool:
  return len(a) == len(b) and all(
      x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
      for x, y in zip(a, b))


def label_prediction_weight(inputs: Any, eval_config: Optional[tfma.EvalConfig] = None,
                            **options: Any
                            ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """TFMA's `to_label_prediction_example_weight`, short for this model's inputs."""
  fast = _shortcut(inputs, eval_config, options) if _state["on"] else None
  if fast is None:
    yield from metric_util.to_label_prediction_example_weight(
        inputs, eval_config=eval_config, **options)
    return
  if not _state["checked"]:
    generic = next(metric_util.to_label_prediction_example_weight(
        inputs, eval_config=eval_config, **options))
    with _state_lock:
      _state["checked"] = True
      if not _same(fast, tuple(generic)):
        _state["on"] = False
        _LOG.warning("TFMA reads this model's labels and predictions "
                     "differently than expected; using its generic reader")
        yield generic
        return
  yield fast


def _matrices(eval_config: Optional[tfma.EvalConfig], model_name: str,
              output_name: str, example_weighted: bool
              ) -> tfma.metrics.MetricComputations:
  """The shared confusion matrices (TFMA keeps one of equal computations)."""
  return matrices_lib.multi_class_confusion_matrices(
      thresholds=[THRESHOLD], eval_config=eval_config,
      model_name=model_name, output_name=output_name,
      example_weighted=example_weighted,
      extract_label_prediction_and_weight=label_prediction_weight)


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


class MultiClassConfusionMatrixPlot(_FromMatrices):
  """TFMA's multi-class confusion-matrix plot (same name, same output)."""

  def __init__(self, name: str = PLOT_NAME):
    super().__init__(tfma.metrics.PlotKey, _plot, name)


def _plot(key: tfma.metrics.PlotKey, matrices_key: tfma.metrics.MetricKey,
          metrics: Dict[tfma.metrics.MetricKey, Any]) -> Dict[tfma.metrics.PlotKey, Any]:
  return {key: metrics[matrices_key].to_proto()
                 .multi_class_confusion_matrix_at_thresholds}
