"""Run history and lineage from ML Metadata, on two tiny runs in one output dir:
the second is pushed with the first as its baseline."""

import gzip
import hashlib
import json
import os
import subprocess
import sys

import pytest

from pipeline.configs import PipelineConfig
from results import lineage, metadata
from tests.conftest import _run

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_runs(tiny_data_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("lineage"))
  first = _run(tiny_data_dir, out)
  second = _run(tiny_data_dir, out, seed=1, batch_size=16)
  assert first["pushed_version"] and second["pushed_version"], (first, second)
  assert second["pushed_version"] != first["pushed_version"]
  store = metadata.open_store(PipelineConfig(output_dir=out).metadata_uri)
  return out, store, first, second


def _artifact_id(store, uri):
  return next(a.id for a in store.get_artifacts() if a.uri == uri)


def test_runs_lists_both_newest_first_with_their_figures(two_runs):
  _, store, first, second = two_runs
  rows = lineage.runs(store)
  assert [r["run"] for r in rows] == [second["run_id"], first["run_id"]]
  for row, summary in zip(rows, (second, first)):
    assert row["status"] == "succeeded"
    assert row["model"] == "improved"
    assert row["accuracy"] == pytest.approx(summary["accuracy"])
    assert row["blessed"] is True and row["why"].startswith("accuracy ")
    assert row["pushed_version"] == int(summary["pushed_version"])
    assert row["pushed_new"] is True
  assert rows[1]["changed"] == {"epochs": 1}
  assert rows[0]["changed"] == {"epochs": 1, "seed": 1, "batch_size": 16}
  assert "baseline's" in rows[0]["why"]  # the second was compared with the first


def test_lineage_links_are_the_real_artifacts(two_runs):
  _, store, first, second = two_runs
  chain = lineage.lineage(store)  # default: the newest pushed version
  assert chain["version"] == int(second["pushed_version"])
  assert chain["path"] == second["pushed_model_path"]
  art = second["artifacts"]
  assert chain["model"]["artifact"] == _artifact_id(store, art["Trainer.model"])
  assert chain["model"]["run"] == second["run_id"]
  assert chain["model"]["hyperparameters"]["batch_size"] == 16
  assert chain["blessing"]["artifact"] == _artifact_id(store, art["Evaluator.blessing"])
  assert chain["blessing"]["accuracy"] == pytest.approx(second["accuracy"])
  # The tiny test split holds SD-3's records only: no writer gap to bound;
  # no basic model was blessed before: no margin to beat.
  assert chain["blessing"]["thresholds"] == {"min_accuracy": 0.95,
                                            "max_regression": 0.001,
                                            "min_class_accuracy": 0.9,
                                            "max_class_regression": 0.01,
                                            "max_writer_gap": None,
                                            "simpler_accuracy": None,
                                            "min_margin_over_simpler": None}
  baseline = chain["blessing"]["baseline"]
  assert baseline["artifact"] == _artifact_id(store, first["artifacts"]["Trainer.model"])
  assert baseline["run"] == first["run_id"]
  assert baseline["accuracy"] == pytest.approx(first["accuracy"])
  # Reused from the cache: the examples and the graph were made by the first run.
  assert chain["examples"]["artifact"] == _artifact_id(
      store, first["artifacts"]["IdxExampleGen.examples"])
  assert chain["examples"]["run"] == first["run_id"]
  assert {n: d["sha256"] for n, d in chain["examples"]["files"].items()} == (
      second["data_sha256"])
  assert chain["examples"]["counts"] == {"train": 300, "eval": 100}
  assert chain["transform_graph"]["run"] == first["run_id"]
  assert len(chain["transform_graph"]["code"]) == 16


def test_the_data_hashes_are_the_files_and_the_hyperparameters_resolved(
    two_runs, tiny_data_dir):
  _, store, _, second = two_runs
  chain = lineage.lineage(store)
  on_disk = {}
  for name in os.listdir(tiny_data_dir):
    with open(os.path.join(tiny_data_dir, name), "rb") as f:
      data = f.read()
    on_disk[name] = (hashlib.sha256(data).hexdigest(),
                     hashlib.sha256(gzip.decompress(data)).hexdigest())
  assert {n: (d["sha256"], d["content_sha256"])
          for n, d in chain["examples"]["files"].items()} == on_disk
  assert second["data_sha256"] == {n: h for n, (h, _) in on_disk.items()}
  text = lineage.render_lineage(chain)
  for name, (file_hash, content_hash) in on_disk.items():
    assert f"{name}  sha256 {file_hash} (the file; decompressed content sha256 " \
        f"{content_hash})" in text
  # What the model was built with, never null for a value it has.
  assert chain["model"]["hyperparameters"]["hidden_units"] == [100]
  assert second["hyperparameters"]["hidden_units"] == [100]
  assert "null" not in json.dumps(chain["model"]["hyperparameters"])


def test_lineage_of_an_older_version_and_of_one_never_pushed(two_runs):
  _, store, first, _ = two_runs
  chain = lineage.lineage(store, int(first["pushed_version"]))
  assert chain["blessing"]["baseline"] is None
  assert chain["model"]["run"] == first["run_id"]
  with pytest.raises(lineage.LineageError, match="version 7 was not pushed"):
    lineage.lineage(store, 7)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=_ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=_ROOT))


def test_the_commands_as_a_user_runs_them(two_runs):
  out, _, first, second = two_runs
  listed = _cli("runs", "--output-dir", out)
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert listed.stdout.index(second["run_id"]) < listed.stdout.index(first["run_id"])
  assert f"pushed version {second['pushed_version']}" in listed.stdout
  as_json = _cli("runs", "--output-dir", out, "--json")
  assert [r["run"] for r in json.loads(as_json.stdout)] == [
      second["run_id"], first["run_id"]]
  chain = _cli("lineage", "--output-dir", out, "--json")
  assert chain.returncode == 0, chain.stderr[-2000:]
  assert json.loads(chain.stdout)["version"] == int(second["pushed_version"])
  text = _cli("lineage", str(first["pushed_version"]), "--output-dir", out)
  assert f"Version {first['pushed_version']}" in text.stdout
  assert "baseline:   none" in text.stdout
  missing = _cli("lineage", "7", "--output-dir", out)
  assert missing.returncode == 1 and "version 7 was not pushed" in missing.stderr
  empty = _cli("runs", "--output-dir", os.path.join(out, "nothing-here"))
  assert empty.returncode == 1 and "no ML Metadata store" in empty.stderr
