"""`mnist-tfx serve`: the pushed versions over TF Serving's REST and gRPC APIs.

Loopback by default: exposing the server is a decision (`--host 0.0.0.0`).
Both ports are bound exclusively before any model is loaded, so a second
server on a taken port stops at once with a clear message instead of
sharing the port.
"""

import asyncio
import dataclasses
import logging
import os
import re
import signal
import socket
import threading
from typing import List, Optional, Tuple

from mnist_tfx import defaults
from serving.batching import Batcher, GreedyBatcher
from serving.grpc_server import BindError
from serving.model_store import ModelStore, ServingError
from serving.rest import RestApi

DEFAULT_REST_PORT = defaults.REST_PORT
DEFAULT_GRPC_PORT = defaults.GRPC_PORT
DEFAULT_HOST = defaults.HOST
_LOG = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
  """A listening TCP socket on host:port, or BindError saying why not.

  SO_REUSEADDR only lets a restarted server reuse a port in TIME_WAIT; on
  Linux it never lets two servers listen on one port.
  """
  try:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)[0]
  except (socket.gaierror, UnicodeError) as e:
    raise BindError(f"cannot listen on {host!r}: not an address of this "
                    f"machine ({e})") from None
  sock = socket.socket(family, kind, proto)
  try:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
  except OSError as e:
    sock.close()
    reason = ("the port is in use (another mnist-tfx serve?)"
              if e.errno == 98 else e.strerror)
    raise BindError(f"cannot listen on {host}:{port}: {reason}") from None
  return sock


def _uvicorn(api: RestApi,
             header_timeout: float = defaults.HEADER_TIMEOUT_SECONDS,
             max_connections: int = defaults.MAX_CONNECTIONS):
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import http_edge  # pylint: disable=g-import-not-at-top
  # log_config=None: an embedded server must not reconfigure the process's
  # logging (uvicorn's dictConfig would bind handlers to today's stderr).
  # No proxy-header rewriting (nothing here reads the client address) and
  # no `server` header: less work per response. The HTTP protocol is
  # uvicorn's httptools one with JSON refusals, a head deadline and a
  # connection cap (serving.http_edge).
  edge = http_edge.protocol(header_timeout, max_connections)
  return uvicorn.Server(uvicorn.Config(
      api.app, interface="asgi3", log_level="warning", access_log=False,
      log_config=None, proxy_headers=False, server_header=False,
      http=edge or "httptools"))


