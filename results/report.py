"""The evaluation report: a terminal table, pictures, one HTML page, a notebook.

Figures come from the run's records: TFMA's output (accuracy, counts,
confusion matrix; precision is read off TFMA's matrix), the summary (blessing,
times, data hashes), StatisticsGen and ExampleValidator. The pictures of
predictions need predictions of their own: the report runs the trained model
on the eval split and refuses to draw them if its confusion matrix differs
from TFMA's by a single example.
"""

import base64
import dataclasses
import glob
import html
import importlib.metadata
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from components import evaluation, features
from components.data_validation import STATS_FILE, describe_anomalies
from components.trainer.run import HISTORY_FILE
from mnist_tfx import defaults

REPORT_DIR = "report"
PACKAGES = ("tfx", "tensorflow", "keras", "tensorflow-transform",
            "tensorflow-model-analysis", "tensorflow-data-validation",
            "apache-beam")


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


def _check_agreement(predictions: Predictions, matrix: List[List[int]]) -> None:
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
    predictions = predict_eval(os.path.join(artifacts["Trainer.model"], "Format-Serving"),
                               artifacts["IdxExampleGen.examples"])
    _check_agreement(predictions, result.confusion_matrix)
  return RunView(summary=summary, evaluation=result,
                 precision=_precision(result.confusion_matrix),
                 confusions=_confusions(result.confusion_matrix),
                 history=history,
                 statistics=_statistics(artifacts["StatisticsGen.statistics"]),
                 anomalies=anomalies, predictions=predictions)


# --- the terminal table --------------------------------------------------------

def table(view: RunView) -> str:
  e, s = view.evaluation, view.summary
  baseline = e.baseline_per_class_accuracy or {}
  lines = [f"Model {s['model']} (hidden layers {s['hyperparameters']['hidden_units']}, "
           f"{s.get('train_examples')} train examples): accuracy {e.accuracy:.4f} on "
           f"{e.example_count} eval examples" + (f" (last blessed model: {e.baseline_accuracy:.4f}, "
                              f"{e.accuracy - e.baseline_accuracy:+.4f})"
                              if e.baseline_accuracy is not None else "")]
  header = f"{'digit':>5}  {'accuracy':>8}  {'precision':>9}  {'count':>5}"
  if baseline:
    header += f"  {'baseline':>8}  {'change':>7}"
  lines.append(header)
  for d, acc in e.per_class_accuracy.items():
    row = (f"{d:>5}  {acc:8.4f}  {view.precision[d]:9.4f}  "
           f"{e.per_class_count[d]:5d}")
    if d in baseline:
      row += f"  {baseline[d]:8.4f}  {acc - baseline[d]:+7.4f}"
    lines.append(row)
  lines.append("Most frequent confusions: " + ", ".join(
      f"{t}->{p} ({n})" for t, p, n in view.confusions) if view.confusions
               else "Most frequent confusions: none")
  lines.append(f"Blessed: {'yes' if s['blessed'] else 'no'} - {s['blessing']}")
  return "\n".join(lines)


# --- pictures --------------------------------------------------------------------

def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=100, bbox_inches="tight")
  _pyplot().close(fig)
  return path


def plot_confusion_matrix(matrix: List[List[int]], path: str) -> str:
  import seaborn as sns  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  counts = np.asarray(matrix)
  diagonal = np.eye(len(counts), dtype=bool)
  fig, ax = plt.subplots(figsize=(8, 7))
  # Two scales: one colour scale for all cells would be set by the diagonal
  # (~1,000) and leave every error cell (~1-12) near-white.
  sns.heatmap(counts, mask=diagonal, annot=True, fmt="d", cmap="Reds", ax=ax,
              vmin=0, vmax=max(1, int(counts[~diagonal].max(initial=0))),
              cbar_kws={"label": "errors (off the diagonal)"})
  sns.heatmap(counts, mask=~diagonal, annot=True, fmt="d", cmap="Greys", ax=ax,
              vmin=0, vmax=max(1, int(counts.max(initial=0))) * 3, cbar=False)
  ax.set_xlabel("Predicted label")
  ax.set_ylabel("True label")
  ax.set_title("Confusion matrix (TFMA, eval split)")
  return _save(fig, path)


