"""`make bench-serving`: the in-process SavedModel call vs. REST and gRPC.

The server runs in a subprocess (`mnist-tfx serve`, loopback, free ports).
The load comes from C clients in other processes, each request built once:
wrk for REST and h2load (nghttp2's) for gRPC, both Debian's; where they are
missing, this process's asyncio httpx client and grpcio's synchronous client.
Measured:
- p50/p99 latency of single-image requests sent one after another;
- throughput with 16 concurrent single-image clients;
- throughput with 100-image requests.
This machine's speed drifts within minutes, so each API's measurement is
bracketed by two of the in-process call and its ratios are to their mean;
the median of the rounds is reported, each REST figure beside its goal
(GOALS; the command exits 1 when one is missed). Requests are bounded in
number and time; everything stays on 127.0.0.1.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from components import features
from mnist_tfx import defaults, speedups

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's import
SEQUENTIAL = 300
CONCURRENT_CLIENTS = 16
CONCURRENT_REQUESTS = 1600
BIG_BATCH = 100
BIG_REQUESTS = 60
TIME_LIMIT = 120.0  # seconds per measurement, at most
ROUNDS = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _percentiles(seconds: List[float]) -> Dict[str, float]:
  ms = np.array(seconds) * 1000
  return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
          "p99_ms": round(float(np.percentile(ms, 99)), 3),
          "mean_ms": round(float(ms.mean()), 3), "n": len(ms)}


class InProcess:
  """The reference: the SavedModel's public call, one image, back to back."""

  def __init__(self, model_dir: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._fn = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE]
    rng = np.random.default_rng(0)
    self._x = tf.constant(rng.integers(0, 256, (1,) + features.IMAGE_SHAPE
                                       ).astype(np.float32))

  def measure(self) -> Dict[str, float]:
    for _ in range(20):
      self._fn(images=self._x)
    times = []
    for _ in range(SEQUENTIAL):
      t = time.perf_counter()
      self._fn(images=self._x)["probabilities"].numpy()
      times.append(time.perf_counter() - t)
    result = _percentiles(times)
    result["rate_per_s"] = round(1000 / result["mean_ms"], 1)
    return result


class Rest:

  def __init__(self, port: int):
    import httpx  # pylint: disable=g-import-not-at-top
    self.url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
    self.client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(
        max_connections=CONCURRENT_CLIENTS + 4))

  async def __call__(self, images: np.ndarray) -> None:
    r = await self.client.post(self.url, content=json.dumps(
        {"instances": images.tolist()}))
    if r.status_code != 200:
      raise RuntimeError(r.text)

  async def close(self):
    await self.client.aclose()


def grpc_measure(port: int, image: np.ndarray, batch: np.ndarray) -> Dict[str, Any]:
  """gRPC measured with grpcio's synchronous client (its C core does the I/O).

  Requests are built once, as wrk's body is: what is measured is the server.
  Concurrency: 16 calls in flight at all times, each answer starting the next.
  """
  import threading  # pylint: disable=g-import-not-at-top
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

  def request(images: np.ndarray):
    r = predict_pb2.PredictRequest()
    r.model_spec.name = defaults.MODEL_NAME
    r.inputs[features.IMAGES_INPUT].CopyFrom(
        tf.make_tensor_proto(images.astype(np.float32)))
    return r

  with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    one, big = request(image[None]), request(batch)
    for _ in range(50):
      predict(one, timeout=60)
    times = []
    deadline = time.monotonic() + TIME_LIMIT
    for _ in range(SEQUENTIAL * 3):
      t = time.perf_counter()
      predict(one, timeout=60)
      times.append(time.perf_counter() - t)
      if time.monotonic() > deadline:
        break
    result: Dict[str, Any] = {"sequential": _percentiles(times)}

    lock, done, errors = threading.Lock(), threading.Event(), []
    state = {"sent": 0, "answered": 0}

    def send():
      with lock:
        if state["sent"] >= CONCURRENT_REQUESTS * 2:
          return
        state["sent"] += 1
      predict.future(one, timeout=60).add_done_callback(answered)

    def answered(future):
      if future.exception() is not None:
        errors.append(future.exception())
      with lock:
        state["answered"] += 1
        finished = state["answered"] >= CONCURRENT_REQUESTS * 2
      if finished:
        done.set()
      else:
        send()

    t = time.perf_counter()
    for _ in range(CONCURRENT_CLIENTS):
      send()
    done.wait(TIME_LIMIT)
    elapsed = time.perf_counter() - t
    if errors:
      raise RuntimeError(f"{len(errors)} gRPC requests failed: {errors[0]}")
    result["concurrent16_req_per_s"] = round(state["answered"] / elapsed, 1)

    t = time.perf_counter()
    for _ in range(BIG_REQUESTS):
      predict(big, timeout=60)
    result["batch100_images_per_s"] = round(
        BIG_REQUESTS * BIG_BATCH / (time.perf_counter() - t), 1)
  return result


