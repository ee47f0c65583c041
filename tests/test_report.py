"""The evaluation report on a tiny pipeline run: every figure is TFMA's."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from mnist_tfx import cli
from results import report


@pytest.fixture(scope="module")
def run_dir(tiny_run_dir):
  return tiny_run_dir


@pytest.fixture(scope="module")
def generated(run_dir):
  return report.generate(run_dir)


@pytest.fixture(scope="module")
def view(run_dir):
  return report.gather(run_dir)


@pytest.mark.parametrize("name,min_size", [
    ("confusion_matrix", (400, 400)), ("predictions", (500, 400)),
    ("mistakes", (300, 100)), ("training", (600, 250)), ("calibration", (400, 350))])
def test_pictures_are_valid_pngs_of_sensible_size(generated, name, min_size):
  path = generated[1][name]
  assert path == os.path.join(os.path.dirname(path), f"{name}.png")
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    assert image.size[0] <= 3000 and image.size[1] <= 3000


def test_confusion_matrix_agrees_with_counts(view):
  matrix = np.asarray(view.evaluation.confusion_matrix)
  assert [int(r) for r in matrix.sum(axis=1)] == list(
      view.evaluation.per_class_count.values())
  assert matrix.sum() == view.evaluation.example_count == 100


def test_report_predictions_are_the_models_on_the_eval_files(view, tiny_data_dir):
  """Checked against sources gather() does not use: the IDX files themselves,
  and the model's pixel signature (gather reads tf.Examples via from_examples)."""
  import tensorflow as tf
  from components import features, idx, pusher
  p = view.predictions
  _, labels = idx.load(os.path.join(tiny_data_dir, "t10k-images-idx3-ubyte.gz"),
                       os.path.join(tiny_data_dir, "t10k-labels-idx1-ubyte.gz"))
  assert np.array_equal(np.bincount(p.labels, minlength=10),
                        np.bincount(labels, minlength=10))
  model = tf.saved_model.load(os.path.join(
      view.summary["artifacts"]["Trainer.model"], pusher.SERVING_SUBDIR))
  out = model.signatures[features.UINT8_SIGNATURE](images=tf.constant(p.images))
  assert np.array_equal(out[features.CLASSES_KEY].numpy(), p.predicted)


def test_disagreeing_predictions_are_refused(view):
  p = view.predictions
  wrong = report.Predictions(p.images, p.labels, (p.predicted + 1) % 10,
                             p.confidence)
  with pytest.raises(report.ReportError, match="disagree with TFMA"):
    report.check_agreement(wrong, view.evaluation.confusion_matrix)


def test_table_shows_tfma_slice_accuracy_per_digit(generated, view):
  text = generated[0]
  for digit, accuracy in view.evaluation.per_class_accuracy.items():
    row = re.search(rf"^\s+{digit}\s+(\S+)\s+(\S+)\s+(\d+)", text, re.M)
    assert row, f"no row for digit {digit}"
    assert float(row.group(1)) == pytest.approx(accuracy, abs=5e-5)
    assert int(row.group(3)) == view.evaluation.per_class_count[digit]
  assert "Most frequent confusions" in text and "Blessed: yes" in text
  board = re.search(r"TensorBoard: \S+ --logdir (\S+)", text).group(1)
  assert os.path.isdir(os.path.join(board, "train"))  # the Trainer wrote its scalars


def test_precision_is_read_off_tfma_matrix(view):
  m = np.asarray(view.evaluation.confusion_matrix)
  for c in range(10):
    assert view.precision[str(c)] == pytest.approx(m[c, c] / m[:, c].sum())


