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


MARGIN_METRIC = "AccuracyMargin"  # components.tfma_metrics' class
_TFMA_METRICS = "components.tfma_metrics"


def writer_slices():
  """The test split's two writer populations, each a slice (SD-3, SD-1)."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  return [tfma.SlicingSpec(feature_values={features.WRITER_KEY: w})
          for w in features.WRITERS]


def eval_config(min_accuracy: float, max_regression: float,
                min_class_accuracy: float = 0.0,
                max_class_regression: float = 1.0,
                max_writer_gap: Optional[float] = None,
                simpler_accuracy: Optional[float] = None,
                min_margin_over_simpler: float = 0.0):
  """Accuracy overall, per label value and per writer population, counts,
  and the confusion matrix.

  Blessing needs the overall accuracy to reach `min_accuracy` and every
  digit's to reach `min_class_accuracy`; when a previously blessed model
  exists, the overall accuracy may not fall more than `max_regression`
  below that baseline's, nor any digit's more than `max_class_regression`
  below that digit's. With `max_writer_gap`, the accuracies on the SD-3 and
  SD-1 writers may differ by at most that (a cross-slice bound: set it only
  when the test split holds both). With `simpler_accuracy` (a simpler
  model's), the accuracy must beat it by `min_margin_over_simpler`. TFMA
  checks each bound on its own slice, so a refusal names the slice
  (`label=5`, `writer=SD-1`).
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
  per_writer = tfma.SlicingSpec(feature_keys=[features.WRITER_KEY])
  sd3, sd1 = writer_slices()
  # TFMA's cross-slice value is the baseline slice's less the other's.
  writers = tfma.CrossSlicingSpec(baseline_spec=sd3, slicing_specs=[sd1])
  gap = ([tfma.CrossSliceMetricThreshold(
      cross_slicing_specs=[writers],
      threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
          lower_bound={"value": -max_writer_gap},
          upper_bound={"value": max_writer_gap})))]
         if max_writer_gap is not None else [])
  metrics = [
      tfma.MetricConfig(class_name="ExampleCount"),
      tfma.MetricConfig(
          class_name="MultiClassAccuracy", module=_TFMA_METRICS,
          # Each bound scoped to its slices: a plain `threshold` would
          # apply the overall bound to each digit too.
          per_slice_thresholds=[
              bound(tfma.SlicingSpec(), min_accuracy, max_regression),
              bound(per_digit, min_class_accuracy, max_class_regression)],
          cross_slice_thresholds=gap),
      tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot",
                        module=_TFMA_METRICS),
  ]
  if simpler_accuracy is not None:
    metrics.append(tfma.MetricConfig(
        class_name=MARGIN_METRIC, module=_TFMA_METRICS,
        config=json.dumps({"over": simpler_accuracy}),
        per_slice_thresholds=[tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec()],
            threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                lower_bound={"value": min_margin_over_simpler})))]))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          signature_name=features.EXAMPLES_SIGNATURE,
          label_key=features.LABEL_KEY,
          prediction_key=features.PROBABILITIES_KEY,
          preprocessing_function_names=[])],
      slicing_specs=[tfma.SlicingSpec(), per_digit, per_writer],
      cross_slicing_specs=[writers],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


BOUND_NAMES = ("min_accuracy", "max_regression", "min_class_accuracy",
               "max_class_regression", "max_writer_gap", "simpler_accuracy",
               "min_margin_over_simpler")


