"""The evaluation report: a terminal table, pictures, one HTML page, a notebook.

Figures come from the run's records: TFMA's output (accuracy, counts,
confusion matrix; precision is read off TFMA's matrix), the summary (blessing,
times, data hashes), StatisticsGen and ExampleValidator. The pictures of
predictions need predictions of their own: the report runs the trained model
on the eval split and refuses to draw them if its confusion matrix differs
from TFMA's by a single example.
"""

import os
import shutil
from typing import Dict, Tuple

from results import html_page, notebook, pictures
from results.report_text import compare, table
from results.run_view import (Predictions, ReportError, RunView, check_agreement,
                              gather)

REPORT_DIR = "report"
RUNS_DIR = "runs"  # report/runs/<run>.html: each run's page, kept (the served page links them)
__all__ = ["Predictions", "ReportError", "RunView", "check_agreement", "compare",
           "gather", "generate", "table"]


def kept_path(run_dir: str, run: str) -> str:
  """Where run `run`'s report page is kept (the served page links it)."""
  return os.path.join(run_dir, REPORT_DIR, RUNS_DIR, f"{run}.html")


def generate(run_dir: str) -> Tuple[str, Dict[str, str]]:
  """Writes `<run_dir>/report/`; returns the terminal table and the files."""
  view = gather(run_dir)
  out = os.path.join(run_dir, REPORT_DIR)
  os.makedirs(out, exist_ok=True)
  drawn = {"confusion_matrix": pictures.plot_confusion_matrix(
      view.evaluation.confusion_matrix, os.path.join(out, "confusion_matrix.png"))}
  if view.predictions is not None:
    drawn["predictions"] = pictures.plot_predictions(
        view.predictions, os.path.join(out, "predictions.png"))
    drawn["mistakes"] = pictures.plot_mistakes(
        view.predictions, os.path.join(out, "mistakes.png"))
  if view.calibration is not None:
    drawn["calibration"] = pictures.plot_calibration(
        view.calibration, os.path.join(out, "calibration.png"))
  if view.history:
    drawn["training"] = pictures.plot_training(
        view.history, os.path.join(out, "training.png"))
  text = table(view)
  with open(os.path.join(out, "report.txt"), "w", encoding="utf-8") as f:
    f.write(text + "\n")
  files = dict(drawn)
  files["html"] = html_page.write_html(view, drawn, os.path.join(out, "report.html"))
  run = view.summary.get("run_id")
  if run and "/" not in run and not run.startswith("."):
    kept = kept_path(run_dir, run)
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    shutil.copyfile(files["html"], kept + ".tmp")
    os.replace(kept + ".tmp", kept)
    files["kept_html"] = kept
  files["notebook"] = notebook.write_notebook(
      view, os.path.join(out, "notebooks", "evaluation.ipynb"))
  return text, files
