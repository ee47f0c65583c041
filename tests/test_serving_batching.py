"""Server-side batching: concurrent requests share model calls, answers unchanged."""

import asyncio
import threading

import httpx
import numpy as np
import pytest

from components import pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from serving import service
from serving.batching import Batcher, GreedyBatcher
from serving.model_store import ModelStore, ServingError
from serving.server import RestServer
from tests import tiny_mnist


@pytest.fixture(scope="module")
def batched(tft_output, tmp_path_factory):
  root = tmp_path_factory.mktemp("batching")
  model_dir = str(root / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  pusher.push(model_dir, str(root / "mnist"), {})
  store = ModelStore("mnist", str(root / "mnist")).start()
  batcher = Batcher(service.run_checked, max_batch_size=16, timeout_micros=200_000)
  rest = RestServer(store, port=0, batcher=batcher).start()
  yield rest, batcher, store
  rest.stop()
  store.stop()


def _concurrently(port, bodies):
  results = [None] * len(bodies)

  def send(i):
    with httpx.Client(timeout=60) as c:
      results[i] = c.post(f"http://127.0.0.1:{port}/v1/models/mnist:predict",
                          json=bodies[i])

  threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return results


def test_concurrent_requests_are_batched_and_answers_are_unchanged(batched):
  rest, batcher, store = batched
  images = tiny_mnist.make_images(np.arange(12) % 10, seed=3)
  servable = store.get("mnist")
  expected = service.run_signature(servable.signatures["serving_default"],
                                   {"images": images.astype(np.float32)})
  calls_before = batcher.calls
  responses = _concurrently(rest.port, [{"instances": [img.tolist()]} for img in images])
  assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
  got = np.array([r.json()["predictions"][0]["probabilities"] for r in responses])
  np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-5, atol=1e-7)
  calls = batcher.calls - calls_before
  assert 1 <= calls < len(images)  # shared calls, not one per request


def test_a_bad_request_in_a_batch_fails_alone(batched):
  rest, _, _ = batched
  good = tiny_mnist.make_images(np.arange(6), seed=4).tolist()
  bodies = [{"instances": [img]} for img in good]
  bodies.insert(3, {"instances": [[[300.0] * 28] * 28]})  # out of range
  responses = _concurrently(rest.port, bodies)
  assert [r.status_code for r in responses] == [200, 200, 200, 400, 200, 200, 200]
  assert "0-255" in responses[3].json()["error"]