def thresholds(config: Any) -> Dict[str, Optional[float]]:
  """The blessing bounds in an eval config that `eval_config` made (as JSON).

  {"min_accuracy", "max_regression", "min_class_accuracy",
  "max_class_regression", "max_writer_gap", "simpler_accuracy",
  "min_margin_over_simpler"}; None where the config has no such bound (an
  older run's config has the overall ones only).
  """
  if isinstance(config, str):
    config = json.loads(config)
  found: Dict[str, Optional[float]] = dict.fromkeys(BOUND_NAMES)
  for spec in (config or {}).get("metrics_specs", []):
    for metric in spec.get("metrics", []):
      if metric.get("class_name") == MARGIN_METRIC:
        found["simpler_accuracy"] = float(json.loads(metric.get("config") or "{}")
                                          .get("over", "nan"))
        for per_slice in metric.get("per_slice_thresholds", []):
          lower = per_slice.get("threshold", {}).get(
              "value_threshold", {}).get("lower_bound")
          if lower is not None:
            found["min_margin_over_simpler"] = float(lower)
        continue
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
      for cross in metric.get("cross_slice_thresholds", []):
        upper = cross.get("threshold", {}).get("value_threshold", {}).get("upper_bound")
        if upper is not None:
          found["max_writer_gap"] = float(upper)
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
  per_writer_accuracy: Dict[str, float] = dataclasses.field(default_factory=dict)
  per_writer_count: Dict[str, int] = dataclasses.field(default_factory=dict)
  # The bounds TFMA applied (its own copy of the eval config), as `thresholds`.
  bounds: Dict[str, Optional[float]] = dataclasses.field(default_factory=dict)

  @property
  def writer_gap(self) -> Optional[float]:
    """SD-3's accuracy less SD-1's (None unless both were in the test split)."""
    a, b = (self.per_writer_accuracy.get(w) for w in features.WRITERS)
    return None if a is None or b is None else a - b


CANDIDATE = "candidate"  # model names TFX's Evaluator gives TFMA
BASELINE = "baseline"


def _slice(slice_key) -> Tuple[Optional[str], Optional[str]]:
  """(column, value) of a one-feature slice; (None, None) for the overall one."""
  keys = slice_key.single_slice_keys
  if not keys:
    return None, None
  key = keys[0]
  value = (key.bytes_value.decode() if key.HasField("bytes_value")
           else str(key.int64_value))
  return key.column, value


def _where(slice_key) -> str:
  return ", ".join(f"{k.column}={k.int64_value or k.bytes_value.decode() or k.float_value}"
                   for k in slice_key.single_slice_keys) or "overall"


def _describe_failure(per_slice, failure) -> str:
  if per_slice.HasField("cross_slice_key"):
    cross = per_slice.cross_slice_key
    where = f"{_where(cross.baseline_slice_key)} vs {_where(cross.comparison_slice_key)}"
  else:
    where = _where(per_slice.slice_key)
  what = failure.metric_key.name + (" (change vs baseline)"
                                    if failure.metric_key.is_diff else "")
  value = failure.metric_value.double_value.value
  return f"{what} {value:.4f} on {where} fails {failure.metric_threshold}".replace(
      "\n", " ").strip()


def applied_bounds(evaluation_uri: str) -> Dict[str, Optional[float]]:
  """The bounds in TFMA's own copy of the eval config it ran with."""
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from tensorflow_model_analysis.writers import eval_config_writer  # pylint: disable=g-import-not-at-top
  config = eval_config_writer.load_eval_run(evaluation_uri)[0]
  if config is None:
    return dict.fromkeys(BOUND_NAMES)
  return thresholds(json_format.MessageToDict(config,
                                              preserving_proto_field_name=True))