async def _measure(call, image: np.ndarray, batch: np.ndarray) -> Dict[str, Any]:
  one = image[None]
  for _ in range(20):
    await call(one)
  times = []
  deadline = time.monotonic() + TIME_LIMIT
  for _ in range(SEQUENTIAL):
    t = time.perf_counter()
    await call(one)
    times.append(time.perf_counter() - t)
    if time.monotonic() > deadline:
      break
  result = {"sequential": _percentiles(times)}

  remaining = [CONCURRENT_REQUESTS]

  async def client():
    while remaining[0] > 0 and time.monotonic() < deadline2:
      remaining[0] -= 1
      await call(one)

  deadline2 = time.monotonic() + TIME_LIMIT
  t = time.perf_counter()
  await asyncio.gather(*(client() for _ in range(CONCURRENT_CLIENTS)))
  done = CONCURRENT_REQUESTS - max(remaining[0], 0)
  result["concurrent16_req_per_s"] = round(done / (time.perf_counter() - t), 1)

  t = time.perf_counter()
  n = 0
  for _ in range(BIG_REQUESTS):
    await call(batch)
    n += 1
    if time.perf_counter() - t > TIME_LIMIT:
      break
  result["batch100_images_per_s"] = round(n * BIG_BATCH / (time.perf_counter() - t), 1)
  return result


WRK_SECONDS = 5


def _wrk_seconds(text: str) -> float:
  value = float(re.match(r"[\d.]+", text).group())
  for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
    if text.endswith(unit):
      return value * scale
  return value


def wrk_rest(port: int, image: np.ndarray, batch: np.ndarray, tmp: str
             ) -> Dict[str, Any]:
  """REST measured with wrk (a C client: the load generator costs little)."""
  url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"

  def run(body: Dict[str, Any], threads: int, connections: int) -> str:
    script = os.path.join(tmp, f"wrk-{threads}-{connections}.lua")
    with open(script, "w") as f:
      f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
              f"wrk.body = {json.dumps(json.dumps(body))}\n")
    return subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{WRK_SECONDS}s",
         "--latency", "-s", script, url],
        capture_output=True, text=True, timeout=WRK_SECONDS + 60, check=True).stdout

  def rate(out: str) -> float:
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

  def errors(out: str) -> int:
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(found.group(1)) if found else 0

  one = {"instances": image[None].tolist()}
  seq = run(one, 1, 1)
  # Anchored: "93.50%" in the stdev column must not read as the 50th percentile.
  p50 = _wrk_seconds(re.search(r"^\s+50%\s+(\S+)", seq, re.M).group(1)) * 1000
  p99 = _wrk_seconds(re.search(r"^\s+99%\s+(\S+)", seq, re.M).group(1)) * 1000
  conc = run(one, 2, CONCURRENT_CLIENTS)
  big = run({"instances": batch.tolist()}, 1, 1)
  bad = errors(seq) + errors(conc) + errors(big)
  if bad:
    raise RuntimeError(f"{bad} REST requests failed under wrk")
  return {"sequential": {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                         "client": "wrk"},
          "concurrent16_req_per_s": rate(conc),
          "batch100_images_per_s": round(rate(big) * BIG_BATCH, 1)}


def h2load_grpc(port: int, image: np.ndarray, batch: np.ndarray, tmp: str
                ) -> Dict[str, Any]:
  """gRPC measured with h2load (nghttp2's C client), as wrk measures REST.

  A gRPC call is an HTTP/2 POST whose body is the length-prefixed request;
  each request is built once. h2load sees HTTP status only, and a failed
  gRPC call is HTTP 200 with its status in the trailers and no message:
  so every call must have returned exactly the bytes of a good answer
  (taken first from grpcio's client), else the run fails.
  """
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  url = f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"

  def framed(images: np.ndarray) -> Tuple[str, int]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = defaults.MODEL_NAME
    request.inputs[features.IMAGES_INPUT].CopyFrom(
        tf.make_tensor_proto(images.astype(np.float32)))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
      answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, timeout=60)
    body = request.SerializeToString()
    path = os.path.join(tmp, f"request-{len(images)}.bin")
    with open(path, "wb") as f:
      f.write(b"\0" + struct.pack(">I", len(body)) + body)
    return path, 5 + answer.ByteSize()

  def run(body: Tuple[str, int], clients: int, log: Optional[str] = None) -> str:
    path, answer_bytes = body
    cmd = ["h2load", "-D", str(WRK_SECONDS), f"-c{clients}",
           "-m1", f"-t{min(clients, 2)}", "-d", path,
           "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    if log:
      cmd.insert(1, f"--log-file={log}")
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=WRK_SECONDS + 60, check=True).stdout
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) "
                         r"succeeded", out).group(2))
    data = int(re.search(r"\((\d+)\) data", out).group(1))
    if not done or data != done * answer_bytes:
      raise RuntimeError(f"gRPC calls failed under h2load: {data} bytes of "
                         f"answers for {done} calls of {answer_bytes} bytes")
    return out

  def rate(out: str) -> float:
    return float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))

  one, big = framed(image[None]), framed(batch)
  log = os.path.join(tmp, "h2load.log")
  run(one, 1, log)
  with open(log) as f:  # per call: start time, HTTP status, microseconds
    micros = [int(line.split()[2]) for line in f if line.strip()]
  seq = _percentiles([m / 1e6 for m in micros])
  seq["client"] = "h2load"
  return {"sequential": seq, "concurrent16_req_per_s": rate(run(one, CONCURRENT_CLIENTS)),
          "batch100_images_per_s": round(rate(run(big, 1)) * BIG_BATCH, 1)}


