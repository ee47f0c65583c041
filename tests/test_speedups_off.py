"""With every speed-up off, the pipeline and the server give what they give on.

The pipeline runs twice as a user runs it (`mnist-tfx run`, once with
`--no-speedups`) on the same tiny data: the same components run, the same
metrics come out and the pushed models are the same bytes. Then each run's
model is served both ways and answers the same requests over REST and gRPC
identically. (`make test` also runs the end-to-end and serving tests with
MNIST_TFX_SPEEDUPS=0.)
"""

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from components import features, pusher
from mnist_tfx import defaults, speedups
from tests import serve_process, tiny_mnist

_SAME = ("status", "accuracy", "per_class_accuracy", "per_class_count", "blessed",
         "blessing", "train_examples", "eval_examples", "component_status")


def _run(data_dir: str, out: str, *flags: str) -> dict:
  env = dict(os.environ, PYTHONPATH=serve_process.ROOT)
  env.pop(speedups.ENV, None)
  proc = subprocess.run(
      [sys.executable, "-m", "mnist_tfx", "run", "--data-dir", data_dir,
       "--output-dir", out, "--epochs", "1", "--no-report", *flags],
      capture_output=True, text=True, cwd=serve_process.ROOT, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(tiny_data_dir, tmp_path_factory):
  top = tmp_path_factory.mktemp("switch")
  return {"on": _run(tiny_data_dir, str(top / "on")),
          "off": _run(tiny_data_dir, str(top / "off"), "--no-speedups")}


def _log(summary: dict) -> str:
  with open(summary["log"], encoding="utf-8") as f:
    return f.read()


def test_the_same_run_and_model_with_the_speedups_off(runs):
  on, off = runs["on"], runs["off"]
  assert "Beam speed-ups in place: {'signatures': True, 'tfrecord_crc': True}" in _log(on)
  assert "speed-ups off (MNIST_TFX_SPEEDUPS=0)" in _log(off)
  assert on["status"] == "succeeded" and on["pushed_new"] and off["pushed_new"]
  for key in _SAME:
    assert on[key] == off[key], key
  assert (pusher.content_digest(on["pushed_model_path"])
          == pusher.content_digest(off["pushed_model_path"]))


def _grpc_predict(port: int, images: np.ndarray) -> predict_pb2.PredictResponse:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = defaults.MODEL_NAME
  request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images))
  with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30)


def test_the_same_answers_served_with_the_speedups_off(runs):
  images = tiny_mnist.make_images(np.arange(20) % 10, seed=11).astype(np.float32)
  answers = {}
  for mode, flags in (("on", ()), ("off", ("--no-speedups",))):
    base = os.path.dirname(runs[mode]["pushed_model_path"])
    with serve_process.serving(base, *flags) as served:
      rest = served.post("/v1/models/mnist:predict",
                         {"instances": images.tolist()}).json()
      one = served.post("/v1/models/mnist:predict",
                        {"instances": images[:1].tolist()}).json()
      grpc_answer = _grpc_predict(served.grpc, images)
    answers[mode] = (rest, one, {k: tf.make_ndarray(v).tolist()
                                 for k, v in grpc_answer.outputs.items()})
  assert "predictions" in answers["on"][0], answers["on"][0]
  assert answers["on"] == answers["off"]
