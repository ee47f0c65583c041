"""TF Serving's REST API on a real HTTP server: answers, errors, hot swaps.

Clients talk HTTP to 127.0.0.1 on a free port; nothing leaves the machine.
"""

import asyncio
import base64
import json
import os
import threading
import time

import httpx
import numpy as np
import pytest
import tensorflow as tf

from components import features, pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from components.model_layout import versions as list_versions
from serving import rest
from serving.model_store import ModelStore, wait_for
from serving.server import RestServer
from tests import tiny_mnist

NAME = "mnist"
LIMIT = 200_000  # bytes; the payload test goes over it


def _export(tft_output, root, seed):
  import keras
  keras.utils.set_random_seed(seed)
  path = os.path.join(root, f"model-{seed}")
  export.export(build_model(Hyperparameters(), 10), tft_output, path)
  return path


@pytest.fixture(scope="module")
def models(tft_output, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("models"))
  return [_export(tft_output, root, seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
  base = str(tmp_path_factory.mktemp("serving") / NAME)
  pusher.push(models[0], base, {"model_uri": "first"})
  store = ModelStore(NAME, base, poll_seconds=0.1).start()
  rest = RestServer(store, port=0, max_payload_bytes=LIMIT).start()
  yield rest, store, base
  rest.stop()
  store.stop()


@pytest.fixture(scope="module")
def client(server):
  with httpx.Client(base_url=f"http://127.0.0.1:{server[0].port}", timeout=30) as c:
    yield c


def _images(n=3, seed=0):
  return tiny_mnist.make_images(np.arange(n) % 10, seed=seed)


def _direct(model_dir, images):
  out = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE](
      images=tf.constant(images, tf.float32))
  return out[features.PROBABILITIES_KEY].numpy()


def test_status_and_metadata(client, server):
  version = str(max(list_versions(server[2])))
  status = client.get(f"/v1/models/{NAME}").json()
  assert status["model_version_status"][0] == {
      "version": version, "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}
  assert client.get(f"/v1/models/{NAME}/versions/{version}").status_code == 200
  meta = client.get(f"/v1/models/{NAME}/metadata").json()
  sigs = meta["metadata"]["signature_def"]["signature_def"]
  assert meta["model_spec"]["version"] == version
  assert sigs["serving_default"]["inputs"]["images"]["dtype"] == "DT_FLOAT"
  assert sigs["serving_uint8"]["inputs"]["images"]["dtype"] == "DT_UINT8"
  assert sigs["from_examples"]["inputs"]["examples"]["dtype"] == "DT_STRING"


def test_row_and_columnar_forms_match_the_savedmodel(client, models, server):
  images = _images()
  current = list_versions(server[2])[max(list_versions(server[2]))]
  expected = _direct(current, images)
  rows = client.post(f"/v1/models/{NAME}:predict",
                     json={"instances": images.tolist()}).json()["predictions"]
  np.testing.assert_allclose([r["probabilities"] for r in rows], expected, rtol=1e-6)
  cols = client.post(f"/v1/models/{NAME}:predict", json={
      "signature_name": "serving_uint8", "inputs": images.reshape(3, -1).tolist()}
  ).json()["outputs"]
  np.testing.assert_allclose(cols["probabilities"], expected, rtol=1e-6)
  assert cols["classes"] == list(expected.argmax(axis=1))


def test_tf_examples_in_b64_and_classify(client, server):
  images = _images(2, seed=5)
  examples = [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=img.reshape(-1).tolist()))})).SerializeToString() for img in images]
  by_b64 = client.post(f"/v1/models/{NAME}:predict", json={
      "signature_name": "from_examples",
      "instances": [{"b64": base64.b64encode(e).decode()} for e in examples]}).json()
  by_pixels = client.post(f"/v1/models/{NAME}:predict",
                          json={"instances": images.tolist()}).json()
  assert [p["classes"] for p in by_b64["predictions"]] == [
      p["classes"] for p in by_pixels["predictions"]]
  results = client.post(f"/v1/models/{NAME}:classify", json={"examples": [
      {"image": img.reshape(-1).tolist()} for img in images]}).json()["results"]
  assert len(results) == 2 and all(len(r) == 10 for r in results)
  for pairs, p in zip(results, by_pixels["predictions"]):
    assert [label for label, _ in pairs] == [str(i) for i in range(10)]
    assert max(range(10), key=lambda i: pairs[i][1]) == p["classes"]


