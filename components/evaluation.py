"""The TFMA evaluation: what is measured, what blesses, and reading it back.

Everything the summary and the reports print comes from TFMA's output read
here, never recomputed another way.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Tuple

from components import features

ACCURACY = "accuracy"  # components.tfma_metrics.MultiClassAccuracy
EXAMPLE_COUNT = "example_count"


def eval_config(min_accuracy: float, max_regression: float):
  """Accuracy overall and per label value, counts, and the confusion matrix.

  Blessing needs the overall accuracy to reach `min_accuracy` and, when a
  previously blessed model exists, not to fall more than `max_regression`
  below that baseline's accuracy.
  """
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          signature_name=features.EXAMPLES_SIGNATURE,
          label_key=features.LABEL_KEY,
          prediction_key=features.PROBABILITIES_KEY,
          preprocessing_function_names=[])],
      slicing_specs=[tfma.SlicingSpec(),
                     tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          tfma.MetricConfig(
              class_name="MultiClassAccuracy", module="components.tfma_metrics",
              # Scoped to the overall slice: a plain `threshold` would also
              # apply to each digit's slice, failing models whose overall
              # accuracy passes but one digit's does not.
              per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                  slicing_specs=[tfma.SlicingSpec()],
                  threshold=tfma.MetricThreshold(
                      value_threshold=tfma.GenericValueThreshold(
                          lower_bound={"value": min_accuracy}),
                      change_threshold=tfma.GenericChangeThreshold(
                          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                          absolute={"value": -max_regression})))]),
          tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot",
                            module="components.tfma_metrics"),
      ])])


def thresholds(config: Any) -> Dict[str, Optional[float]]:
  """The blessing bounds in an eval config that `eval_config` made (as JSON).

  {"min_accuracy", "max_regression"}; None where the config has no such bound.
  """
  if isinstance(config, str):
    config = json.loads(config)
  found: Dict[str, Optional[float]] = {"min_accuracy": None, "max_regression": None}
  for spec in (config or {}).get("metrics_specs", []):
    for metric in spec.get("metrics", []):
      for per_slice in metric.get("per_slice_thresholds", []):
        threshold = per_slice.get("threshold", {})
        lower = threshold.get("value_threshold", {}).get("lower_bound")
        change = threshold.get("change_threshold", {}).get("absolute")
        if lower is not None:
          found["min_accuracy"] = float(lower)
        if change is not None:
          found["max_regression"] = -float(change)
  return found


@dataclasses.dataclass
class Evaluation:
  """TFMA's results for one Evaluator run, in plain Python."""

  accuracy: float
  example_count: int
  per_class_accuracy: Dict[str, float]  # "0".."9"
  per_class_count: Dict[str, int]
  confusion_matrix: List[List[int]]  # [true][predicted]
  baseline_accuracy: Optional[float]
  baseline_per_class_accuracy: Optional[Dict[str, float]]
  blessed: bool
  failures: List[str]  # why not blessed, as sentences


CANDIDATE = "candidate"  # model names TFX's Evaluator gives TFMA
BASELINE = "baseline"


def _slice_name(slice_key) -> Optional[str]:
  """None for the overall slice, else the label value as a string."""
  keys = slice_key.single_slice_keys
  if not keys:
    return None
  return str(keys[0].int64_value)


def _describe_failure(slice_key, failure) -> str:
  where = ", ".join(f"{k.column}={k.int64_value or k.bytes_value.decode() or k.float_value}"
                    for k in slice_key.single_slice_keys) or "overall"
  what = failure.metric_key.name + (" (change vs baseline)"
                                    if failure.metric_key.is_diff else "")
  value = failure.metric_value.double_value.value
  return f"{what} {value:.4f} on {where} fails {failure.metric_threshold}".replace(
      "\n", " ").strip()


def load(evaluation_uri: str) -> Evaluation:
  """Reads the Evaluator's output: metrics, confusion matrix and validation."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top

  accuracy: Dict[Tuple[str, Optional[str]], float] = {}
  counts: Dict[Optional[str], int] = {}
  for record in tfma.load_metrics(evaluation_uri):
    name = _slice_name(record.slice_key)
    for kv in record.metric_keys_and_values:
      if kv.key.is_diff:
        continue
      model = kv.key.model_name or CANDIDATE
      value = kv.value.double_value.value
      if kv.key.name == ACCURACY:
        accuracy[(model, name)] = float(value)
      elif kv.key.name == EXAMPLE_COUNT and model == CANDIDATE:
        counts[name] = int(value)
  if (CANDIDATE, None) not in accuracy:
    raise ValueError(f"{evaluation_uri}: TFMA's output has no overall accuracy")

  matrix = [[0] * features.NUM_CLASSES for _ in range(features.NUM_CLASSES)]
  for record in tfma.load_plots(evaluation_uri):
    if record.slice_key.single_slice_keys:
      continue
    for kv in record.plot_keys_and_values:
      if (kv.key.model_name or CANDIDATE) != CANDIDATE:
        continue
      plot = kv.value.multi_class_confusion_matrix_at_thresholds
      for m in plot.matrices[:1]:
        for entry in m.entries:
          if entry.predicted_class_id >= 0:
            matrix[entry.actual_class_id][entry.predicted_class_id] = int(
                entry.num_weighted_examples)

  validation = tfma.load_validation_result(evaluation_uri)
  failures = [_describe_failure(per_slice.slice_key, f)
              for per_slice in validation.metric_validations_per_slice
              for f in per_slice.failures]
  labels = sorted((n for n in counts if n is not None), key=int)
  return Evaluation(
      accuracy=accuracy[(CANDIDATE, None)],
      example_count=counts.get(None, 0),
      per_class_accuracy={n: accuracy[(CANDIDATE, n)] for n in labels},
      per_class_count={n: counts[n] for n in labels},
      confusion_matrix=matrix,
      baseline_accuracy=accuracy.get((BASELINE, None)),
      baseline_per_class_accuracy=(
          {n: accuracy[(BASELINE, n)] for n in labels
           if (BASELINE, n) in accuracy} or None),
      blessed=bool(validation.validation_ok),
      failures=failures)
