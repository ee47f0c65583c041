"""The baseline resolver: latest blessed model, never this run's candidate."""

from tfx import v1 as tfx

from components import baseline


def _model(i):
  m = tfx.types.standard_artifacts.Model()
  m.id = i
  return m


def _blessing(model_id, blessed):
  b = tfx.types.standard_artifacts.ModelBlessing()
  b.set_int_custom_property("current_model_id", model_id)
  b.set_int_custom_property("blessed", int(blessed))
  return b


def test_no_blessed_model_means_no_baseline():
  out = baseline.latest_blessed_other([_model(3)], [_model(1), _model(3)],
                                      [_blessing(1, False)])
  assert out[baseline.MODEL_KEY] == [] and out[baseline.BLESSING_KEY] == []


def test_picks_latest_blessed():
  models = [_model(1), _model(2), _model(5)]
  out = baseline.latest_blessed_other(
      [_model(7)], models, [_blessing(1, True), _blessing(2, True),
                            _blessing(5, False)])
  assert [m.id for m in out[baseline.MODEL_KEY]] == [2]


def test_candidate_itself_is_never_its_baseline():
  # A rerun with nothing changed: the cached candidate is the blessed model.
  out = baseline.latest_blessed_other([_model(4)], [_model(4)],
                                      [_blessing(4, True)])
  assert out[baseline.MODEL_KEY] == []
  out = baseline.latest_blessed_other([_model(4)], [_model(2), _model(4)],
                                      [_blessing(2, True), _blessing(4, True)])
  assert [m.id for m in out[baseline.MODEL_KEY]] == [2]


def test_a_rolled_back_model_is_never_the_baseline():
  rolled = _model(5)
  rolled.set_int_custom_property(baseline.ROLLED_BACK, 1)
  out = baseline.latest_blessed_other(
      [_model(7)], [_model(2), rolled], [_blessing(2, True), _blessing(5, True)])
  assert [m.id for m in out[baseline.MODEL_KEY]] == [2]


def test_after_a_rollback_the_next_run_is_compared_with_the_model_served(
    tiny_data_dir, tmp_path):
  """Push A, push B, roll back to A, run C: C's baseline is A, not B."""
  import json
  import os
  import subprocess
  import sys
  from results import metadata
  from tests.serve_process import ROOT

  out = str(tmp_path / "out")

  def cli(*args):
    done = subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout

  def run(seed):
    cli("run", "--data-dir", tiny_data_dir, "--output-dir", out, "--epochs", "1",
        "--seed", str(seed), "--no-report")
    with open(os.path.join(out, "summary.json")) as f:
      summary = json.load(f)
    assert summary["blessed"] and summary["pushed_new"], summary
    return summary

  a, b = run(1), run(2)
  cli("promote", a["pushed_version"], "--output-dir", out)
  cli("promote", b["pushed_version"], "--output-dir", out)
  rolled = cli("rollback", "--output-dir", out)
  assert (f"stable rolled back: version {b['pushed_version']} -> "
          f"{a['pushed_version']}") in rolled
  assert "marked rolled back" in rolled
  c = run(3)
  # The Evaluator's baseline input in run C is A's model.
  store = metadata.open_store(os.path.join(out, "metadata.sqlite"))
  evaluator_id = max(e.id for e in store.get_executions()
                     if metadata.node_name(store, e.id) == "Evaluator")
  events = store.get_events_by_execution_ids([evaluator_id])
  baseline_ids = [e.artifact_id for e in events
                  if e.path.steps and e.path.steps[0].key == "baseline_model"]
  uris = [x.uri for x in store.get_artifacts_by_id(baseline_ids)]
  assert uris == [a["artifacts"]["Trainer.model"]], (uris, a["artifacts"]["Trainer.model"],
                                                     b["artifacts"]["Trainer.model"])
  assert c["baseline_accuracy"] is not None