def plot_grid(images: np.ndarray, titles: List[str], colors: List[str],
              path: str, title: str, cols: int = 5) -> str:
  plt = _pyplot()
  rows = max(1, -(-len(images) // cols))
  # Constrained layout: no blank band under the title or between rows.
  fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.85 * rows + 0.3),
                           squeeze=False, layout="constrained")
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, text, color in zip(axes.flat, images, titles, colors):
    ax.imshow(image, cmap="gray_r")
    ax.set_title(text, color=color, fontsize=8)
  fig.suptitle(title)
  return _save(fig, path)


def plot_predictions(p: Predictions, path: str, n: int = 25) -> str:
  k = min(n, len(p.labels))
  return plot_grid(
      p.images[:k],
      [f"pred {p.predicted[i]} / true {p.labels[i]}" for i in range(k)],
      ["green" if p.predicted[i] == p.labels[i] else "red" for i in range(k)],
      path, "Sample predictions (eval split)")


def plot_mistakes(p: Predictions, path: str, n: int = 20) -> str:
  wrong = np.flatnonzero(p.predicted != p.labels)
  wrong = wrong[np.argsort(-p.confidence[wrong], kind="stable")][:n]
  if not len(wrong):
    return plot_grid(np.zeros((0,) + features.IMAGE_SHAPE), [], [], path,
                     "No wrong predictions on the eval split")
  return plot_grid(
      p.images[wrong],
      [f"pred {p.predicted[i]} ({p.confidence[i]:.2f}) / true {p.labels[i]}"
       for i in wrong], ["red"] * len(wrong), path,
      "Most confident wrong predictions")


