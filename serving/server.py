"""`mnist-tfx serve`: the pushed versions over TF Serving's REST and gRPC APIs.

Loopback by default: exposing the server is a decision (`--host 0.0.0.0`).
"""

import threading
from typing import List, Optional

from serving.batching import Batcher
from serving.model_store import ModelStore, ServingError
from serving.rest import DEFAULT_MAX_PAYLOAD_BYTES, RestApi

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
DEFAULT_HOST = "127.0.0.1"


class RestServer:
  """uvicorn serving a RestApi in a thread; `port` is known once started."""

  def __init__(self, store: ModelStore, host: str = DEFAULT_HOST,
               port: int = DEFAULT_REST_PORT,
               max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
               batcher: Optional[Batcher] = None):
    import uvicorn  # pylint: disable=g-import-not-at-top
    self.api = RestApi(store, max_payload_bytes, batcher)
    # log_config=None: an embedded server must not reconfigure the process's
    # logging (uvicorn's dictConfig would bind handlers to today's stderr).
    self._server = uvicorn.Server(uvicorn.Config(
        self.api.app, host=host, port=port, log_level="warning",
        access_log=False, log_config=None))
    self._thread: Optional[threading.Thread] = None

  @property
  def port(self) -> int:
    return self._server.servers[0].sockets[0].getsockname()[1]

  def start(self) -> "RestServer":
    self._thread = threading.Thread(target=self._server.run, daemon=True)
    self._thread.start()
    while not self._server.started:
      if not self._thread.is_alive():
        raise RuntimeError("the REST server did not start (port in use?)")
      self._thread.join(0.05)
    return self

  def stop(self) -> None:
    self._server.should_exit = True
    if self._thread:
      self._thread.join(timeout=10)


def serve(base_path: str, name: str, host: str = DEFAULT_HOST,
          rest_port: int = DEFAULT_REST_PORT, grpc_port: int = DEFAULT_GRPC_PORT,
          versions: Optional[List[int]] = None, poll_seconds: float = 2.0,
          max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
          batching: bool = False, max_batch_size: int = 32,
          batch_timeout_micros: int = 2000) -> None:
  """Serves until interrupted."""
  from serving import service  # pylint: disable=g-import-not-at-top
  batcher = (Batcher(service.run_signature, max_batch_size, batch_timeout_micros)
             if batching else None)
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import grpc_server  # pylint: disable=g-import-not-at-top
  store = ModelStore(name, base_path, versions, poll_seconds).start()
  grpc = grpc_server.start(store, host, grpc_port,
                           max_message_bytes=max_payload_bytes, batcher=batcher)
  try:
    served = store.status(name)
  except ServingError:  # no version seen yet
    served = []
  print(f"Serving model '{name}' from {base_path}: "
        + (", ".join(f"version {s.version} {s.state}" for s in served) or
           "no version yet (polling)"), flush=True)
  if batcher:
    print(f"Batching: up to {max_batch_size} rows, {batch_timeout_micros} µs "
          "timeout", flush=True)
  print(f"REST: http://{host}:{rest_port}/v1/models/{name}", flush=True)
  print(f"gRPC: {host}:{grpc.bound_port} (tensorflow.serving.PredictionService, "
        "ModelService)", flush=True)
  try:
    uvicorn.run(RestApi(store, max_payload_bytes, batcher).app, host=host,
                port=rest_port, log_level="warning")
  finally:
    grpc.stop(grace=2)
    store.stop()