def test_html_is_self_contained_and_holds_the_same_figures(generated, view):
  page = open(generated[1]["html"], encoding="utf-8").read()
  assert f"{view.evaluation.accuracy:.4f}" in page
  for accuracy in view.evaluation.per_class_accuracy.values():
    assert f"{accuracy:.4f}" in page
  assert 'id="confusion-matrix"' in page and "data:image/png;base64," in page
  assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched
  assert "Data validation" in page and "Anomalies: none" in page
  for fact in ("tensorflow-model-analysis",
               "SHA-256 of train-images-idx3-ubyte.gz (the file, as sha256sum prints it)",
               "seconds Trainer"):
    assert fact in page


def test_notebook_loads_the_eval_result(generated, view):
  notebook = json.load(open(generated[1]["notebook"]))
  assert notebook["nbformat"] == 4
  source = "\n".join(c["source"] for c in notebook["cells"])
  assert "tfma.load_eval_result" in source and "tfdv.load_stats_binary" in source
  assert view.summary["artifacts"]["Evaluator.evaluation"] in source
  assert "MODEL_NAME = None" in source  # no baseline in this run


def test_notebook_executes_after_a_run_with_a_baseline(baseline_run_dir):
  """Executed as Jupyter would (nbclient, the venv's kernel), every cell."""
  import nbclient
  import nbformat
  _, files = report.generate(baseline_run_dir)
  notebook = nbformat.read(files["notebook"], as_version=4)
  assert "MODEL_NAME = 'candidate'" in "\n".join(c.source for c in notebook.cells)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": baseline_run_dir}}).execute()
  outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
  assert len(tables) == 2 and "accuracy" in tables[0] and "zeros" in tables[1]
  assert any("image/png" in o.get("data", {}) for o in outputs)  # the matrix


def test_compare_two_runs(run_dir, baseline_run_dir, capsys):
  assert cli.main(["report", "--compare", run_dir, baseline_run_dir]) == 0
  out = capsys.readouterr().out
  a = json.load(open(os.path.join(run_dir, "summary.json")))
  b = json.load(open(os.path.join(baseline_run_dir, "summary.json")))
  assert a["accuracy"] != b["accuracy"]  # a blessed model against a weak one
  overall = re.search(r"overall\s+(\S+)\s+(\S+)\s+(\S+)", out)
  assert float(overall.group(1)) == pytest.approx(a["accuracy"], abs=5e-5)
  assert float(overall.group(2)) == pytest.approx(b["accuracy"], abs=5e-5)
  assert float(overall.group(3)) == pytest.approx(b["accuracy"] - a["accuracy"], abs=1e-4)
  assert "digit 9" in out


def test_report_without_a_run_says_so(tmp_path, capsys):
  assert cli.main(["report", "--run-dir", str(tmp_path)]) == 1
  assert "run the pipeline first" in capsys.readouterr().err


def test_calibration_in_the_table_is_the_predictions_ece(generated, view):
  p = view.predictions
  confidence, correct = p.confidence.astype(float), (p.predicted == p.labels)
  edges = np.linspace(0, 1, 16)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    inside = (confidence > lo) & (confidence <= hi) if lo > 0 else confidence <= hi
    if inside.any():
      ece += inside.sum() / len(confidence) * abs(correct[inside].mean()
                                                  - confidence[inside].mean())
  shown = float(re.search(r"Calibration: ECE (\S+)", generated[0]).group(1))
  assert shown == pytest.approx(ece, abs=5e-5)
  assert f"{view.calibration.ece:.4f}" in open(generated[1]["html"]).read()


@pytest.mark.parametrize("epochs", [1, 3, 7])
def test_the_training_plot_ticks_whole_epochs(tmp_path, monkeypatch, epochs):
  from results import pictures  # pylint: disable=g-import-not-at-top
  figures = []
  monkeypatch.setattr(pictures, "_save", lambda fig, path: figures.append(fig) or path)
  curve = list(np.linspace(1.0, 0.1, epochs))
  pictures.plot_training({"epochs": {"loss": curve, "val_loss": curve,
                                     "accuracy": curve, "val_accuracy": curve}},
                         str(tmp_path / "training.png"))
  for ax in figures[0].axes:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
