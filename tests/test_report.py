"""The evaluation report on a tiny pipeline run: every figure is TFMA's."""

import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from mnist_tfx import cli
from pipeline import local_runner
from results import report
from pipeline.configs import PipelineConfig, with_overrides


@pytest.fixture(scope="module")
def run_dir(tiny_data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("report_run"))
  config = with_overrides(PipelineConfig(output_dir=out),
                          **{"hyperparameters.epochs": 1})
  local_runner.run(config, tiny_data_dir, out=io.StringIO())
  return out


@pytest.fixture(scope="module")
def generated(run_dir):
  return report.generate(run_dir)


@pytest.fixture(scope="module")
def view(run_dir):
  return report.gather(run_dir)


@pytest.mark.parametrize("name,min_size", [
    ("confusion_matrix", (400, 400)), ("predictions", (500, 400)),
    ("mistakes", (300, 100)), ("training", (600, 250))])
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


def test_report_predictions_agree_with_tfma(view):
  p = view.predictions
  assert len(p.labels) == 100
  ours = np.zeros((10, 10), int)
  np.add.at(ours, (p.labels, p.predicted), 1)
  assert np.array_equal(ours, view.evaluation.confusion_matrix)


def test_disagreeing_predictions_are_refused(view):
  p = view.predictions
  wrong = report.Predictions(p.images, p.labels, (p.predicted + 1) % 10,
                             p.confidence)
  with pytest.raises(report.ReportError, match="disagree with TFMA"):
    report._check_agreement(wrong, view.evaluation.confusion_matrix)  # pylint: disable=protected-access


def test_table_shows_tfma_slice_accuracy_per_digit(generated, view):
  text = generated[0]
  for digit, accuracy in view.evaluation.per_class_accuracy.items():
    row = re.search(rf"^\s+{digit}\s+(\S+)\s+(\S+)\s+(\d+)", text, re.M)
    assert row, f"no row for digit {digit}"
    assert float(row.group(1)) == pytest.approx(accuracy, abs=5e-5)
    assert int(row.group(3)) == view.evaluation.per_class_count[digit]
  assert "Most frequent confusions" in text and "Blessed: yes" in text


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
               "SHA-256 (raw, decompressed bytes) of train-images-idx3-ubyte.gz",
               "seconds Trainer"):
    assert fact in page


def test_notebook_loads_the_eval_result(generated, view):
  notebook = json.load(open(generated[1]["notebook"]))
  assert notebook["nbformat"] == 4
  source = "\n".join(c["source"] for c in notebook["cells"])
  assert "tfma.load_eval_result" in source and "tfdv.load_stats_binary" in source
  assert view.summary["artifacts"]["Evaluator.evaluation"] in source
  assert "MODEL_NAME = None" in source  # no baseline in this run


def test_notebook_executes_after_a_run_with_a_baseline(tiny_data_dir, tmp_path):
  """Executed as Jupyter would (nbclient, the venv's kernel), every cell."""
  import nbclient
  import nbformat
  out = str(tmp_path / "run")
  config = with_overrides(PipelineConfig(output_dir=out),
                          **{"hyperparameters.epochs": 1})
  local_runner.run(config, tiny_data_dir, out=io.StringIO())
  again = with_overrides(config, **{"hyperparameters.seed": 1})
  summary = local_runner.run(again, tiny_data_dir, out=io.StringIO())
  assert summary["baseline_accuracy"] is not None  # TFMA names the models now
  _, files = report.generate(out)
  notebook = nbformat.read(files["notebook"], as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": out}}).execute()
  outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
  assert len(tables) == 2 and "accuracy" in tables[0] and "zeros" in tables[1]
  assert any("image/png" in o.get("data", {}) for o in outputs)  # the matrix


def test_compare_two_runs(run_dir, capsys):
  assert cli.main(["report", "--compare", run_dir, run_dir]) == 0
  out = capsys.readouterr().out
  assert "overall" in out and "digit 9" in out and "+0.0000" in out


def test_report_without_a_run_says_so(tmp_path, capsys):
  assert cli.main(["report", "--run-dir", str(tmp_path)]) == 1
  assert "run the pipeline first" in capsys.readouterr().err
