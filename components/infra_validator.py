"""ServingInfraValidator: the candidate on the real server before the push.

TFX's InfraValidator loads the candidate in TF Serving and queries it; here
the server is `mnist-tfx serve`, started in its own process on free
loopback ports, exactly as users run it. The candidate (copied with its
warm-up requests written in, as TFX's `make_warmup` does) is served, and
every warm-up request is sent over REST and gRPC; the answers must equal
the SavedModel's own, computed in this process. The result is TFX's
`InfraBlessing` (`blessed`, a `reason`, and the model with its warm-up
file under `stamped_model`, which the Pusher pushes).

The warm-up requests are built from training examples: the test split is
the Evaluator's alone. A candidate the Evaluator did not bless is not
validated (nothing would push it). A server that does not become ready
in `timeout_seconds`, exits, or answers differently leaves the candidate
not blessed, with the reason.
"""

import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
from tfx import v1 as tfx

from components import features
from components.model_layout import SAVED_MODEL
from mnist_tfx import defaults

from components.pusher import SERVING_SUBDIR, STAMPED_MODEL, copy_tree
TIMEOUT_SECONDS = 120.0
# Answers may differ by float rounding at most (one process vs another).
TOLERANCE = 1e-6
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NotValid(Exception):
  """Why the candidate is not blessed."""


def train_examples(examples_uri: str, count: int) -> List[bytes]:
  """The first `count` serialized examples of the train split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = sorted(tf.io.gfile.glob(os.path.join(
      examples_uri, f"Split-{features.TRAIN_SPLIT}", "*.gz")))
  if not files:
    raise NotValid(f"no train examples under {examples_uri}")
  dataset = tf.data.TFRecordDataset(files[:1], compression_type="GZIP").take(count)
  return [bytes(r) for r in dataset.as_numpy_iterator()]


def stamp(model_dir: str, destination: str, examples: List[bytes], name: str):
  """The candidate copied to `destination` with its warm-up file; the requests."""
  from serving import warmup  # pylint: disable=g-import-not-at-top
  copy_tree(model_dir, destination)
  requests = warmup.requests_for(examples, name)
  warmup.write(destination, requests)
  return requests


def expected(model_dir: str, requests) -> List[Dict[str, np.ndarray]]:
  """The SavedModel's own answers, in this process."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from serving import grpc_server  # pylint: disable=g-import-not-at-top
  model = tf.saved_model.load(model_dir)
  answers = []
  for request in requests:
    signature = request.model_spec.signature_name
    fn = model.signatures.get(signature)
    if fn is None:
      raise NotValid(f"the SavedModel has no signature {signature!r}")
    inputs = {k: tf.constant(grpc_server.to_array(p, k, defaults.MAX_TENSOR_ELEMENTS))
              for k, p in request.inputs.items()}
    try:
      answers.append({k: v.numpy() for k, v in fn(**inputs).items()})
    except (tf.errors.OpError, ValueError, TypeError) as e:
      raise NotValid(f"the SavedModel itself fails on a warm-up request "
                     f"({signature}): {str(e).splitlines()[0][:300]}") from None
  return answers