def test_batcher_isolates_errors_and_splits_rows():
  calls = []

  def run(fn, inputs):
    calls.append(len(inputs["x"]))
    if np.any(inputs["x"] < 0):
      raise ServingError("INVALID_ARGUMENT", "negative")
    return {"y": inputs["x"] * 2}

  batcher = Batcher(run, max_batch_size=8, timeout_micros=300_000)
  out, errors = {}, {}

  def call(i, value):
    try:
      out[i] = batcher(("k",), None, {"x": np.full((2, 3), value, np.float32)})
    except ServingError as e:
      errors[i] = e.message

  threads = [threading.Thread(target=call, args=(i, -1 if i == 2 else i)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert errors == {2: "negative"}
  for i in (0, 1, 3):
    np.testing.assert_array_equal(out[i]["y"], np.full((2, 3), 2 * i))
  assert max(calls) > 2  # requests were merged before the failure split them


def test_bad_settings_are_refused():
  with pytest.raises(ValueError):
    Batcher(lambda f, i: i, max_batch_size=0)


# --- greedy batching (the REST default) ---------------------------------------

def _greedy_run(calls):
  def run(fn, inputs):
    calls.append(len(inputs["x"]))
    if np.any(inputs["x"] < 0):
      raise ServingError("INVALID_ARGUMENT", "negative")
    return {"y": inputs["x"] * 2}
  return run


def _gather(batcher, arrays, key="k"):
  async def all_at_once():
    return await asyncio.gather(*(batcher((key,), None, {"x": a}) for a in arrays),
                                return_exceptions=True)
  return asyncio.run(all_at_once())


def test_greedy_batcher_merges_what_arrives_together_without_waiting():
  calls = []
  batcher = GreedyBatcher(_greedy_run(calls), max_batch_size=4)
  arrays = [np.full((2, 3), i, np.float32) for i in range(5)]  # 10 rows
  results = _gather(batcher, arrays)
  assert calls == [4, 4, 2]  # at most 4 rows a call, in arrival order
  for i, result in enumerate(results):
    np.testing.assert_array_equal(result["y"], np.full((2, 3), 2 * i))
  # A lone request runs at once, alone.
  calls.clear()
  assert _gather(batcher, [np.ones((1, 3), np.float32)])[0]["y"].shape == (1, 3)
  assert calls == [1]


def test_greedy_batcher_gathers_what_arrives_within_its_turns():
  """A request that arrives a loop turn after the first joins its batch."""

  async def staggered(batcher, gap_turns):
    loop = asyncio.get_running_loop()
    first = asyncio.ensure_future(batcher(("k",), None, {"x": np.ones((1, 3), np.float32)}))
    for _ in range(gap_turns):
      await asyncio.sleep(0)  # one loop turn
    second = loop.create_task(batcher(("k",), None, {"x": np.ones((1, 3), np.float32)}))
    return await asyncio.gather(first, second)

  for turns, expected in ((1, [1, 1]), (3, [2])):
    calls = []
    batcher = GreedyBatcher(_greedy_run(calls), max_batch_size=8, turns=turns,
                            quiet_turns=1)
    results = asyncio.run(staggered(batcher, 1))
    assert calls == expected, turns
    for result in results:
      np.testing.assert_array_equal(result["y"], [[2, 2, 2]])
  for bad in ({"turns": 0}, {"quiet_turns": 0}, {"gather_turns": -1}):
    with pytest.raises(ValueError):
      GreedyBatcher(_greedy_run([]), **bad)


def test_greedy_batcher_gathers_requests_that_arrive_one_a_turn():
  """As gRPC's do: the batch grows while turns bring requests, and ends
  after `quiet_turns` turns in a row bring none, at `max_batch_size`
  requests, or `gather_turns` turns after the first `turns`."""

  async def one_a_turn(batcher, arrivals):
    """A request at each turn listed in `arrivals` (turn 0 is the first)."""
    tasks = []
    for turn in range(max(arrivals) + 1):
      if turn in arrivals:
        tasks.append(asyncio.ensure_future(
            batcher(("k",), None, {"x": np.full((1, 3), turn, np.float32)})))
      await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)
    assert [r["y"][0, 0] for r in results] == [2 * t for t in sorted(arrivals)]

  cases = [
      # (arrivals, max_batch_size, quiet_turns, gather_turns, calls)
      (range(12), 32, 2, 32, [12]),  # one a turn, well past the first 3 turns
      ([0, 1, 2, 3, 5, 6, 7], 32, 2, 32, [7]),  # one quiet turn does not end it
      ([0, 1, 2, 3, 6, 7], 32, 2, 32, [4, 2]),  # two in a row do
      ([0, 1, 2, 3, 6, 7], 32, 3, 32, [6]),
      (range(12), 5, 2, 32, [5, 5, 2]),  # a full batch runs at once
      (range(12), 32, 2, 4, [7, 5]),  # 3 + 4 turns at most: the 7 queued by then
  ]
  for arrivals, size, quiet, gather, expected in cases:
    calls = []
    batcher = GreedyBatcher(_greedy_run(calls), max_batch_size=size, turns=3,
                            quiet_turns=quiet, gather_turns=gather)
    asyncio.run(one_a_turn(batcher, list(arrivals)))
    assert calls == expected, (list(arrivals), size, quiet, gather)


def test_greedy_batcher_keeps_an_error_with_its_request():
  calls = []
  batcher = GreedyBatcher(_greedy_run(calls), max_batch_size=8)
  arrays = [np.ones((1, 3), np.float32), -np.ones((1, 3), np.float32),
            np.ones((1, 3), np.float32)]
  results = _gather(batcher, arrays)
  assert isinstance(results[1], ServingError)
  np.testing.assert_array_equal(results[0]["y"], [[2, 2, 2]])
  np.testing.assert_array_equal(results[2]["y"], [[2, 2, 2]])
  assert calls == [3, 1, 1, 1]  # the merged call failed; each ran alone


def test_greedy_batcher_keeps_shapes_and_keys_apart():
  calls = []
  batcher = GreedyBatcher(_greedy_run(calls), max_batch_size=8)

  async def mixed():
    return await asyncio.gather(
        batcher(("v1",), None, {"x": np.ones((1, 3), np.float32)}),
        batcher(("v2",), None, {"x": np.ones((1, 3), np.float32)}),
        batcher(("v1",), None, {"x": np.ones((1, 4), np.float32)}))
  assert [r["y"].shape for r in asyncio.run(mixed())] == [(1, 3), (1, 3), (1, 4)]
  assert calls == [1, 1, 1]


# --- both APIs on one loop (mnist-tfx serve) -----------------------------------

def _grpc_request(image, signature=""):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "mnist"
  request.model_spec.signature_name = signature
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(image[None], dtype=tf.float32))
  return request