def test_body_deadlines_cancel_only_the_reads_past_theirs():
  """One timer per loop keeps every read's deadline (two loops at once)."""
  deadlines = rest.Deadlines(0.3)

  async def read(seconds):
    task = asyncio.current_task()
    deadlines.watch(task)
    try:
      await asyncio.sleep(seconds)
      return "read"
    except asyncio.CancelledError:
      if not deadlines.expired(task):
        raise
      return "timed out"
    finally:
      deadlines.forget(task)

  async def main():
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow, quick = asyncio.create_task(read(30)), asyncio.create_task(read(0.05))
    assert await quick == "read"
    assert await slow == "timed out"
    assert 0.3 <= loop.time() - start < 0.3 + deadlines.interval + 1
    assert not slow.cancelling()  # the deadline's cancel was undone
    other = asyncio.create_task(read(30))  # cancelled by someone else: not a timeout
    await asyncio.sleep(0.01)
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
      await other
    both = asyncio.create_task(read(30))  # its deadline and someone else: cancelled
    await asyncio.sleep(0.01)
    # pylint: disable=protected-access
    deadlines._due[both] = 0  # due now: sweep at once, in place of the timer
    deadlines._timers.pop(loop).cancel()
    deadlines._sweep(loop)
    both.cancel()
    with pytest.raises(asyncio.CancelledError):
      await both
    await asyncio.sleep(deadlines.interval * 3)
    return loop

  results = [None, None]

  def run(i):
    results[i] = asyncio.run(main())
  threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(30)
  assert all(isinstance(r, asyncio.AbstractEventLoop) for r in results)
  assert not deadlines._timers  # pylint: disable=protected-access  # nothing watched: disarmed


@pytest.mark.parametrize("raw", [
    b'{"instances": [[0, 255, 7.5, 1e2, -0.0, 3E-1]]}',
    b' { "inputs" : [ [1,2] , [3,4] , [5,6] ] } ',
    b'{"instances": [[' + b",".join(b"%d" % (i % 256) for i in range(784)) + b']]}',
    b'{"instances": [[9007199254740993, -5]]}',  # past 2**53: rounded as numpy does
    b'{"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}',  # [N, 28, 28]-like
    b'{"inputs": [[[[0.5]]]]}',
])
def test_numeric_body_reads_what_the_full_parser_reads(raw):
  body = rest.NumericBody.read(raw)
  (key, value), = json.loads(raw).items()
  assert body is not None and body.form == ("row" if key == "instances" else "columnar")
  np.testing.assert_array_equal(body.values, np.asarray(value).astype(np.float64))
  assert body.values.dtype == np.float64