@contextlib.contextmanager
def server(base_path: str, name: str, timeout: float) -> Iterator[Tuple[int, int]]:
  """`mnist-tfx serve` on free loopback ports: yields (REST, gRPC) once it
  listens; stopped with SIGTERM after (it must exit 0)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  err = tempfile.TemporaryFile(mode="w+")
  proc = subprocess.Popen(
      [sys.executable, "-m", "mnist_tfx", "serve", "--model-base-path", base_path,
       "--model-name", name, "--rest-port", "0", "--grpc-port", "0",
       "--poll-seconds", "0.1"],
      cwd=_ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
      env=dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get(
          "PYTHONPATH", "")))
  try:
    ports = _ports(proc, err, time.monotonic() + timeout, timeout)
    yield ports
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      try:
        proc.wait(30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err.close()


def _ports(proc, err, deadline: float, timeout: float) -> Tuple[int, int]:
  """The ports the server prints, read by a thread (a pipe's buffered text
  hides lines from select)."""
  import queue  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from serving.server import announced_ports  # pylint: disable=g-import-not-at-top
  lines: "queue.Queue" = queue.Queue()

  def pump():
    for line in proc.stdout:
      lines.put(line)
    lines.put(None)

  threading.Thread(target=pump, daemon=True).start()
  text = ""
  while time.monotonic() < deadline:
    try:
      line = lines.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
    except queue.Empty:
      continue
    if line is None:
      err.seek(0)
      tail = err.read()[-600:].strip().splitlines()
      raise NotValid("the server exited before it listened (code "
                     f"{proc.wait()}): {tail[-1] if tail else 'no output'}")
    text += line
    ports = announced_ports(text)
    if ports:
      return ports
  raise NotValid(f"the server did not listen within {timeout:g} s")


def wait_ready(rest_port: int, name: str, deadline: float, timeout: float) -> None:
  import httpx  # pylint: disable=g-import-not-at-top
  url = f"http://127.0.0.1:{rest_port}"
  while time.monotonic() < deadline:
    try:
      if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
        return
      failed = [s for s in httpx.get(f"{url}/v1/models/{name}", timeout=5).json().get(
          "model_version_status", []) if s["status"]["error_code"] != "OK"]
      if failed:
        raise NotValid("the server could not load the candidate: "
                       f"{failed[0]['status']['error_message']}")
    except (httpx.HTTPError, ValueError):
      pass
    time.sleep(0.1)
  status = ""
  with contextlib.suppress(Exception):
    status = httpx.get(f"{url}/v1/models/{name}", timeout=5).text[:400]
  raise NotValid(f"the server did not become ready within {timeout:g} s "
                 f"(model status: {status or 'none'})")


def _rest_body(request) -> Dict[str, Any]:
  from serving import grpc_server  # pylint: disable=g-import-not-at-top
  (key, proto), = request.inputs.items()
  array = grpc_server.to_array(proto, key, defaults.MAX_TENSOR_ELEMENTS)
  values = ([{"b64": base64.b64encode(v).decode()} for v in array]
            if array.dtype == object else array.tolist())
  return {"signature_name": request.model_spec.signature_name, "instances": values}


def query(rest_port: int, grpc_port: int, requests) -> List[Tuple[str, Dict]]:
  """Each request over REST and over gRPC: [(api, outputs)] in that order."""
  import grpc  # pylint: disable=g-import-not-at-top
  import httpx  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  answers = []
  with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel, \
      httpx.Client(base_url=f"http://127.0.0.1:{rest_port}", timeout=30) as rest:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for request in requests:
      reply = rest.post(f"/v1/models/{request.model_spec.name}:predict",
                        json=_rest_body(request))
      if reply.status_code != 200:
        raise NotValid(f"REST {request.model_spec.signature_name}: HTTP "
                       f"{reply.status_code} {reply.text[:300]}")
      predictions = reply.json()["predictions"]
      answers.append(("REST", {k: np.array([p[k] for p in predictions])
                               for k in predictions[0]}))
      try:
        response = stub.Predict(request, timeout=30)
      except grpc.RpcError as e:
        raise NotValid(f"gRPC {request.model_spec.signature_name}: "
                       f"{e.code().name} {e.details()}") from None
      answers.append(("gRPC", {k: tf.make_ndarray(v) for k, v in response.outputs.items()}))
  return answers


def compare(requests, own: List[Dict], served: List[Tuple[str, Dict]]) -> float:
  """The largest difference between served and own answers, or NotValid."""
  worst = 0.0
  for i, request in enumerate(requests):
    for api, outputs in served[2 * i:2 * i + 2]:
      for key, value in own[i].items():
        got = outputs.get(key)
        if got is None or np.shape(got) != value.shape:
          raise NotValid(f"{api} {request.model_spec.signature_name}: output "
                         f"{key} missing or of another shape")
        diff = float(np.max(np.abs(np.asarray(got, np.float64) - value)))
        if diff > TOLERANCE:
          raise NotValid(f"{api} {request.model_spec.signature_name}: output {key} "
                         f"differs from the SavedModel's by {diff:.3g}")
        worst = max(worst, diff)
  return worst


def validate(model_dir: str, examples_uri: str, work_dir: str, name: str,
             timeout: float) -> Dict[str, Any]:
  """Stamps the candidate, serves it, queries it: what the blessing records.

  The server reads a local copy (in a temp dir), whatever file system the
  artifacts are on; the stamped model lands in `work_dir` (the blessing's
  URI, local or gs://) only once it has been validated.
  """
  from serving import warmup  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  with tempfile.TemporaryDirectory(prefix="mnist-tfx-infra-") as local:
    stamped = os.path.join(local, STAMPED_MODEL)
    base = os.path.join(local, "serving", name)
    os.makedirs(base)
    # The server starts (TensorFlow's import: seconds) while the candidate
    # is stamped and its own answers computed here.
    with server(base, name, timeout) as (rest_port, grpc_port):
      requests = stamp(model_dir, stamped, train_examples(examples_uri,
                                                          warmup.EXAMPLES), name)
      # saved_model.pb last: the server never loads a version half copied.
      copy_tree(stamped, os.path.join(base, "1"), last=SAVED_MODEL)
      own = expected(stamped, requests)
      wait_ready(rest_port, name, started + timeout, timeout)
      served = query(rest_port, grpc_port, requests)
    worst = compare(requests, own, served)
    copy_tree(stamped, os.path.join(work_dir, STAMPED_MODEL), last=SAVED_MODEL)
  return {"requests": len(requests), "max_difference": worst,
          "seconds": time.monotonic() - started}


@tfx.dsl.components.component
def ServingInfraValidator(  # pylint: disable=invalid-name
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model_blessing: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ModelBlessing],
    blessing: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.InfraBlessing],
    model_name: tfx.dsl.components.Parameter[str],
    timeout_seconds: tfx.dsl.components.Parameter[float] = TIMEOUT_SECONDS,
    code: tfx.dsl.components.Parameter[str] = "",
) -> None:
  """Blesses `model` if the real server loads it and answers as it does."""
  del code  # part of the cache key only
  if model_blessing.get_int_custom_property("blessed") != 1:
    _bless(blessing, False, "not blessed by the Evaluator: not validated")
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  source = os.path.join(model.uri, SERVING_SUBDIR)
  if not tf.io.gfile.exists(os.path.join(source, SAVED_MODEL)):
    _bless(blessing, False, f"no SavedModel at {source}")
    return
  try:
    found = validate(source, examples.uri, blessing.uri, model_name, timeout_seconds)
  except NotValid as e:
    _bless(blessing, False, str(e))
    return
  _bless(blessing, True, f"served by mnist-tfx serve; {found['requests']} warm-up "
         f"requests answered over REST and gRPC as by the SavedModel (largest "
         f"difference {found['max_difference']:.3g}) in {found['seconds']:.1f} s")
  blessing.set_int_custom_property("has_model", 1)


def _bless(blessing, blessed: bool, reason: str) -> None:
  """TFX's InfraBlessing: the `blessed` property and its marker file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(blessing.uri)
  marker = "INFRA_BLESSED" if blessed else "INFRA_NOT_BLESSED"
  with tf.io.gfile.GFile(os.path.join(blessing.uri, marker), "w") as f:
    f.write(reason + "\n")
  blessing.set_int_custom_property("blessed", int(blessed))
  blessing.set_string_custom_property("reason", reason)