def start_server(base: str, batching: bool,
                  poll_seconds: float = 2.0) -> Dict[str, Any]:
  rest_port, grpc_port = _free_port(), _free_port()
  cmd = [sys.executable, "-m", "mnist_tfx", "serve", "--model-base-path", base,
         "--rest-port", str(rest_port), "--grpc-port", str(grpc_port),
         "--poll-seconds", str(poll_seconds)]
  if batching:
    cmd.append("--enable-batching")
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  import httpx  # pylint: disable=g-import-not-at-top
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"server exited: {proc.stdout.read().decode()[-2000:]}")
    try:
      if httpx.get(f"http://127.0.0.1:{rest_port}/v1/models/mnist", timeout=1
                   ).status_code == 200:
        return {"proc": proc, "rest": rest_port, "grpc": grpc_port}
    except httpx.HTTPError:
      pass
    time.sleep(0.2)
  proc.kill()
  raise RuntimeError("server did not become ready in 120 s")


def _bracket(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
  """The in-process reference for a measurement: the mean of the calls
  measured right before and right after it, so drift during it counts both
  ways."""
  return {k: round((before[k] + after[k]) / 2, 3) for k in ("p50_ms", "p99_ms", "rate_per_s")}


# REST's goals against the in-process call: (what, comparison, bound).
GOALS = (("REST p50 / in-process p50", "<=", 2.0),
         ("REST p99 / in-process p50", "<=", 4.0),
         ("REST with 16 clients / in-process sequential rate", ">=", 1.5))
_GOAL_KEYS = ("p50_ratio", "p99_ratio", "concurrent16_ratio")


def _meets(value: float, op: str, bound: float) -> bool:
  return value <= bound if op == "<=" else value >= bound


def missed(summary: Dict[str, Any]) -> List[str]:
  """The goals a REST summary misses (empty: all met)."""
  return [what for (what, op, bound), key in zip(GOALS, _GOAL_KEYS)
          if not _meets(summary[key], op, bound)]


def _median(values: List[float]) -> float:
  return round(statistics.median(values), 3)


def _summary(rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Medians over rounds, of the figures and of each round's own ratios."""
  return {
      "p50_ms": _median([r["sequential"]["p50_ms"] for r in rounds]),
      "p99_ms": _median([r["sequential"]["p99_ms"] for r in rounds]),
      "concurrent16_req_per_s": _median([r["concurrent16_req_per_s"] for r in rounds]),
      "batch100_images_per_s": _median([r["batch100_images_per_s"] for r in rounds]),
      "p50_ratio": _median([r["ratios"]["p50"] for r in rounds]),
      "p99_ratio": _median([r["ratios"]["p99"] for r in rounds]),
      "concurrent16_ratio": _median([r["ratios"]["concurrent16"] for r in rounds]),
  }


def _line(label: str, s: Dict[str, Any]) -> str:
  return (f"{label:<22} p50 {s['p50_ms']:6.2f} ms ({s['p50_ratio']:.1f}x)  "
          f"p99 {s['p99_ms']:6.2f} ms ({s['p99_ratio']:.1f}x)  16 clients "
          f"{s['concurrent16_req_per_s']:7.1f} req/s ({s['concurrent16_ratio']:.2f}x)  "
          f"100-image requests {s['batch100_images_per_s']:8.1f} images/s")


def _measure_api(api: str, server: Dict[str, Any], image: np.ndarray,
                 batch: np.ndarray, tmp: str) -> Dict[str, Any]:
  if api == "gRPC":
    if shutil.which("h2load"):
      return h2load_grpc(server["grpc"], image, batch, tmp)
    return grpc_measure(server["grpc"], image, batch)
  if shutil.which("wrk"):
    return wrk_rest(server["rest"], image, batch, tmp)

  async def run():
    call = Rest(server["rest"])
    try:
      return await _measure(call, image, batch)
    finally:
      await call.close()
  return asyncio.run(run())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bench.serving_bench")
  parser.add_argument("--model-base-path", default=os.path.join(
      defaults.OUTPUT_DIR, "serving_model", defaults.MODEL_NAME))
  parser.add_argument("--output", default=os.path.join(defaults.OUTPUT_DIR, "bench", "serving.json"))
  parser.add_argument("--rounds", type=int, default=ROUNDS,
                      help="rounds with the default server (median reported)")
  args = parser.parse_args(argv)
  if args.rounds < 1:
    parser.error("--rounds must be >= 1")
  from components.model_layout import versions as list_versions  # pylint: disable=g-import-not-at-top
  versions = list_versions(args.model_base_path)
  if not versions:
    print(f"no pushed model under {args.model_base_path}: run `make run` first",
          file=sys.stderr)
    return 1
  rng = np.random.default_rng(0)  # latency does not depend on the pixels
  image = rng.integers(0, 256, features.IMAGE_SHAPE).astype(np.float32)
  batch = rng.integers(0, 256, (BIG_BATCH,) + features.IMAGE_SHAPE).astype(np.float32)
  reference = InProcess(versions[max(versions)])
  results: Dict[str, Any] = {"rounds": args.rounds}
  print(f"Speed-ups {'on' if speedups.enabled() else 'off'} in the server "
        f"({speedups.ENV}). Each round measures each API between two measurements of the "
        f"in-process call; its ratios are to their mean (this machine's speed "
        f"drifts within minutes). {args.rounds} round(s) with the default "
        "server, the median reported; one with --enable-batching.", flush=True)
  for batching in (False, True):
    server = start_server(args.model_base_path, batching)
    try:
      rounds: Dict[str, List[Dict[str, Any]]] = {"in-process": [], "REST": [], "gRPC": []}
      for n in range(1 if batching else args.rounds):
        print(f"round {n + 1}:", flush=True)
        for api in ("REST", "gRPC"):
          before = reference.measure()
          with tempfile.TemporaryDirectory() as tmp:
            r = _measure_api(api, server, image, batch, tmp)
          base = _bracket(before, reference.measure())
          rounds["in-process"].append(base)
          print(f"  in-process SavedModel, 1 image, around {api}: p50 "
                f"{base['p50_ms']} ms, {base['rate_per_s']} calls/s sequential "
                f"(before {before['p50_ms']} ms)", flush=True)
          seq = r["sequential"]
          r["ratios"] = {"p50": seq["p50_ms"] / base["p50_ms"],
                         "p99": seq["p99_ms"] / base["p50_ms"],
                         "concurrent16": r["concurrent16_req_per_s"] / base["rate_per_s"]}
          rounds[api].append(r)
          print("  " + _line(api + (" batching" if batching else ""),
                             _summary([r])), flush=True)
      for api in ("REST", "gRPC"):
        key = f"{api}{' batching' if batching else ''}"
        results[key] = {"median": _summary(rounds[api]), "rounds": rounds[api]}
      if not batching:
        results["in_process"] = {
            "p50_ms": _median([b["p50_ms"] for b in rounds["in-process"]]),
            "rate_per_s": _median([b["rate_per_s"] for b in rounds["in-process"]]),
            "rounds": rounds["in-process"]}
    finally:
      server["proc"].terminate()
      server["proc"].wait(timeout=30)
  base = results["in_process"]
  print(f"Median of {args.rounds} round(s) (in-process p50 {base['p50_ms']} ms, "
        f"{base['rate_per_s']} calls/s):", flush=True)
  for key in ("REST", "gRPC"):
    print("  " + _line(key, results[key]["median"]), flush=True)
  rest = results["REST"]["median"]
  misses = missed(rest)
  for (what, op, bound), value in zip(GOALS, (rest[k] for k in _GOAL_KEYS)):
    print(f"{'MISSED' if not _meets(value, op, bound) else 'goal met'}: {what} "
          f"{value:.2f}x (goal {op} {bound}x)", flush=True)
  grpc_rate = results["gRPC"]["median"]["concurrent16_req_per_s"]
  print(f"gRPC with 16 clients: {grpc_rate / rest['concurrent16_req_per_s']:.2f}x "
        "REST's rate (not a goal: grpcio's own cost per call is above REST's "
        "whole path, see docs/benchmarks.md)", flush=True)
  results["speedups"] = "on" if speedups.enabled() else "off"
  os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(results, f, indent=2)
  return 1 if misses else 0


if __name__ == "__main__":
  sys.exit(main())
