"""`make soak`: 16 clients for 60 s while a new and then a corrupt version appear.

The server runs as `mnist-tfx serve` in its own process, on loopback, over a
temporary copy of the latest pushed version. Clients (REST and gRPC, one
thread each, single-image requests) run until the time is up; a third of
the way in a new version is pushed, two thirds in a corrupt one appears.
Good requests must all succeed: the new version is swapped in, the corrupt
one is reported and never served. Printed: requests, failures, the versions
answering, the corrupt version's status, and the server's RSS before and
after. Bounded in time; everything stays on 127.0.0.1.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Dict, List

import numpy as np

from components import features
from mnist_tfx import defaults

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's import
warnings.simplefilter("ignore", FutureWarning)  # Google libraries' Python notices
CLIENTS = 16
GRPC_CLIENTS = 4  # of the 16; the rest use REST
SECONDS = 60.0


def rss_mib(pid: int) -> float:
  with open(f"/proc/{pid}/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _rest_client(port: int, image: List, stop: threading.Event,
                 stats: Dict[str, Any]) -> None:
  import httpx  # pylint: disable=g-import-not-at-top
  body = json.dumps({"instances": [image]})
  url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
  with httpx.Client(timeout=30) as client:
    while not stop.is_set():
      try:
        r = client.post(url, content=body)
        ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
        error = None if ok else f"{r.status_code} {r.text[:200]}"
      except httpx.HTTPError as e:
        error = repr(e)
      _count(stats, "rest", error)


def _grpc_client(port: int, image: np.ndarray, stop: threading.Event,
                 stats: Dict[str, Any]) -> None:
  import grpc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  request = predict_pb2.PredictRequest()
  request.model_spec.name = defaults.MODEL_NAME
  request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(image[None]))
  with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    while not stop.is_set():
      try:
        response = stub.Predict(request, timeout=30)
        error = None
        with stats["lock"]:
          stats["versions"].add(response.model_spec.version.value)
      except grpc.RpcError as e:
        error = f"{e.code().name} {e.details()}"
      _count(stats, "grpc", error)


def _count(stats: Dict[str, Any], api: str, error) -> None:
  with stats["lock"]:
    stats[api] += 1
    if error is not None:
      stats["failures"] += 1
      if len(stats["errors"]) < 5:
        stats["errors"].append(f"{api}: {error}")


def soak(model_base_path: str, seconds: float = SECONDS,
         clients: int = CLIENTS) -> Dict[str, Any]:
  """Runs the soak; returns its figures (see the module doc)."""
  import httpx  # pylint: disable=g-import-not-at-top
  from components import pusher  # pylint: disable=g-import-not-at-top
  from components.model_layout import versions  # pylint: disable=g-import-not-at-top
  from bench.serving_bench import start_server  # pylint: disable=g-import-not-at-top
  found = versions(model_base_path)
  if not found:
    raise SystemExit(f"no pushed model under {model_base_path}: run `make run` first")
  source = found[max(found)]
  image = np.random.default_rng(0).integers(0, 256, features.IMAGE_SHAPE).astype(
      np.float32)
  with tempfile.TemporaryDirectory(prefix="mnist-soak-") as tmp:
    base = os.path.join(tmp, "mnist")
    first = pusher.push(source, base, {"model_uri": "soak-first"})
    server = start_server(base, batching=False, poll_seconds=0.5)
    stop = threading.Event()
    stats: Dict[str, Any] = {"rest": 0, "grpc": 0, "failures": 0, "errors": [],
                             "versions": set(), "lock": threading.Lock()}
    threads = [threading.Thread(
        target=_grpc_client if i < GRPC_CLIENTS else _rest_client,
        args=(server["grpc"] if i < GRPC_CLIENTS else server["rest"],
              image if i < GRPC_CLIENTS else image.tolist(), stop, stats),
        daemon=True) for i in range(clients)]
    try:
      pid = server["proc"].pid
      rss_before = rss_mib(pid)
      start = time.monotonic()
      for t in threads:
        t.start()
      time.sleep(seconds / 3)
      second = pusher.push(source, base, {"model_uri": "soak-second"})
      time.sleep(seconds / 3)
      corrupt = os.path.join(base, str(int(os.path.basename(second)) + 1))
      staging = os.path.join(base, ".staging-corrupt")
      os.makedirs(os.path.join(staging, "variables"))
      with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
      os.rename(staging, corrupt)
      time.sleep(max(0.0, seconds - (time.monotonic() - start)))
      stop.set()
      for t in threads:
        t.join(60)
      elapsed = time.monotonic() - start
      rss_after = rss_mib(pid)
      status = httpx.get(f"http://127.0.0.1:{server['rest']}/v1/models/mnist",
                         timeout=10).json()["model_version_status"]
    finally:
      stop.set()
      server["proc"].terminate()
      server["proc"].wait(timeout=30)
  states = {int(s["version"]): s for s in status}
  return {
      "seconds": round(elapsed, 1), "clients": clients,
      "requests": stats["rest"] + stats["grpc"], "rest_requests": stats["rest"],
      "grpc_requests": stats["grpc"], "failures": stats["failures"],
      "errors": stats["errors"],
      "req_per_s": round((stats["rest"] + stats["grpc"]) / elapsed, 1),
      "versions_answering": sorted(stats["versions"]),
      "first_version": int(os.path.basename(first)),
      "new_version": int(os.path.basename(second)),
      "corrupt_version": int(os.path.basename(corrupt)),
      "corrupt_status": states.get(int(os.path.basename(corrupt))),
      "new_version_status": states.get(int(os.path.basename(second))),
      "rss_mib_before": round(rss_before, 1), "rss_mib_after": round(rss_after, 1),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bench.soak")
  parser.add_argument("--model-base-path", default=os.path.join(
      defaults.OUTPUT_DIR, "serving_model", defaults.MODEL_NAME))
  parser.add_argument("--seconds", type=float, default=SECONDS)
  parser.add_argument("--clients", type=int, default=CLIENTS)
  parser.add_argument("--output", default=os.path.join(defaults.OUTPUT_DIR, "bench", "soak.json"))
  args = parser.parse_args(argv)
  r = soak(args.model_base_path, args.seconds, args.clients)
  corrupt = r["corrupt_status"] or {}
  print(f"soak: {r['clients']} clients for {r['seconds']} s: {r['requests']} requests "
        f"({r['rest_requests']} REST, {r['grpc_requests']} gRPC, {r['req_per_s']} req/s), "
        f"{r['failures']} failed", flush=True)
  print(f"versions: {r['first_version']} then {r['new_version']} (new, "
        f"{(r['new_version_status'] or {}).get('state')}); answering: "
        f"{r['versions_answering']}; corrupt {r['corrupt_version']}: "
        f"{corrupt.get('state')} ({corrupt.get('status', {}).get('error_message', '')[:80]})")
  print(f"server RSS: {r['rss_mib_before']} MiB before, {r['rss_mib_after']} MiB after")
  for error in r["errors"]:
    print(f"  failed: {error}")
  os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(r, f, indent=2)
  healthy = (r["failures"] == 0 and r["new_version"] in r["versions_answering"]
             and r["corrupt_version"] not in r["versions_answering"]
             and corrupt.get("state") == "END")
  return 0 if healthy else 1


if __name__ == "__main__":
  sys.exit(main())
