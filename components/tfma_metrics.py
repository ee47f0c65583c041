"""A native TFMA metric: multi-class accuracy (argmax of the prediction == label).

TFMA evaluates a Keras metric such as SparseCategoricalAccuracy through its
TF-metric wrapper, which builds and traces Keras metric objects per slice;
on MNIST's 11 slices that was most of the Evaluator's time. This metric is
derived from the multi-class confusion matrices that the evaluation's
MultiClassConfusionMatrixPlot already computes: TFMA de-duplicates equal
computations, so each example is counted once for both, and the accuracy is
the matrix's trace over its total, read off when the slice is done.
"""

import functools
from typing import Dict, List, Optional

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import multi_class_confusion_matrix_metrics as matrices_lib

NAME = "accuracy"
# The plot's default: the top class counts as predicted when its score is
# above 0, which a softmax's top score always is.
THRESHOLD = 0.0


class MultiClassAccuracy(tfma.metrics.Metric):
  """Fraction of examples whose highest-scoring class is the label."""

  def __init__(self, name: str = NAME):
    super().__init__(_accuracy_computations, name=name)


def _accuracy_computations(
    name: str = NAME,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    sub_keys: Optional[List[tfma.metrics.SubKey]] = None,
    example_weighted: bool = False,
) -> tfma.metrics.MetricComputations:
  del sub_keys  # Top-1 accuracy has no per-class sub keys.
  computations = []
  for model_name in model_names or [""]:
    for output_name in output_names or [""]:
      key = tfma.metrics.MetricKey(name=name, model_name=model_name,
                                   output_name=output_name,
                                   example_weighted=example_weighted)
      matrices = matrices_lib.multi_class_confusion_matrices(
          thresholds=[THRESHOLD], eval_config=eval_config,
          model_name=model_name, output_name=output_name,
          example_weighted=example_weighted)
      computations.extend(matrices)
      computations.append(tfma.metrics.DerivedMetricComputation(
          keys=[key], result=functools.partial(
              _accuracy, key, matrices[-1].keys[-1])))
  return computations


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
