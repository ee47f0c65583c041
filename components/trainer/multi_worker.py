"""Two-worker training under MultiWorkerMirroredStrategy, on this machine.

`--distribution multi_worker_mirrored` without a TF_CONFIG (no cluster set
one) makes the Trainer start a chief and a worker here, on loopback ports,
each a fresh process running this module:
- the strategy is created before any other TensorFlow op in the process
  (collective ops must be configured at program start);
- the model is built with `tf_keras` (Keras 2): Keras 3 cannot train under
  this strategy in TF 2.16 (it calls `strategy.reduce` on a PerReplica batch);
- both fit one model on the same arrays, each replica taking its half of
  every global batch; the chief writes the weights and the history, and the
  Trainer loads them into the registry's Keras 3 model to export, so the
  SavedModel is the same kind as any other run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np

WORKERS = 2
DATA_FILE = "data.npz"
HP_FILE = "hyperparameters.json"
WEIGHTS_FILE = "weights.npz"
HISTORY_FILE = "history.json"
_TIMEOUT_SECONDS = 6 * 3600


def _free_ports(n: int) -> List[int]:
  import socket  # pylint: disable=g-import-not-at-top
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def train(work_dir: str, hp: Dict[str, Any], x_train: np.ndarray,
          y_train: np.ndarray, x_eval: np.ndarray,
          y_eval: np.ndarray) -> Tuple[List[np.ndarray], Dict[str, List[float]]]:
  """Fits `hp` with two local workers; (the chief's weights, its history)."""
  os.makedirs(work_dir, exist_ok=True)
  np.savez(os.path.join(work_dir, DATA_FILE), x_train=x_train, y_train=y_train,
           x_eval=x_eval, y_eval=y_eval)
  with open(os.path.join(work_dir, HP_FILE), "w", encoding="utf-8") as f:
    json.dump(hp, f)
  ports = _free_ports(WORKERS)
  procs = []
  for index in range(WORKERS):
    cluster = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
               "task": {"type": "worker", "index": index}}
    log = open(os.path.join(work_dir, f"worker-{index}.log"), "wb")
    procs.append((subprocess.Popen(
        [sys.executable, "-m", "components.trainer.multi_worker", work_dir],
        env=dict(os.environ, TF_CONFIG=json.dumps(cluster)),
        stdout=log, stderr=subprocess.STDOUT), log))
  deadline = time.monotonic() + _TIMEOUT_SECONDS
  try:
    while any(p.poll() is None for p, _ in procs):
      if any(p.poll() not in (None, 0) for p, _ in procs) or (
          time.monotonic() > deadline):
        break  # one worker died: the other would wait for it forever
      time.sleep(0.5)
  finally:
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()
  codes = [p.returncode for p, _ in procs]
  if codes != [0] * WORKERS:
    # The one that exited with an error, not the one killed after it.
    failed = max(range(WORKERS), key=lambda i: (codes[i] or 0) > 0)
    with open(os.path.join(work_dir, f"worker-{failed}.log"), "rb") as f:
      tail = f.read()[-1500:].decode(errors="replace")
    raise RuntimeError(f"two-worker training failed (exit codes {codes}); "
                       f"the failing worker's log ends:\n{tail}")
  with np.load(os.path.join(work_dir, WEIGHTS_FILE)) as saved:
    weights = [saved[f"w{i}"] for i in range(len(saved.files))]
  with open(os.path.join(work_dir, HISTORY_FILE), encoding="utf-8") as f:
    history = json.load(f)
  return weights, history


def _worker(work_dir: str) -> None:
  """One worker: TF_CONFIG says which; the chief (index 0) saves."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # First, before any other op: the collectives are set up here.
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  import tf_keras  # pylint: disable=g-import-not-at-top

  from components.models import Hyperparameters, build_model  # pylint: disable=g-import-not-at-top
  with open(os.path.join(work_dir, HP_FILE), encoding="utf-8") as f:
    hp = Hyperparameters.from_dict(dict(json.load(f), distribution="none"))
  with np.load(os.path.join(work_dir, DATA_FILE)) as data:
    x_train, y_train = data["x_train"], data["y_train"]
    x_eval, y_eval = data["x_eval"], data["y_eval"]
  tf_keras.utils.set_random_seed(hp.seed)
  with strategy.scope():
    model = build_model(hp, -(-len(x_train) // hp.batch_size), keras=tf_keras)
  history = model.fit(x_train, y_train, batch_size=hp.batch_size, epochs=hp.epochs,
                      shuffle=True, validation_data=(x_eval, y_eval), verbose=0)
  task = json.loads(os.environ["TF_CONFIG"])["task"]
  if task["index"] == 0:
    np.savez(os.path.join(work_dir, WEIGHTS_FILE),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    with open(os.path.join(work_dir, HISTORY_FILE), "w", encoding="utf-8") as f:
      json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f)


if __name__ == "__main__":
  _worker(sys.argv[1])