def plot_training(history: Dict[str, Any], path: str) -> str:
  plt = _pyplot()
  epochs_data = history["epochs"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in zip(axes, ("loss", "accuracy")):
    for key, label in ((metric, "train"), (f"val_{metric}", "eval")):
      if key in epochs_data:
        values = epochs_data[key]
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch")
    ax.legend()
  return _save(fig, path)


# --- HTML and notebook -------------------------------------------------------------

def _img(path: str, alt: str, element_id: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode()
  return f'<img id="{element_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _rows(rows: List[List[Any]]) -> str:
  return "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                 + "</tr>" for r in rows)


def _number(v: float) -> str:
  return f"{int(v):,}" if float(v).is_integer() else f"{v:.4g}"


def _versions() -> Dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def write_html(view: RunView, pictures: Dict[str, str], path: str) -> str:
  e, s = view.evaluation, view.summary
  baseline = e.baseline_per_class_accuracy or {}
  digits = [[d, f"{a:.4f}", f"{view.precision[d]:.4f}", e.per_class_count[d]] +
            ([f"{baseline[d]:.4f}", f"{a - baseline[d]:+.4f}"] if d in baseline else [])
            for d, a in e.per_class_accuracy.items()]
  digit_head = ["digit", "accuracy (recall)", "precision", "examples"] + (
      ["baseline accuracy", "change"] if baseline else [])
  stats_rows = [[split, feature] + [_number(v) for v in values.values()]
                for split, by_feature in view.statistics.items()
                for feature, values in by_feature.items() if feature != "examples"]
  stats_head = ["split", "feature", "present", "values/example", "min", "max",
                "mean", "std", "zeros"]
  anomalies = "".join(f"<li>[{html.escape(split)}] {html.escape(line)}</li>"
                      for split, lines in view.anomalies.items() for line in lines)
  facts = [["run", s.get("run_id")], ["status", s.get("status")],
           ["total seconds", s.get("total_seconds")],
           ["pushed", s.get("pushed_model_path") or "nothing"]]
  facts += [[f"hyperparameter {k}", v] for k, v in s["hyperparameters"].items()]
  facts += [[f"SHA-256 (raw, decompressed bytes) of {k}", v]
            for k, v in (s.get("data_sha256") or {}).items()]
  facts += [[f"version {k}", v] for k, v in _versions().items()]
  facts += [[f"seconds {k}", f"{v} ({s['component_status'].get(k)})"]
            for k, v in s.get("component_seconds", {}).items()]
  sections = [
      f"<h1>mnist-tfx evaluation: {html.escape(s['model'])}</h1>",
      f'<p id="accuracy">Accuracy <b>{e.accuracy:.4f}</b> on {e.example_count} eval '
      "examples" + (f"; last blessed model {e.baseline_accuracy:.4f}"
                    if e.baseline_accuracy is not None else "") + "</p>",
      f'<p id="blessing">Blessed: <b>{"yes" if s["blessed"] else "no"}</b> - '
      f"{html.escape(str(s['blessing']))}</p>",
      "<h2>Per digit</h2><table id=\"per-digit\"><tr>" +
      "".join(f"<th>{h}</th>" for h in digit_head) + "</tr>" + _rows(digits) + "</table>",
      "<h2>Most frequent confusions</h2><table id=\"confusions\"><tr><th>true</th>"
      "<th>predicted</th><th>count</th></tr>" + _rows([list(c) for c in view.confusions]) +
      "</table>",
      "<h2>Confusion matrix</h2>" + _img(pictures["confusion_matrix"],
                                         "confusion matrix", "confusion-matrix"),
  ]
  for key, title in (("training", "Training"), ("predictions", "Sample predictions"),
                     ("mistakes", "Most confident mistakes")):
    if key in pictures:
      sections.append(f"<h2>{title}</h2>" + _img(pictures[key], title, key))
  sections += [
      "<h2>Data validation</h2><table id=\"statistics\"><tr>" +
      "".join(f"<th>{h}</th>" for h in stats_head) + "</tr>" + _rows(stats_rows) + "</table>",
      "<p>Anomalies: " + (f"<ul>{anomalies}</ul>" if anomalies else "none") + "</p>",
      "<h2>Run facts</h2><table id=\"facts\">" + _rows(facts) + "</table>",
  ]
  page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<title>mnist-tfx evaluation</title><style>body{font-family:sans-serif;"
          "margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
          "#facts td{text-align:left;font-family:monospace}"
          "img{max-width:100%}</style></head><body>" + "".join(sections) +
          "</body></html>")
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path


def write_notebook(view: RunView, path: str) -> str:
  """A notebook over the run's TFMA and TFDV output, for users with Jupyter.

  It shows tables (pandas) and matplotlib figures, which render in any
  Jupyter (JupyterLab included), rather than TFMA's and TFDV's widgets,
  which need the classic notebook's extensions. With a baseline, TFX's
  Evaluator names the models, so the candidate is asked for by name.
  """
  artifacts = view.summary["artifacts"]
  candidate = (evaluation.CANDIDATE
               if view.evaluation.baseline_accuracy is not None else None)

  def code(src: str) -> Dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": None,
            "outputs": [], "source": src}

  cells = [
      {"cell_type": "markdown", "metadata": {}, "source":
       "# mnist-tfx evaluation\nTFMA's metrics per digit, its confusion matrix and "
       "TFDV's statistics per split, for the run this report was made from. Open "
       "it with `.venv/bin/jupyter lab " + path + "` (or `jupyter notebook`)."},
      code("import os, warnings\n"
           "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
           "warnings.simplefilter('ignore')  # TF/TFMA deprecation notices\n"
           "import matplotlib.pyplot as plt\n"
           "import pandas as pd\n"
           "import tensorflow_model_analysis as tfma\n"
           "import tensorflow_data_validation as tfdv\n"
           f"EVALUATION = {artifacts['Evaluator.evaluation']!r}\n"
           f"STATISTICS = {artifacts['StatisticsGen.statistics']!r}\n"
           f"MODEL_NAME = {candidate!r}  # 'candidate' when compared with a baseline"),
      code("result = tfma.load_eval_result(EVALUATION, model_name=MODEL_NAME)\n"
           "rows = []\n"
           "for slice_key, metrics in result.slicing_metrics:\n"
           "  values = metrics[''][''] if '' in metrics else next(iter(metrics.values()))['']\n"
           "  rows.append({'slice': dict(slice_key).get('label', 'overall'),\n"
           "               'accuracy': values['accuracy']['doubleValue'],\n"
           "               'examples': values['example_count']['doubleValue']})\n"
           "pd.DataFrame(rows).set_index('slice')"),
      code("from components import evaluation\n"
           "e = evaluation.load(EVALUATION)\n"
           "fig, ax = plt.subplots(figsize=(6, 5))\n"
           "ax.imshow(e.confusion_matrix, cmap='Blues')\n"
           "for (i, j), n in pd.DataFrame(e.confusion_matrix).stack().items():\n"
           "  ax.text(j, i, n, ha='center', va='center', fontsize=7)\n"
           "ax.set_xlabel('predicted'); ax.set_ylabel('true')\n"
           "ax.set_title(f'accuracy {e.accuracy:.4f}')\n"
           "plt.show()"),
      code("def stats(split):\n"
           "  s = tfdv.load_stats_binary(f'{STATISTICS}/Split-{split}/FeatureStats.pb')\n"
           "  return pd.DataFrame([{\n"
           "      'split': split, 'feature': '.'.join(f.path.step),\n"
           "      'min': f.num_stats.min, 'max': f.num_stats.max,\n"
           "      'mean': f.num_stats.mean, 'std': f.num_stats.std_dev,\n"
           "      'zeros': f.num_stats.num_zeros}\n"
           "      for f in s.datasets[0].features])\n"
           "pd.concat([stats('train'), stats('eval')]).set_index(['split', 'feature'])"),
  ]
  notebook = {"cells": cells, "metadata": {"kernelspec": {
      "name": "python3", "display_name": "Python 3", "language": "python"}},
              "nbformat": 4, "nbformat_minor": 5}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(notebook, f, indent=1)
  return path


def generate(run_dir: str) -> Tuple[str, Dict[str, str]]:
  """Writes `<run_dir>/report/`; returns the terminal table and the files."""
  view = gather(run_dir)
  out = os.path.join(run_dir, REPORT_DIR)
  os.makedirs(out, exist_ok=True)
  pictures = {"confusion_matrix": plot_confusion_matrix(
      view.evaluation.confusion_matrix, os.path.join(out, "confusion_matrix.png"))}
  if view.predictions is not None:
    pictures["predictions"] = plot_predictions(
        view.predictions, os.path.join(out, "predictions.png"))
    pictures["mistakes"] = plot_mistakes(view.predictions,
                                         os.path.join(out, "mistakes.png"))
  if view.history:
    pictures["training"] = plot_training(view.history,
                                         os.path.join(out, "training.png"))
  text = table(view)
  with open(os.path.join(out, "report.txt"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  files = dict(pictures)
  files["html"] = write_html(view, pictures, os.path.join(out, "report.html"))
  files["notebook"] = write_notebook(
      view, os.path.join(out, "notebooks", "evaluation.ipynb"))
  return text, files


def compare(run_a: str, run_b: str) -> str:
  """Two runs side by side, overall and per digit (TFMA's figures)."""
  a, b = (gather(r, with_predictions=False) for r in (run_a, run_b))
  name_a = f"A: {a.summary['model']}"
  name_b = f"B: {b.summary['model']}"
  lines = [f"A = {run_a}", f"B = {run_b}",
           f"{'':>8}  {name_a:>12}  {name_b:>12}  {'B - A':>8}",
           f"{'overall':>8}  {a.evaluation.accuracy:12.4f}  "
           f"{b.evaluation.accuracy:12.4f}  "
           f"{b.evaluation.accuracy - a.evaluation.accuracy:+8.4f}"]
  for d, acc_a in a.evaluation.per_class_accuracy.items():
    acc_b = b.evaluation.per_class_accuracy.get(d, float("nan"))
    lines.append(f"{'digit ' + d:>8}  {acc_a:12.4f}  {acc_b:12.4f}  {acc_b - acc_a:+8.4f}")
  return "\n".join(lines)
