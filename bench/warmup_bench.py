"""`make bench-warmup`: a new version's first request, warmed and cold.

Starts `mnist-tfx serve` on the newest pushed version (which carries the
warm-up file the infra validator writes), with and without `--no-warmup`,
alternating, each in a fresh process; once `/v2/health/ready` answers, times
the first REST and the first gRPC predict of one image, then the median of
the next 20. Prints each figure; the warmed first request must cost at most
GOAL_RATIO times a warmed steady one (exit 1 otherwise).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

from mnist_tfx import defaults
from serving.server import announced_ports

ROUNDS = 3
STEADY = 20
GOAL_RATIO = 3.0
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _serve(base: str, warm: bool, speedups: bool):
  # With the speed-ups on, loading a version already calls each signature
  # once (the direct call's check): the replay then adds less.
  proc = subprocess.Popen(
      [sys.executable, "-m", "mnist_tfx", "serve", "--model-base-path", base,
       "--rest-port", "0", "--grpc-port", "0"] + ([] if warm else ["--no-warmup"])
      + ([] if speedups else ["--no-speedups"]),
      cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      env=dict(os.environ, PYTHONPATH=_ROOT))
  text, ports = "", None
  while ports is None:
    line = proc.stdout.readline()
    if not line:
      raise RuntimeError("the server did not start")
    text += line
    ports = announced_ports(text)
  return (proc,) + ports


def _times(rest: int, grpc_port: int) -> Dict[str, float]:
  import grpc  # pylint: disable=g-import-not-at-top
  import httpx  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc,  # pylint: disable=g-import-not-at-top
                                       predict_pb2, prediction_service_pb2_grpc)
  url = f"http://127.0.0.1:{rest}"
  while httpx.get(url + "/v2/health/ready").status_code != 200:
    time.sleep(0.05)
  body = {"instances": np.zeros((1, 784)).tolist()}
  request = predict_pb2.PredictRequest()
  request.model_spec.name = defaults.MODEL_NAME
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 784), np.float32)))
  found = {}
  with httpx.Client(base_url=url) as client, \
      grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # Both connections open before the clock starts: what is timed is the
    # version's first predict, not a TCP or HTTP/2 handshake.
    client.get(f"/v1/models/{defaults.MODEL_NAME}").raise_for_status()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = defaults.MODEL_NAME
    model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
    for api, call in (("REST", lambda: client.post(
        f"/v1/models/{defaults.MODEL_NAME}:predict", json=body).raise_for_status()),
                      ("gRPC", lambda: stub.Predict(request, timeout=30))):
      laps = []
      for _ in range(STEADY + 1):
        started = time.perf_counter()
        call()
        laps.append(time.perf_counter() - started)
      found[f"{api} first"] = laps[0] * 1000
      found[f"{api} steady"] = statistics.median(laps[1:]) * 1000
  return found


def main(argv: List[str] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bench.warmup_bench")
  parser.add_argument("--model-base-path", default=os.path.join(
      defaults.OUTPUT_DIR, "serving_model", defaults.MODEL_NAME))
  parser.add_argument("--rounds", type=int, default=ROUNDS)
  args = parser.parse_args(argv)
  kinds = [(warm, fast) for fast in (True, False) for warm in (True, False)]
  results: Dict[tuple, Dict[str, List[float]]] = {k: {} for k in kinds}
  for _ in range(args.rounds):
    for kind in kinds:
      proc, rest, grpc_port = _serve(args.model_base_path, *kind)
      try:
        for key, value in _times(rest, grpc_port).items():
          results[kind].setdefault(key, []).append(value)
      finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
  medians = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in results.items()}
  print(f"First request of a new version, median of {args.rounds} fresh servers (ms):")
  missed = []
  for warm, fast in kinds:
    m = medians[(warm, fast)]
    ratio = m["REST first"] / m["REST steady"]
    print(f"  {'warm-up' if warm else '--no-warmup':>11}, speed-ups {'on ' if fast else 'off'}: "
          f"REST first {m['REST first']:.2f}, steady {m['REST steady']:.2f} "
          f"({ratio:.1f}x); gRPC first {m['gRPC first']:.2f}, steady "
          f"{m['gRPC steady']:.2f} ({m['gRPC first'] / m['gRPC steady']:.1f}x)")
    if warm and ratio > GOAL_RATIO:
      missed.append(f"MISSED: with warm-up (speed-ups {'on' if fast else 'off'}) the "
                    f"first REST request costs {ratio:.1f}x a steady one "
                    f"(goal <= {GOAL_RATIO:g}x)")
  print("\n".join(missed) or f"goal met: a warmed version's first REST request "
        f"costs at most {GOAL_RATIO:g}x a steady one")
  return 1 if missed else 0


if __name__ == "__main__":
  sys.exit(main())
