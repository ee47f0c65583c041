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


def eval_config(min_accuracy: float, max_regression: float,
                min_class_accuracy: float = 0.0,
                max_class_regression: float = 1.0):
  """Accuracy overall and per label value, counts, and the confusion matrix.

  Blessing needs the overall accuracy to reach `min_accuracy` and every
  digit's to reach `min_class_accuracy`; when a previously blessed model
  exists, the overall accuracy may not fall more than `max_regression`
  below that baseline's, nor any digit's more than `max_class_regression`
  below that digit's. TFMA checks each bound on its own slice, so a
  refusal names the slice (`label=5`).
  """
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top

  def bound(slicing_spec, low, regression):
    return tfma.PerSliceMetricThreshold(
        slicing_specs=[slicing_spec],
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": low}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -regression})))

  per_digit = tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          signature_name=features.EXAMPLES_SIGNATURE,
          label_key=features.LABEL_KEY,
          prediction_key=features.PROBABILITIES_KEY,
          preprocessing_function_names=[])],
      slicing_specs=[tfma.SlicingSpec(), per_digit],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          tfma.MetricConfig(
              class_name="MultiClassAccuracy", module="components.tfma_metrics",
              # Each bound scoped to its slices: a plain `threshold` would
              # apply the overall bound to each digit too.
              per_slice_thresholds=[
                  bound(tfma.SlicingSpec(), min_accuracy, max_regression),
                  bound(per_digit, min_class_accuracy, max_class_regression)]),
          tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot",
                            module="components.tfma_metrics"),
      ])])


BOUND_NAMES = ("min_accuracy", "max_regression", "min_class_accuracy",
               "max_class_regression")


def thresholds(config: Any) -> Dict[str, Optional[float]]:
  """The blessing bounds in an eval config that `eval_config` made (as JSON).

  {"min_accuracy", "max_regression", "min_class_accuracy",
  "max_class_regression"}; None where the config has no such bound (an
  older run's config has the overall ones only).
  """
  if isinstance(config, str):
    config = json.loads(config)
  found: Dict[str, Optional[float]] = dict.fromkeys(BOUND_NAMES)
  for spec in (config or {}).get("metrics_specs", []):
    for metric in spec.get("metrics", []):
      for per_slice in metric.get("per_slice_thresholds", []):
        slices = per_slice.get("slicing_specs", [{}])
        prefix = "class_" if any(s.get("feature_keys") for s in slices) else ""
        threshold = per_slice.get("threshold", {})
        lower = threshold.get("value_threshold", {}).get("lower_bound")
        change = threshold.get("change_threshold", {}).get("absolute")
        if lower is not None:
          found[f"min_{prefix}accuracy"] = float(lower)
        if change is not None:
          found[f"max_{prefix}regression"] = -float(change)
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


def blessing_reason(result: Evaluation, bounds: Dict[str, Optional[float]],
                    baseline_name: str = "the last blessed model's") -> str:
  """Why TFMA blessed the model or not, against its bounds, naming each
  slice that failed (the summary, `runs`, `lineage` and the report say this)."""
  low, regression = bounds.get("min_accuracy"), bounds.get("max_regression")
  class_low = bounds.get("min_class_accuracy")
  class_regression = bounds.get("max_class_regression")
  base = result.baseline_accuracy
  if result.blessed:
    text = f"accuracy {result.accuracy:.4f} >= {low}"
    if class_low is not None and result.per_class_accuracy:
      worst = min(result.per_class_accuracy, key=result.per_class_accuracy.get)
      text += (f", every digit >= {class_low} (lowest: digit {worst}, "
               f"{result.per_class_accuracy[worst]:.4f})")
    if base is not None:
      text += f", within {regression} of {baseline_name} {base:.4f}"
      if class_regression is not None and result.baseline_per_class_accuracy:
        text += f" and each digit within {class_regression} of its own"
    else:
      text += " (no blessed model to compare with yet)"
    return text
  reasons: List[str] = []
  if low is not None and result.accuracy < low:
    reasons.append(f"accuracy {result.accuracy:.4f} is below the bound {low}")
  if base is not None and regression is not None and result.accuracy - base < -regression:
    reasons.append(f"accuracy {result.accuracy:.4f} is more than {regression} below "
                   f"{baseline_name} {base:.4f}")
  for digit, value in sorted(result.per_class_accuracy.items(), key=lambda kv: int(kv[0])):
    if class_low is not None and value < class_low:
      reasons.append(f"digit {digit}: accuracy {value:.4f} is below the per-digit "
                     f"bound {class_low}")
    old = (result.baseline_per_class_accuracy or {}).get(digit)
    if old is not None and class_regression is not None and value - old < -class_regression:
      reasons.append(f"digit {digit}: accuracy {value:.4f} is more than "
                     f"{class_regression} below {baseline_name} {old:.4f}")
  return "; ".join(reasons or result.failures or ["TFMA validation failed"])
