"""`mnist-tfx monitor`: digits sent through the server, then compared with the
training data, as the README tells a user to."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from results import metadata, monitor
from serving import request_log
from tests import tiny_mnist
from tests.serve_process import ROOT, serving


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def run_dir(tiny_run_dir, tmp_path_factory):
  """The tiny run's store and pushed model in a dir of this module's own
  (monitor records into the store)."""
  out = tmp_path_factory.mktemp("monitored")
  shutil.copy(os.path.join(tiny_run_dir, "metadata.sqlite"), out / "metadata.sqlite")
  shutil.copytree(os.path.join(tiny_run_dir, "serving_model"), out / "serving_model")
  return str(out)


def _send(run_dir, log_dir, images):
  """Sends the images through `mnist-tfx serve --request-log`, 4 a request."""
  with serving(os.path.join(run_dir, "serving_model", "mnist"), "--request-log",
               str(log_dir), "--request-log-sampling", "1") as served:
    for start in range(0, len(images), 4):
      reply = served.post("/v1/models/mnist:predict",
                          {"instances": images[start:start + 4].tolist()})
      assert reply.status_code == 200, reply.text
    wanted = (len(images) + 3) // 4
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(
        1 for _ in request_log.read(request_log.log_files(str(log_dir)))) < wanted:
      time.sleep(0.1)


def _digits(labels, seed=11):
  return tiny_mnist.make_images(np.asarray(labels), seed=seed).reshape(-1, 784)


@pytest.fixture(scope="module")
def logs(run_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("logs")
  digits = _digits(np.arange(200) % 10)
  cases = {"normal": digits, "inverted": 255 - digits,
           "ones": _digits(np.ones(200, int))}
  for name, images in cases.items():
    _send(run_dir, root / name, images)
  return root


def test_digits_like_the_training_data_show_no_anomaly(run_dir, logs):
  done = _cli("monitor", str(logs / "normal"), "--output-dir", run_dir)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "200 served images in 50 records" in done.stdout
  assert "No anomaly" in done.stdout and "ANOMALY" not in done.stdout
  report = done.stdout.split("Report: ")[1].split(" (")[0]
  assert os.path.exists(report)
  assert os.path.exists(os.path.join(os.path.dirname(report), "mean_image.png"))


def test_inverted_digits_are_named_as_pixel_skew(run_dir, logs):
  done = _cli("monitor", str(logs / "inverted"), "--output-dir", run_dir)
  assert done.returncode == 4, done.stdout + done.stderr
  assert "ANOMALY image: served pixel values differ from the training data's" in done.stdout
  assert "Jensen-Shannon divergence" in done.stdout


def test_only_ones_are_named_as_a_class_shift(run_dir, logs):
  done = _cli("monitor", str(logs / "ones"), "--output-dir", run_dir)
  assert done.returncode == 4, done.stdout + done.stderr
  assert "ANOMALY predicted classes" in done.stdout and "(digit 1: " in done.stdout


def test_the_check_is_recorded_in_ml_metadata(run_dir, logs):
  done = _cli("monitor", str(logs / "ones"), "--output-dir", run_dir, "--json")
  found = __import__("json").loads(done.stdout)
  store = metadata.open_store(os.path.join(run_dir, "metadata.sqlite"))
  execution, = store.get_executions_by_id([found["execution_id"]])
  assert execution.custom_properties["drifted"].int_value == 1
  assert execution.custom_properties["requests"].int_value == 200
  events = store.get_events_by_execution_ids([execution.id])
  artifact, = store.get_artifacts_by_id([events[0].artifact_id])
  assert artifact.uri == os.path.dirname(found["report"])


def test_staleness_fails_past_max_age(run_dir, logs):
  done = _cli("monitor", str(logs / "normal"), "--output-dir", run_dir,
              "--max-age-days", "0")
  assert done.returncode == 4
  assert "ANOMALY staleness: version" in done.stdout and "--max-age-days 0" in done.stdout


def test_too_few_requests_are_said(run_dir, logs):
  done = _cli("monitor", str(logs / "normal"), "--output-dir", run_dir,
              "--min-requests", "1000")
  assert done.returncode == 4 and "too few to compare" in done.stdout


def test_an_empty_or_missing_log_is_a_clear_error(run_dir, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  done = _cli("monitor", str(empty), "--output-dir", run_dir)
  assert done.returncode == 1 and "no PredictionLog files in" in done.stderr
  (empty / "prediction_log-x.tfrecord").write_bytes(b"")
  done = _cli("monitor", str(empty), "--output-dir", run_dir)
  assert done.returncode == 1 and "no predict requests in 1 file(s)" in done.stderr
  done = _cli("monitor", str(tmp_path / "nope"), "--output-dir", run_dir)
  assert done.returncode == 1 and "no such file or directory" in done.stderr
  done = _cli("monitor", str(empty), "--output-dir", str(tmp_path / "norun"))
  assert done.returncode == 1 and "no ML Metadata store" in done.stderr
  for result in (done,):
    assert "Traceback" not in result.stderr


def test_a_truncated_log_names_the_file(run_dir, logs, tmp_path):
  source, = request_log.log_files(str(logs / "normal"))
  broken = tmp_path / "prediction_log-broken.tfrecord"
  with open(source, "rb") as f:
    broken.write_bytes(f.read()[:-100])
  done = _cli("monitor", str(broken), "--output-dir", run_dir)
  assert done.returncode == 1
  assert str(broken) in done.stderr and "truncated" in done.stderr
  assert "Traceback" not in done.stderr


def test_other_requests_are_skipped_and_counted(run_dir, tmp_path):
  log = request_log.RequestLog(str(tmp_path), 1.0, 1 << 20, 1 << 30)
  images = _digits(np.arange(60) % 10).astype(np.float32)
  probabilities = np.full((60, 10), 0.1, np.float32)
  probabilities[np.arange(60), np.arange(60) % 10] = 0.9
  log.offer("mnist", 1, "serving_default", {"images": images},
            {"probabilities": probabilities})
  log.offer("other", 1, "x", {"text": np.array([b"a"], dtype=object)},
            {"scores": np.zeros((1, 2), np.float32)})
  log.stop()
  served = monitor.read_served([str(tmp_path)])
  assert len(served.classes) == 60
  assert served.skipped == {"not an MNIST predict request and response": 1}


def test_the_reference_is_example_gens_examples_not_a_hold_out(run_dir, tmp_path):
  """A --tune run adds HoldOutValidation's Examples (no label counts) after
  ExampleGen's: the reference stays ExampleGen's."""
  path = tmp_path / "metadata.sqlite"
  shutil.copy(os.path.join(run_dir, "metadata.sqlite"), path)
  store = metadata.open_store(str(path), readonly=False)
  from ml_metadata.proto import metadata_store_pb2 as mlmd
  examples_type = store.get_artifact_type("Examples")
  store.put_artifacts([mlmd.Artifact(type_id=examples_type.id, uri=str(tmp_path / "held"),
                                     state=mlmd.Artifact.LIVE)])
  ref = monitor.reference(store)
  assert abs(sum(ref.label_shares) - 1) < 1e-9 and ref.examples_uri != str(tmp_path / "held")