@pytest.mark.parametrize("raw", [
    b'{"instances": [[1, 2], [3, [4]]]}',       # nested, same count of numbers
    b'{"instances": [[1, 2], [3, 4, 5], [6]]}',  # ragged, same total
    b'{"instances": [[1, [2]], 3]}',            # a row that is a number
    b'{"instances": [1, 2, 3]}',                # 1-D
    b'{"instances": [[[1, 2]], [[3, [4]]]]}',   # 3-D, one value nested deeper
    b'{"instances": [[[1, 2], [3]], [[4, 5, 6]]]}',  # 3-D ragged, same totals
    b'{"instances": [[[1, 2], 3], [[4, 5], 6]]}',  # arrays beside numbers
    b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",  # past MAX_JSON_DEPTH
    b'{"instances": [[]]}', b'{"instances": []}', b'{"instances": {}}',
    b'{"instances": [[1, true]]}', b'{"instances": [[1, null]]}',
    b'{"instances": [[1, "2"]]}', b'{"instances": [[1, {"b64": "AA=="}]]}',
    b'{"instances": [[1, 1e400]]}', b'{"instances": [[1, 99999999999999999999999]]}',
    b'{"instances": [[1, NaN]]}', b'{"instances": [[1, 2]]',
    b'{"instances": [[1, 2]], "instances": [[3, 4]]}',  # a key twice
    b'{"instances": [[1, 2]], "signature_name": "serving_default"}',
    b'{"examples": [[1, 2]]}', b'[[1, 2]]', b'"instances"', b'',
    b'{"instances": [[1, 2]]}\xff', '{"instances": [[1, "\u00e9"]]}'.encode("latin-1"),
])
def test_numeric_body_leaves_everything_else_to_the_full_parser(raw):
  assert rest.NumericBody.read(raw) is None


def _damaged(value, rng):
  """`value` (nested lists) with one random change that may make it irregular."""
  path, node = [], value
  while isinstance(node, list):
    i = int(rng.integers(len(node)))
    path.append((node, i))
    node = node[i]
  parent, i = path[int(rng.integers(len(path)))]
  change = rng.integers(5)
  if change == 0:
    del parent[i]  # one element short
  elif change == 1:
    parent.insert(i, parent[i])  # one element more
  elif change == 2:
    parent[i] = [parent[i]]  # nested one level deeper
  elif change == 3 and isinstance(parent[i], list):
    parent[i] = 7  # a number where an array was
  return value  # (change 4: unchanged)


def test_the_numeric_body_accepts_exactly_the_regular_tensors():
  rng = np.random.default_rng(11)
  for _ in range(400):
    shape = tuple(int(d) for d in rng.integers(1, 4, int(rng.integers(2, 5))))
    value = _damaged(rng.integers(0, 256, shape).tolist(), rng)
    try:
      expected = np.array(value, dtype=np.float64)
      regular = expected.ndim >= 2 and expected.size > 0
    except ValueError:  # ragged
      regular = False
    body = rest.NumericBody.read(json.dumps({"instances": value}).encode())
    assert (body is not None) == regular, value
    if regular:
      np.testing.assert_array_equal(body.values, expected)


@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28)])
def test_the_numeric_body_path_answers_as_the_full_parser(client, shape):
  images = _images(3, seed=3).reshape(shape).tolist()
  assert rest.NumericBody.read(json.dumps({"instances": images}).encode()) is not None
  fast = client.post(f"/v1/models/{NAME}:predict", json={"instances": images}).json()
  full = client.post(f"/v1/models/{NAME}:predict", json={
      "signature_name": features.SERVING_SIGNATURE, "instances": images}).json()
  assert fast == full
  columns = client.post(f"/v1/models/{NAME}:predict", json={"inputs": images}).json()
  assert columns["outputs"]["classes"] == [p["classes"] for p in fast["predictions"]]


GOOD = {"instances": [[[0] * 28] * 28]}