class RestServer:
  """uvicorn serving a RestApi in a thread, on a port bound up front."""

  def __init__(self, store: ModelStore, host: str = DEFAULT_HOST,
               port: int = DEFAULT_REST_PORT,
               max_payload_bytes: int = defaults.MAX_PAYLOAD_BYTES,
               batcher: Optional[Batcher] = None,
               body_timeout: float = defaults.BODY_TIMEOUT_SECONDS,
               greedy_batching: bool = True,
               header_timeout: float = defaults.HEADER_TIMEOUT_SECONDS,
               max_connections: int = defaults.MAX_CONNECTIONS):
    from serving import service  # pylint: disable=g-import-not-at-top
    greedy = (GreedyBatcher(service.run_checked, defaults.BATCH_SIZE)
              if greedy_batching else None)
    self.api = RestApi(store, max_payload_bytes, batcher, body_timeout, greedy)
    self._socket = bind(host, port)
    self.port = self._socket.getsockname()[1]
    self._server = _uvicorn(self.api, header_timeout, max_connections)
    self._thread: Optional[threading.Thread] = None

  def start(self) -> "RestServer":
    self._thread = threading.Thread(
        target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
    self._thread.start()
    while not self._server.started:
      if not self._thread.is_alive():
        raise RuntimeError("the REST server did not start")
      self._thread.join(0.05)
    return self

  def stop(self) -> None:
    self._server.should_exit = True
    if self._thread:
      self._thread.join(timeout=10)
    self._socket.close()


def serve(base_path: Optional[str], name: str, host: str = DEFAULT_HOST,
          rest_port: int = DEFAULT_REST_PORT, grpc_port: int = DEFAULT_GRPC_PORT,
          versions: Optional[List[int]] = None,
          poll_seconds: float = defaults.POLL_SECONDS,
          max_payload_bytes: int = defaults.MAX_PAYLOAD_BYTES,
          batching: bool = False, max_batch_size: int = defaults.BATCH_SIZE,
          batch_timeout_micros: int = defaults.BATCH_TIMEOUT_MICROS,
          greedy_batching: bool = True,
          header_timeout: float = defaults.HEADER_TIMEOUT_SECONDS,
          max_connections: int = defaults.MAX_CONNECTIONS,
          max_enqueued_batches: int = defaults.MAX_ENQUEUED_BATCHES,
          model_config_file: Optional[str] = None,
          config_poll_seconds: float = defaults.CONFIG_POLL_SECONDS,
          request_log: Optional["RequestLogSettings"] = None,
          warmup: bool = True,
          ui_output_dir: Optional[str] = defaults.OUTPUT_DIR) -> None:
  """Serves until interrupted; raises BindError when a port cannot be had,
  ConfigFileError for a model config file that cannot be applied.

  `batching` is TF Serving's timed batching (both APIs); otherwise both
  APIs share one greedy batcher unless `greedy_batching` is off. REST and
  gRPC run on one event loop in this thread. With `model_config_file`, the
  model's name, base path, version policy and labels come from that file,
  re-read every `config_poll_seconds`. The page under /ui/ shows the runs
  of `ui_output_dir` (None: no page).
  """
  from serving import grpc_server, service  # pylint: disable=g-import-not-at-top
  from serving import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from serving import model_config, warmup as warmup_lib  # pylint: disable=g-import-not-at-top
  config = model_config.read(model_config_file) if model_config_file else None
  if config is not None:
    name, base_path = config.name, config.base_path
  rest_socket = bind(host, rest_port)
  metrics = metrics_lib.Metrics()
  batcher = (Batcher(service.run_checked, max_batch_size, batch_timeout_micros,
                     max_enqueued_batches) if batching else None)
  greedy = (GreedyBatcher(service.run_checked, max_batch_size)
            if greedy_batching and not batching else None)
  for kind, each in (("timed", batcher), ("greedy", greedy)):
    if each is not None:
      each.on_batch = metrics.batch_recorder(kind)
  store = ModelStore(name, base_path, versions, poll_seconds, loader=service.load,
                     warmup=warmup_lib.replay if warmup else None, metrics=metrics,
                     policy=config.policy if config else None)
  log = request_log.start(metrics) if request_log else None
  settings = Settings(name, base_path, host, max_payload_bytes, header_timeout,
                      max_connections)
  watcher = (ConfigWatcher(model_config_file, store, config, config_poll_seconds)
             if config is not None else None)
  from serving.ui import Ui  # pylint: disable=g-import-not-at-top
  ui = (Ui(store, os.path.abspath(ui_output_dir), metrics)
        if ui_output_dir is not None else None)
  servers = Servers(store, rest_socket, grpc_port, batcher, greedy, settings,
                    metrics=metrics, request_log=log, watcher=watcher, ui=ui)
  try:
    asyncio.Runner(loop_factory=grpc_server.new_loop).run(servers.run())
  finally:
    if watcher is not None:
      watcher.stop()
    store.stop()
    if log is not None:
      log.stop()
    rest_socket.close()


@dataclasses.dataclass(frozen=True)
class RequestLogSettings:
  """`--request-log DIR` and its sampling, rotation and cap."""
  directory: str
  sampling: float = defaults.REQUEST_LOG_SAMPLING
  max_file_bytes: int = defaults.REQUEST_LOG_FILE_BYTES
  max_total_bytes: int = defaults.REQUEST_LOG_TOTAL_BYTES

  def start(self, metrics):
    from serving.request_log import RequestLog  # pylint: disable=g-import-not-at-top
    return RequestLog(self.directory, self.sampling, self.max_file_bytes,
                      self.max_total_bytes, metrics)


class ConfigWatcher:
  """Re-reads the model config file when it changes (TF Serving's
  --model_config_file_poll_wait_seconds) and applies it to the store.

  A file that does not parse, names another model or base path, or labels
  a version that is not available is refused: the previous config keeps
  serving, the log says why and the metrics count it.
  """

  def __init__(self, path: str, store: ModelStore, config, poll_seconds: float):
    self.path = path
    self.store = store
    self.config = config
    self._poll_seconds = poll_seconds
    self._seen = self._stamp()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _stamp(self):
    try:
      with open(self.path, "rb") as f:
        return f.read()
    except OSError as e:
      return e.errno  # gone or unreadable: a change, said when read

  def apply_initial(self) -> None:
    """The labels of the config the server started with (after its loads)."""
    self.store.configure(self.config.policy, self.config.labels)

  def start(self) -> None:
    self._thread = threading.Thread(target=self._poll, daemon=True,
                                    name="model-config")
    self._thread.start()

  def check(self) -> Optional[str]:
    """Applies the file if it changed; the outcome ("OK", a refusal) or None."""
    from serving import model_config  # pylint: disable=g-import-not-at-top
    stamp = self._stamp()
    if stamp == self._seen:
      return None
    self._seen = stamp
    try:
      new = model_config.read(self.path)
      if (new.name, new.base_path) != (self.config.name, self.config.base_path):
        raise model_config.ConfigFileError(
            f"{self.path}: the model's name and base_path cannot change while "
            f"serving ({self.config.name} at {self.config.base_path}); restart "
            "the server for another model")
      self.store.configure(new.policy, new.labels)
    except (model_config.ConfigFileError, ServingError) as e:
      self._count("refused")
      _LOG.warning("model config %s refused, the previous one keeps serving: %s",
                   self.path, getattr(e, "message", None) or e)
      return f"refused: {getattr(e, 'message', None) or e}"
    self.config = new
    self._count("OK")
    _LOG.warning("model config %s applied: labels %s, versions %s", self.path,
                 new.labels or "none", _policy_text(new.policy))
    return "OK"

  def _count(self, status: str) -> None:
    from serving import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    if self.store.metrics is not None:
      self.store.metrics.count(metrics_lib.CONFIG_RELOADS, (status,))

  def _poll(self) -> None:
    while not self._stop.wait(self._poll_seconds):
      try:
        self.check()
      except Exception:  # pylint: disable=broad-except
        _LOG.warning("reading the model config %s failed", self.path, exc_info=True)

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=10)


