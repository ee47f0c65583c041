"""--model-config-file: TF Serving's ModelServerConfig, version labels, promote
and rollback, as a user runs them."""

import os
import subprocess
import sys
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import metrics, model_config
from serving.model_store import VersionPolicy
from tests.serve_process import ROOT, push_tiny_model, serving

CONFIG = """model_config_list {{
  config {{
    name: "mnist"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: {a} versions: {b} }} }}
    version_labels {{ key: "stable" value: {a} }}
    version_labels {{ key: "canary" value: {b} }}
  }}
}}
"""


def _cli(*args, check=True):
  done = subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  if check:
    assert done.returncode == 0, done.stderr
  return done


# --- the file ------------------------------------------------------------------

def test_parse_reads_tf_servings_text_format():
  config = model_config.parse(CONFIG.format(base="/m", a=1, b=2))
  assert (config.name, config.base_path) == ("mnist", "/m")
  assert config.policy == VersionPolicy("specific", versions=(1, 2))
  assert config.labels == {"stable": 1, "canary": 2}
  assert model_config.parse(model_config.render(config)) == config
  latest = model_config.parse('model_config_list { config { name: "m" base_path: "/b" '
                              'model_version_policy { latest { num_versions: 2 } } } }')
  assert latest.policy == VersionPolicy("latest", num_versions=2)


@pytest.mark.parametrize("text, message", [
    ("model_config_list { config { name: ", "not a ModelServerConfig"),
    ("nonsense: 1", "not a ModelServerConfig"),
    ("", "needs model_config_list"),
    ('model_config_list { config { name: "a" base_path: "/a" } '
     'config { name: "b" base_path: "/b" } }', "2 models configured"),
    ('model_config_list { config { base_path: "/a" } }', "no name"),
    ('model_config_list { config { name: "a" } }', "no base_path"),
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" } }',
     "model_platform"),
    ('model_config_list { config { name: "a" base_path: "/a" model_version_policy '
     '{ specific { } } } }', "lists no versions"),
])
def test_bad_files_are_refused_with_the_reason(text, message):
  with pytest.raises(model_config.ConfigFileError, match=message):
    model_config.parse(text)


def _versions(base, *numbers):
  for v in numbers:
    os.makedirs(base / str(v))
    (base / str(v) / "saved_model.pb").write_bytes(b"")


def test_promote_and_rollback_edit_the_file_atomically(tmp_path):
  base = tmp_path / "mnist"
  _versions(base, 1, 2, 3)
  path = str(tmp_path / "models.config")
  config, before = model_config.promote(path, 1, "stable", "mnist", str(base))
  assert before is None and config.labels == {"stable": 1}
  model_config.promote(path, 3, "canary", "mnist", str(base))
  config, before = model_config.promote(path, 3, "stable", "mnist", str(base))
  assert before == 1 and model_config.read(path).labels == {"stable": 3, "canary": 3}
  assert model_config.read(path).policy.versions == (3,)
  config, left, now = model_config.rollback(path)
  assert (left, now) == (3, 1)
  assert model_config.read(path).labels == {"stable": 1, "canary": 3}
  assert model_config.read(path).policy.versions == (1, 3)
  # With no promote on record, a rollback goes to the version below.
  model_config.write(path, model_config.ModelConfig(
      "mnist", str(base), VersionPolicy(), {"stable": 3}))
  os.unlink(path + model_config.HISTORY_SUFFIX)
  assert model_config.rollback(path)[1:] == (3, 2)
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".model-config-")]


def test_promote_and_rollback_refuse_what_cannot_be_served(tmp_path):
  base = tmp_path / "mnist"
  _versions(base, 5)
  path = str(tmp_path / "models.config")
  with pytest.raises(model_config.ConfigFileError, match="version 9 is not under"):
    model_config.promote(path, 9, "stable", "mnist", str(base))
  assert not os.path.exists(path)  # nothing written
  model_config.promote(path, 5, "stable", "mnist", str(base))
  with pytest.raises(model_config.ConfigFileError, match="no earlier version"):
    model_config.rollback(path)
  with pytest.raises(model_config.ConfigFileError, match="no label 'canary'"):
    model_config.rollback(path, "canary")
  with open(path, "w") as f:
    f.write("model_config_list { config {")
  with pytest.raises(model_config.ConfigFileError, match="not a ModelServerConfig"):
    model_config.promote(path, 5, "stable", "mnist", str(base))


# --- served ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_versions(tft_output, tmp_path_factory):
  root = tmp_path_factory.mktemp("labels")
  base, first = push_tiny_model(tft_output, root)
  second = int(os.path.basename(__import__("components.pusher", fromlist=["push"]).push(
      os.path.join(str(root), "model"), base, {})))
  return base, first, second


@pytest.fixture
def config_file(two_versions, tmp_path):
  base, a, b = two_versions
  path = tmp_path / "models.config"
  path.write_text(CONFIG.format(base=base, a=a, b=b))
  return str(path)


def _grpc(port, label=None, version=None):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "mnist"
  if label:
    request.model_spec.version_label = label
  if version:
    request.model_spec.version.value = version
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 784), np.float32)))
  with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30)


