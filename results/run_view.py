"""One finished run, read back for reporting: TFMA's results, the summary,
statistics and anomalies, and the trained model's own predictions on the eval
split (checked against TFMA's confusion matrix before anything is drawn).
"""

import dataclasses
import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from components import evaluation, features
from components.data_validation import STATS_FILE, describe_anomalies
from components.pusher import SERVING_SUBDIR
from mnist_tfx.defaults import HISTORY_FILE
from mnist_tfx import defaults
from results.calibration import Calibration, calibration


class ReportError(RuntimeError):
  """The run's outputs cannot be reported (missing, or inconsistent)."""


@dataclasses.dataclass
class Predictions:
  images: np.ndarray  # uint8 [N, 28, 28]
  labels: np.ndarray  # [N]
  predicted: np.ndarray  # [N]
  confidence: np.ndarray  # probability of the predicted class, [N]


@dataclasses.dataclass
class RunView:
  """Everything the report shows about one run."""

  summary: Dict[str, Any]
  evaluation: evaluation.Evaluation
  precision: Dict[str, float]
  confusions: List[Tuple[int, int, int]]  # (true, predicted, count), top first
  history: Optional[Dict[str, Any]]
  statistics: Dict[str, Dict[str, Dict[str, float]]]  # split -> feature -> stat
  anomalies: Dict[str, List[str]]
  predictions: Optional[Predictions]
  calibration: Optional[Calibration] = None  # of the predictions


def _load_summary(run_dir: str) -> Dict[str, Any]:
  path = os.path.join(run_dir, defaults.SUMMARY_FILE)
  if not os.path.exists(path):
    raise ReportError(f"{path} does not exist: run the pipeline first "
                      "(make run), or pass --run-dir")
  with open(path) as f:
    summary = json.load(f)
  if not summary.get("artifacts", {}).get("Evaluator.evaluation"):
    raise ReportError(f"the run in {run_dir} has no evaluation "
                      f"(status: {summary.get('status')}, "
                      f"error: {summary.get('error')})")
  return summary


def _precision(matrix: List[List[int]]) -> Dict[str, float]:
  m = np.asarray(matrix)
  column = m.sum(axis=0)
  return {str(c): float(m[c, c] / column[c]) if column[c] else float("nan")
          for c in range(len(m))}


def _confusions(matrix: List[List[int]], top: int = 5) -> List[Tuple[int, int, int]]:
  pairs = [(int(m), t, p) for t, row in enumerate(matrix)
           for p, m in enumerate(row) if t != p and m]
  return [(t, p, m) for m, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))[:top]]


def _statistics(uri: str) -> Dict[str, Dict[str, Dict[str, float]]]:
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  out: Dict[str, Dict[str, Dict[str, float]]] = {}
  for split_dir in sorted(glob.glob(os.path.join(uri, "Split-*"))):
    split = os.path.basename(split_dir)[len("Split-"):]
    dataset = tfdv.load_stats_binary(os.path.join(split_dir, STATS_FILE)).datasets[0]
    out[split] = {"examples": {"count": float(dataset.num_examples)}}
    for feature in dataset.features:
      ns = feature.num_stats
      out[split][".".join(feature.path.step)] = {
          "present": float(ns.common_stats.num_non_missing),
          "values_per_example": float(ns.common_stats.avg_num_values),
          "min": ns.min, "max": ns.max, "mean": ns.mean, "std": ns.std_dev,
          "zeros": float(ns.num_zeros)}
  return out


def predict_eval(model_dir: str, examples_uri: str, batch: int = 1000) -> Predictions:
  """The trained model's predictions on the eval split, via `from_examples`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{features.EVAL_SPLIT}", "*")))
  model = tf.saved_model.load(model_dir)
  serve = model.signatures[features.EXAMPLES_SIGNATURE]
  spec = features.raw_feature_spec()
  parts = []
  for records in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch):
    parsed = tf.io.parse_example(records, spec)
    out = serve(examples=records)
    probabilities = out[features.PROBABILITIES_KEY].numpy()
    parts.append((parsed[features.IMAGE_KEY].numpy().astype(np.uint8),
                  parsed[features.LABEL_KEY].numpy(),
                  out[features.CLASSES_KEY].numpy(),
                  probabilities.max(axis=1)))
  return Predictions(*(np.concatenate(p) for p in zip(*parts)))


def check_agreement(predictions: Predictions, matrix: List[List[int]]) -> None:
  ours = np.zeros((features.NUM_CLASSES,) * 2, dtype=int)
  np.add.at(ours, (predictions.labels, predictions.predicted), 1)
  if not np.array_equal(ours, np.asarray(matrix)):
    raise ReportError("the report's predictions disagree with TFMA's confusion "
                      f"matrix ({int(np.abs(ours - np.asarray(matrix)).sum())} "
                      "cells' worth); not drawing pictures from them")


def gather(run_dir: str, with_predictions: bool = True) -> RunView:
  summary = _load_summary(run_dir)
  artifacts = summary["artifacts"]
  result = evaluation.load(artifacts["Evaluator.evaluation"])
  history = None
  history_path = os.path.join(artifacts.get("Trainer.model_run", ""), HISTORY_FILE)
  if os.path.exists(history_path):
    with open(history_path) as f:
      history = json.load(f)
  anomalies_uri = artifacts.get("ExampleValidator.anomalies")
  anomalies = describe_anomalies(anomalies_uri, [features.TRAIN_SPLIT, features.EVAL_SPLIT]
                                 ) if anomalies_uri else {}
  predictions = None
  if with_predictions:
    predictions = predict_eval(os.path.join(artifacts["Trainer.model"], SERVING_SUBDIR),
                               artifacts["IdxExampleGen.examples"])
    check_agreement(predictions, result.confusion_matrix)
  calibrated = (calibration(predictions.confidence,
                            predictions.predicted == predictions.labels)
                if predictions is not None else None)
  return RunView(summary=summary, evaluation=result, calibration=calibrated,
                 precision=_precision(result.confusion_matrix),
                 confusions=_confusions(result.confusion_matrix),
                 history=history,
                 statistics=_statistics(artifacts["StatisticsGen.statistics"]),
                 anomalies=anomalies, predictions=predictions)