def _policy_text(policy) -> str:
  if policy.kind == "specific":
    return ", ".join(map(str, policy.versions))
  return "all" if policy.kind == "all" else f"the latest {policy.num_versions}"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `mnist-tfx serve` was asked for, as its first lines report it."""
  name: str
  base_path: str
  host: str = DEFAULT_HOST
  max_payload_bytes: int = defaults.MAX_PAYLOAD_BYTES
  header_timeout: float = defaults.HEADER_TIMEOUT_SECONDS
  max_connections: int = defaults.MAX_CONNECTIONS


class Servers:
  """REST (uvicorn) and gRPC (grpc.aio) on one event loop, one batcher.

  `run()` serves until SIGINT/SIGTERM (when run in the main thread) or
  `stop()` from any thread, and then returns; a signal while a version is
  still loading stops the server once the load ends. `started` is set once
  both APIs answer.
  """

  def __init__(self, store: ModelStore, rest_socket: socket.socket,
               grpc_port: int, batcher: Optional[Batcher],
               greedy: Optional[GreedyBatcher], settings: Settings,
               metrics=None, request_log=None,
               watcher: Optional[ConfigWatcher] = None, ui=None):
    self.store = store
    self.settings = settings
    self.greedy = greedy
    self.metrics = metrics
    self.request_log = request_log
    self.ui = ui
    self._watcher = watcher
    self._batcher = batcher
    self._rest_socket = rest_socket
    self.rest_port = rest_socket.getsockname()[1]
    self.grpc_port = grpc_port  # the bound port once started
    self.started = threading.Event()
    self._uvicorn = _uvicorn(RestApi(store, settings.max_payload_bytes, batcher,
                                     greedy=greedy, metrics=metrics,
                                     request_log=request_log, ui=ui),
                             settings.header_timeout, settings.max_connections)
    self._stopping: Optional[asyncio.Event] = None  # wakes run() during a load
    self._loop: Optional[asyncio.AbstractEventLoop] = None

  def stop(self) -> None:
    """Stops serving; safe from any thread."""
    self._uvicorn.should_exit = True  # the one stop flag; uvicorn checks it every 0.1 s
    if self._loop is not None:
      try:
        self._loop.call_soon_threadsafe(self._stopping.set)
      except RuntimeError:
        pass  # the loop has closed: nothing left to stop

  def _load(self) -> None:
    self.store.start()
    if self._watcher is not None:
      self._watcher.apply_initial()  # refused labels stop the start
      self._watcher.start()

  async def run(self) -> None:
    from serving import grpc_server  # pylint: disable=g-import-not-at-top
    self._stopping = asyncio.Event()
    self._loop = asyncio.get_running_loop()
    if self._uvicorn.should_exit:  # stopped before it started
      return
    if threading.current_thread() is threading.main_thread():
      # On the loop, not as Python handlers: an exception raised by a
      # handler inside one of the loop's callbacks would only be logged.
      # While uvicorn serves, its own handlers take over and restore these.
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._loop.add_signal_handler(sig, self.stop)
    grpc = await grpc_server.start_async(
        self.store, self.settings.host, self.grpc_port,
        max_message_bytes=self.settings.max_payload_bytes,
        batcher=self._batcher, greedy=self.greedy, metrics=self.metrics,
        request_log=self.request_log)
    self.grpc_port = grpc.bound_port
    try:
      # Loading a version takes seconds: in a thread, so the loop stays live.
      loading = self._loop.run_in_executor(None, self._load)
      stopping = asyncio.ensure_future(self._stopping.wait())
      await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
      stopping.cancel()
      if self._uvicorn.should_exit:
        return  # the load finishes in its thread before the loop closes
      loading.result()
      _announce(self.store, self.settings, self.rest_port, self.grpc_port,
                self._batcher or self.greedy, self.ui)
      serving = asyncio.ensure_future(
          self._uvicorn.serve(sockets=[self._rest_socket]))
      while not self._uvicorn.started and not serving.done():
        await asyncio.sleep(0.01)
      self.started.set()
      await serving
    finally:
      await grpc.stop(grace=2)


_ANNOUNCED = (re.compile(r"^REST: http://[^:/]+:(\d+)/", re.M),
              re.compile(r"^gRPC: [^ ]+:(\d+) ", re.M))


def announced_ports(text: str) -> Optional[Tuple[int, int]]:
  """(REST, gRPC) ports from what `serve` printed so far (its `REST:` and
  `gRPC:` lines, see `_announce`), or None before both are printed: how a
  process that started `mnist-tfx serve` on port 0 learns its ports."""
  found = [pattern.search(text) for pattern in _ANNOUNCED]
  return None if None in found else (int(found[0].group(1)), int(found[1].group(1)))


def _announce(store, settings, rest_port, grpc_port, batcher, ui=None) -> None:
  name = settings.name
  try:
    served = store.status(name)
  except ServingError:  # no version seen yet
    served = []
  print(f"Serving model '{name}' from {settings.base_path}: "
        + (", ".join(f"version {s.version} {s.state}" for s in served) or
           "no version yet (polling)"), flush=True)
  if isinstance(batcher, Batcher):
    print(f"Batching: up to {batcher.max_batch_size} rows, "
          f"{round(batcher.timeout * 1e6)} µs timeout", flush=True)
  elif batcher:
    print(f"Batching (REST and gRPC): requests that arrive together, "
          f"up to {batcher.max_batch_size} rows, no waiting", flush=True)
  if store.labels:
    print("Labels: " + ", ".join(f"{label} -> version {version}" for label, version
                                 in sorted(store.labels.items())), flush=True)
  print(f"REST: http://{settings.host}:{rest_port}/v1/models/{name}", flush=True)
  print(f"Metrics: http://{settings.host}:{rest_port}/monitoring/prometheus/metrics; "
        f"health: /v2/health/live, /v2/health/ready", flush=True)
  if ui is not None:
    print(f"Page: http://{settings.host}:{rest_port}{defaults.UI_PATH} (draw a digit; "
          f"the runs of {ui.output_dir})", flush=True)
  print(f"gRPC: {settings.host}:{grpc_port} (tensorflow.serving.PredictionService, "
        "ModelService)", flush=True)