@pytest.mark.parametrize("path,body,status,message", [
    (f"/v1/models/{NAME}:predict", b"{not json", 400, "JSON Parse error"),
    (f"/v1/models/{NAME}:predict", {"instances": [[1, 2, 3]]}, 400, "must be shaped"),
    (f"/v1/models/{NAME}:predict", {"instances": [[[0] * 28] * 27 + [[0] * 5]]}, 400, "ragged"),
    (f"/v1/models/{NAME}:predict", {"instances": [["a"] * 784]}, 400, "expected a number"),
    (f"/v1/models/{NAME}:predict", b'{"instances": [[NaN]]}', 400, "NaN"),
    (f"/v1/models/{NAME}:predict", {"instances": [[300] * 784]}, 400, "0-255"),
    (f"/v1/models/{NAME}:predict", {"instances": [[-1] * 784]}, 400, "0-255"),
    (f"/v1/models/{NAME}:predict", {"signature_name": "serving_uint8",
                                    "instances": [[256] * 784]}, 400, "do not fit uint8"),
    (f"/v1/models/{NAME}:predict", {"instances": [[0] * 784] * 200}, 429, "exceeds the limit"),
    (f"/v1/models/{NAME}:predict", {"signature_name": "from_examples",
                                    "instances": [{"b64": "not base64!"}]}, 400, "base64"),
    (f"/v1/models/{NAME}:predict", {"instances": [], "inputs": []}, 400, "Not both"),
    (f"/v1/models/{NAME}:predict", {"signature": 1}, 400, "Missing 'inputs' or 'instances'"),
    (f"/v1/models/{NAME}:predict", {"signature_name": "nope", **GOOD}, 400, "not found in signature def"),
    ("/v1/models/other:predict", GOOD, 404, "Servable not found"),
    (f"/v1/models/{NAME}/versions/7:predict", GOOD, 404, "Specific(mnist, 7)"),
    (f"/v1/models/{NAME}:regress", GOOD, 501, "not supported"),
    ("/v1/models/other", None, 404, "Could not find any versions"),
])
def test_bad_requests_get_tf_serving_errors_and_the_server_stays_up(
    client, path, body, status, message):
  if body is None:
    response = client.get(path)
  elif isinstance(body, bytes):
    response = client.post(path, content=body)
  else:
    response = client.post(path, content=json.dumps(body))
  assert response.status_code == status, response.text
  assert set(response.json()) == {"error"} and message in response.json()["error"]
  assert client.post(f"/v1/models/{NAME}:predict", json=GOOD).status_code == 200


def test_hot_swap_drops_no_request_and_a_bad_version_does_not_replace_a_good_one(
    client, server, models):
  rest, store, base = server
  images = _images(2, seed=7)
  results, failures, stop = [], [], threading.Event()

  def loop():
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline and len(results) < 5000:
      r = client.post(f"/v1/models/{NAME}:predict", json={"instances": images.tolist()})
      (results if r.status_code == 200 else failures).append(r)

  thread = threading.Thread(target=loop)
  thread.start()
  try:
    time.sleep(0.3)
    new = int(os.path.basename(pusher.push(models[1], base, {"model_uri": "second"})))
    wait_for(store, new, timeout=30)
    n_at_swap = len(results)
    deadline = time.monotonic() + 10
    while len(results) < n_at_swap + 20 and time.monotonic() < deadline:
      time.sleep(0.05)
    # A version that cannot load: reported, and the good one keeps serving.
    broken = os.path.join(base, str(new + 1))
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
      f.write(b"not a SavedModel")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        s["version"] == str(new + 1) and s["state"] == "END"
        for s in client.get(f"/v1/models/{NAME}").json()["model_version_status"]):
      time.sleep(0.05)
  finally:
    stop.set()
    thread.join()
  assert not failures, [f.text for f in failures[:3]]
  assert len(results) > n_at_swap + 10
  statuses = {s["version"]: s for s in
              client.get(f"/v1/models/{NAME}").json()["model_version_status"]}
  assert statuses[str(new)]["state"] == "AVAILABLE"
  assert statuses[str(new + 1)]["state"] == "END"
  assert "failed to load" in statuses[str(new + 1)]["status"]["error_message"]
  latest = client.post(f"/v1/models/{NAME}:predict",
                       json={"instances": images.tolist()}).json()["predictions"]
  np.testing.assert_allclose([p["probabilities"] for p in latest],
                             _direct(models[1], images), rtol=1e-6)
  first = [p["probabilities"] for p in results[0].json()["predictions"]]
  assert not np.allclose(first, _direct(models[1], images))  # v1 answered before