@pytest.fixture()
def both_apis(batched):
  """REST and gRPC served as `mnist-tfx serve` serves them: one loop, one
  greedy batcher (counting its calls)."""
  from serving import grpc_server, server  # pylint: disable=g-import-not-at-top
  _, _, store = batched
  greedy = GreedyBatcher(service.run_checked, max_batch_size=32)
  servers = server.Servers(store, server.bind("127.0.0.1", 0), 0, None, greedy,
                           server.Settings("mnist", "(test)"))
  loop_thread = grpc_server.LoopThread()
  running = asyncio.run_coroutine_threadsafe(servers.run(), loop_thread.loop)
  assert servers.started.wait(60), running
  yield servers
  servers.stop()
  running.result(30)
  loop_thread.close()


def test_grpc_and_rest_share_one_greedy_batcher(both_apis, batched):
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  _, _, store = batched
  greedy = both_apis.greedy
  images = tiny_mnist.make_images(np.arange(16) % 10, seed=5).astype(np.float32)
  expected = service.run_signature(store.get("mnist").signatures["serving_default"],
                                   {"images": images})["probabilities"]
  with grpc.insecure_channel(f"127.0.0.1:{both_apis.grpc_port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # One request each way: both pass through the one batcher.
    rows = greedy.rows
    one = stub.Predict(_grpc_request(images[0]), timeout=30)
    assert greedy.rows == rows + 1
    np.testing.assert_allclose(tf.make_ndarray(one.outputs["probabilities"])[0],
                               expected[0], rtol=1e-5, atol=1e-7)
    rest = _concurrently(both_apis.rest_port, [{"instances": [images[1].tolist()]}])
    assert rest[0].status_code == 200 and greedy.rows == rows + 2
    # Concurrent gRPC calls share model calls; answers unchanged.
    calls = greedy.calls
    futures = [stub.Predict.future(_grpc_request(image), timeout=30) for image in images]
    got = np.array([tf.make_ndarray(f.result().outputs["probabilities"])[0]
                    for f in futures])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert 1 <= greedy.calls - calls < len(images)


def test_grpc_bad_request_among_batched_ones_fails_alone(both_apis):
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  images = tiny_mnist.make_images(np.arange(6), seed=6).astype(np.float32)
  requests = [_grpc_request(image) for image in images]
  requests.insert(2, _grpc_request(np.full((28, 28), 300.0, np.float32)))
  requests.insert(4, _grpc_request(images[0], signature="no_such_signature"))
  with grpc.insecure_channel(f"127.0.0.1:{both_apis.grpc_port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    futures = [stub.Predict.future(r, timeout=30) for r in requests]
    codes = [f.code() for f in futures]
    assert "0-255" in futures[2].details()
  assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.INVALID_ARGUMENT] + [
      grpc.StatusCode.OK] + [grpc.StatusCode.INVALID_ARGUMENT] + [grpc.StatusCode.OK] * 3


def test_grpc_timed_batching_merges_concurrent_calls(batched):
  import grpc  # pylint: disable=g-import-not-at-top
  from serving import grpc_server  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  _, _, store = batched
  batcher = Batcher(service.run_checked, max_batch_size=16, timeout_micros=200_000)
  server = grpc_server.start(store, "127.0.0.1", 0, batcher=batcher)
  try:
    images = tiny_mnist.make_images(np.arange(8), seed=7).astype(np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      futures = [stub.Predict.future(_grpc_request(image), timeout=30) for image in images]
      assert all(f.code() == grpc.StatusCode.OK for f in futures)
    assert 1 <= batcher.calls < len(images)
  finally:
    server.stop(0)


def test_a_full_batch_queue_refuses_with_unavailable_under_a_burst():
  import time  # pylint: disable=g-import-not-at-top
  release = threading.Event()

  def slow(fn, inputs):
    del fn
    release.wait(10)
    return {"y": inputs["x"] * 2}

  batcher = Batcher(slow, max_batch_size=2, timeout_micros=0, max_enqueued_batches=1)
  outcomes = []

  def call(i):
    try:
      outcomes.append(batcher(("v", "s"), None, {"x": np.full((1, 3), i, np.float32)}))
    except ServingError as e:
      outcomes.append(e)

  threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
  for t in threads:
    t.start()
    time.sleep(0.01)  # arrive one after another while the first batch runs
  time.sleep(0.2)
  release.set()
  for t in threads:
    t.join(10)
  refused = [o for o in outcomes if isinstance(o, ServingError)]
  served = [o for o in outcomes if not isinstance(o, ServingError)]
  assert len(outcomes) == 12 and refused and served
  assert all(e.code == "UNAVAILABLE" and "--max-enqueued-batches" in e.message
             for e in refused)
  # The first batch running plus a queue of one batch (2 rows): at most 4 waited.
  assert len(served) <= 4
  # After the burst, there is room again.
  assert batcher(("v", "s"), None, {"x": np.ones((1, 3), np.float32)})["y"].sum() == 6


def test_max_enqueued_batches_must_be_positive():
  with pytest.raises(ValueError):
    Batcher(lambda fn, inputs: inputs, max_enqueued_batches=0)