def _label_version(served, label):
  reply = httpx.get(f"http://127.0.0.1:{served.rest}/v1/models/mnist/labels/{label}")
  assert reply.status_code == 200, reply.text
  return int(reply.json()["model_version_status"][0]["version"])


def test_labels_over_rest_and_grpc(two_versions, config_file):
  _, a, b = two_versions
  with serving(None, "--model-config-file", config_file) as served:
    assert "Labels: canary -> version %d, stable -> version %d" % (b, a) in served.text
    url = f"http://127.0.0.1:{served.rest}/v1/models/mnist"
    body = {"instances": [[0] * 784]}
    assert httpx.post(f"{url}/labels/stable:predict", json=body).status_code == 200
    assert _label_version(served, "stable") == a
    assert _label_version(served, "canary") == b
    metadata = httpx.get(f"{url}/labels/canary/metadata").json()
    assert metadata["model_spec"]["version"] == str(b)
    unknown = httpx.post(f"{url}/labels/nope:predict", json=body)
    assert (unknown.status_code, unknown.json()["error"]) == (
        400, "Unrecognized servable version label: nope")
    assert _grpc(served.grpc, label="stable").model_spec.version.value == a
    assert _grpc(served.grpc, label="canary").model_spec.version.value == b
    with pytest.raises(grpc.RpcError) as raised:
      _grpc(served.grpc, label="nope")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label" in raised.value.details()
    labels = metrics.parse(httpx.get(f"http://127.0.0.1:{served.rest}{metrics.PATH}").text)
    assert metrics.value(labels, metrics.LABELS, label="stable") == a


def test_promote_while_requests_flow_loses_none(two_versions, config_file):
  base, a, b = two_versions
  failures, answers, stop = [], [], threading.Event()
  with serving(None, "--model-config-file", config_file,
               "--model-config-file-poll-wait-seconds", "0.2") as served:
    url = f"http://127.0.0.1:{served.rest}/v1/models/mnist/labels/stable:predict"

    def load():
      with httpx.Client(timeout=30) as client:
        while not stop.is_set():
          reply = client.post(url, json={"instances": [[0] * 784]})
          (answers if reply.status_code == 200 else failures).append(reply.text)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
      t.start()
    time.sleep(0.5)
    promoted = _cli("promote", str(b), "--model-config-file", config_file)
    assert f"stable -> version {b} (was {a})" in promoted.stdout
    deadline = time.monotonic() + 30
    while _label_version(served, "stable") != b and time.monotonic() < deadline:
      time.sleep(0.1)
    time.sleep(0.5)
    rolled = _cli("rollback", "--model-config-file", config_file)
    assert f"stable rolled back: version {b} -> {a}" in rolled.stdout
    deadline = time.monotonic() + 30
    while _label_version(served, "stable") != a and time.monotonic() < deadline:
      time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
      t.join()
    assert _label_version(served, "stable") == a
  assert not failures, failures[:3]
  assert len(answers) > 20


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(two_versions, config_file):
  _, a, b = two_versions
  with serving(None, "--model-config-file", config_file,
               "--model-config-file-poll-wait-seconds", "0.2") as served:
    for text in ("model_config_list { config { name: ",  # a syntax error
                 CONFIG.format(base="/elsewhere", a=a, b=b),  # another base path
                 CONFIG.format(base=two_versions[0], a=a, b=b).replace(
                     f'value: {a} }}', 'value: 12345 }')):  # a missing version
      with open(config_file, "w") as f:
        f.write(text)
      time.sleep(1.0)
      assert _label_version(served, "stable") == a
      assert served.post("/v1/models/mnist/labels/stable:predict",
                         {"instances": [[0] * 784]}).status_code == 200
    scraped = metrics.parse(httpx.get(f"http://127.0.0.1:{served.rest}{metrics.PATH}").text)
    assert metrics.value(scraped, metrics.CONFIG_RELOADS, status="refused") == 3
  stderr = served.proc.stderr.read()
  assert stderr.count("refused, the previous one keeps serving") == 3
  assert "not currently available for inference" in stderr


@pytest.mark.parametrize("text, message", [
    ("model_config_list { config {", "not a ModelServerConfig"),
    ('model_config_list { config { name: "mnist" base_path: "{base}" '
     'version_labels { key: "stable" value: 999 } } }', "not currently available"),
])
def test_serve_with_a_bad_config_file_stops_with_the_reason(two_versions, tmp_path,
                                                           text, message):
  path = tmp_path / "bad.config"
  path.write_text(text.replace("{base}", two_versions[0]))
  done = _cli("serve", "--model-config-file", str(path), "--rest-port", "0",
              "--grpc-port", "0", check=False)
  assert done.returncode == 2, done.stderr
  assert message in done.stderr and "Traceback" not in done.stderr


def test_config_file_and_base_path_flags_exclude_each_other(tmp_path):
  done = _cli("serve", "--model-config-file", str(tmp_path / "x"),
              "--model-base-path", str(tmp_path), check=False)
  assert done.returncode == 2 and "leave out --model-base-path" in done.stderr