def load(evaluation_uri: str) -> Evaluation:
  """Reads the Evaluator's output: metrics, confusion matrix and validation."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top

  accuracy: Dict[Tuple[str, Optional[str], Optional[str]], float] = {}
  counts: Dict[Tuple[Optional[str], Optional[str]], int] = {}
  for record in tfma.load_metrics(evaluation_uri):
    if record.HasField("cross_slice_key"):
      continue  # the writer gap: read off the two writer slices instead
    column, name = _slice(record.slice_key)
    for kv in record.metric_keys_and_values:
      if kv.key.is_diff:
        continue
      model = kv.key.model_name or CANDIDATE
      value = kv.value.double_value.value
      if kv.key.name == ACCURACY:
        accuracy[(model, column, name)] = float(value)
      elif kv.key.name == EXAMPLE_COUNT and model == CANDIDATE:
        counts[(column, name)] = int(value)
  if (CANDIDATE, None, None) not in accuracy:
    raise ValueError(f"{evaluation_uri}: TFMA's output has no overall accuracy")

  matrix = [[0] * features.NUM_CLASSES for _ in range(features.NUM_CLASSES)]
  for record in tfma.load_plots(evaluation_uri):
    if record.slice_key.single_slice_keys or record.HasField("cross_slice_key"):
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
  failures = [_describe_failure(per_slice, f)
              for per_slice in validation.metric_validations_per_slice
              for f in per_slice.failures]

  def of(column, model=CANDIDATE):
    names = sorted(n for c, n in counts if c == column)
    return {n: accuracy[(model, column, n)] for n in names
            if (model, column, n) in accuracy}

  labels = of(features.LABEL_KEY)
  labels = {n: labels[n] for n in sorted(labels, key=int)}
  writers = of(features.WRITER_KEY)
  return Evaluation(
      accuracy=accuracy[(CANDIDATE, None, None)],
      example_count=counts.get((None, None), 0),
      per_class_accuracy=labels,
      per_class_count={n: counts[(features.LABEL_KEY, n)] for n in labels},
      confusion_matrix=matrix,
      baseline_accuracy=accuracy.get((BASELINE, None, None)),
      baseline_per_class_accuracy=of(features.LABEL_KEY, BASELINE) or None,
      blessed=bool(validation.validation_ok),
      failures=failures,
      per_writer_accuracy={w: writers[w] for w in features.WRITERS if w in writers},
      per_writer_count={w: counts[(features.WRITER_KEY, w)]
                        for w in features.WRITERS if w in writers},
      bounds=applied_bounds(evaluation_uri))


def _writers(result: Evaluation) -> str:
  return ", ".join(f"{w} {a:.4f} ({result.per_writer_count.get(w, 0):,} records)"
                   for w, a in result.per_writer_accuracy.items())


def blessing_reason(result: Evaluation,
                    bounds: Optional[Dict[str, Optional[float]]] = None,
                    baseline_name: str = "the last blessed model's") -> str:
  """Why TFMA blessed the model or not, against its bounds (by default the
  ones TFMA applied), naming each slice that failed (the summary, `runs`,
  `lineage` and the report say this)."""
  bounds = bounds if bounds is not None else result.bounds
  low, regression = bounds.get("min_accuracy"), bounds.get("max_regression")
  class_low = bounds.get("min_class_accuracy")
  class_regression = bounds.get("max_class_regression")
  gap_bound, gap = bounds.get("max_writer_gap"), result.writer_gap
  simpler, margin = bounds.get("simpler_accuracy"), bounds.get("min_margin_over_simpler")
  base = result.baseline_accuracy
  if result.blessed:
    text = f"accuracy {result.accuracy:.4f} >= {low}"
    if class_low is not None and result.per_class_accuracy:
      worst = min(result.per_class_accuracy, key=result.per_class_accuracy.get)
      text += (f", every digit >= {class_low} (lowest: digit {worst}, "
               f"{result.per_class_accuracy[worst]:.4f})")
    if gap_bound is not None and gap is not None:
      text += f", writers within {gap_bound} of each other ({_writers(result)})"
    elif result.per_writer_accuracy:
      text += (f", writers not gated (the test split holds "
               f"{' and '.join(result.per_writer_accuracy)} only)")
    if simpler is not None:
      text += (f", {result.accuracy - simpler:+.4f} over the basic model's "
               f"{simpler:.4f} (margin >= {margin})")
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
  if gap_bound is not None and gap is not None and abs(gap) > gap_bound:
    reasons.append(f"writers: the accuracies differ by {abs(gap):.4f}, more than the "
                   f"bound {gap_bound} ({_writers(result)})")
  if (simpler is not None and margin is not None
      and result.accuracy - simpler < margin):
    reasons.append(f"accuracy {result.accuracy:.4f} does not beat the basic model's "
                   f"{simpler:.4f} by {margin} ({result.accuracy - simpler:+.4f})")
  return "; ".join(reasons or result.failures or ["TFMA validation failed"])
