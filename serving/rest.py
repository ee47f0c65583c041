"""TensorFlow Serving's REST API (v1) over the ModelStore, as a Starlette app.

Paths, request and response bodies, error bodies (`{"error": "..."}`) and
the status-code mapping follow TF Serving's own HTTP handler, so its clients
work unchanged:
  GET  /v1/models/{name}[/versions/{v}]            version status
  GET  /v1/models/{name}[/versions/{v}]/metadata   signatures
  POST /v1/models/{name}[/versions/{v}]:predict    row (`instances`) or
                                                   columnar (`inputs`) form
  POST /v1/models/{name}[/versions/{v}]:classify   tf.Example signature
"""

import asyncio
import base64
import json
import logging
import math
import re
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import orjson
import simdjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from components import features
from mnist_tfx import defaults
from serving import metrics as metrics_lib
from serving import service
from serving.batching import Batcher, GreedyBatcher
from serving.model_store import ModelStore, ServingError

DEFAULT_MAX_PAYLOAD_BYTES = defaults.MAX_PAYLOAD_BYTES
INLINE_MAX_BYTES = defaults.INLINE_MAX_BYTES
_LOG = logging.getLogger(__name__)
DEFAULT_SIGNATURE = features.SERVING_SIGNATURE

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
# TF Serving's http_rest_api_handler.cc regexes: a version or a label.
_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
                      r":(classify|regress|predict)", re.I)
_METADATA = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?/metadata", re.I)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?", re.I)
# KServe's and the Open Inference Protocol's health endpoints.
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"


# Methods that reach the handlers (which answer anything but GET and POST
# with a JSON 405); HEAD is GET's.
_ROUTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def error(code: str, message: str) -> Response:
  return JSONResponse({"error": message}, status_code=HTTP_STATUS.get(code, 500))


def _error_body(code: str, message: str) -> Tuple[int, bytes]:
  return HTTP_STATUS.get(code, 500), orjson.dumps({"error": message})


# Strings may hold brackets; they do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(raw: bytes) -> int:
  """How deep a JSON text nests, without parsing it (vectorised over bytes)."""
  if raw.count(b"[") + raw.count(b"{") <= defaults.MAX_JSON_DEPTH:
    return 0  # cannot exceed the limit: skip the scan
  data = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
  step = (np.isin(data, (ord("["), ord("{"))).astype(np.int32)
          - np.isin(data, (ord("]"), ord("}"))))
  return int(np.cumsum(step).max()) if step.size else 0


# --- conversions -----------------------------------------------------------------

def _dtype(spec) -> np.dtype:
  return np.dtype(spec.dtype.as_numpy_dtype) if spec.dtype.name != "string" else np.dtype(object)


def _decode(value: Any, is_string: bool) -> Any:
  """JSON value -> numpy-ready value; {"b64": ...} for binary strings."""
  if isinstance(value, dict):
    if not is_string:
      raise ServingError("INVALID_ARGUMENT", "expected a number, got an object "
                         "(only string inputs take {\"b64\": ...})")
    if set(value) != {"b64"}:
      raise ServingError("INVALID_ARGUMENT", f"unexpected object {sorted(value)} "
                         "in tensor values (only {\"b64\": ...} is allowed)")
    try:
      return base64.b64decode(value["b64"], validate=True)
    except (ValueError, TypeError) as e:
      raise ServingError("INVALID_ARGUMENT", f"bad base64 value: {e}") from e
  if isinstance(value, list):
    return [_decode(v, is_string) for v in value]
  if is_string:
    if not isinstance(value, (str, bytes)):
      raise ServingError("INVALID_ARGUMENT", "expected a string value")
    return value.encode() if isinstance(value, str) else value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ServingError("INVALID_ARGUMENT", f"expected a number, got {value!r}")
  return value


def _numbers(value: Any) -> Optional[np.ndarray]:
  """`value` as a float64 array when it is a regular tensor of JSON numbers.

  numpy walks the nested lists in C: the common case costs no Python per
  value. Anything else (bools, strings, objects, ragged rows, integers past
  int64) gives None, and the exact checks in `_decode` say what is wrong.
  """
  try:
    array = np.asarray(value)
  except (ValueError, TypeError, OverflowError):
    return None
  return array.astype(np.float64) if array.dtype.kind in "iuf" else None


def to_array(value: Any, spec) -> np.ndarray:
  """A JSON tensor for `spec` as a numpy array, with TF Serving's checks."""
  dtype = _dtype(spec)
  is_string = dtype == np.dtype(object)
  array = None if is_string else _numbers(value)
  if array is None:
    decoded = _decode(value, is_string)
    try:
      array = np.array(decoded, dtype=object if is_string else np.float64)
    except (ValueError, TypeError, OverflowError) as e:
      raise ServingError("INVALID_ARGUMENT",
                         f"ragged or malformed tensor for input: {e}") from e
  if array.dtype == object and not is_string:
    raise ServingError("INVALID_ARGUMENT", "ragged tensor values")
  if not is_string:
    if np.issubdtype(dtype, np.integer):
      info = np.iinfo(dtype)
      if array.size and (np.any(array != np.floor(array)) or array.min() < info.min
                         or array.max() > info.max):
        raise ServingError("INVALID_ARGUMENT", f"values do not fit {dtype.name}")
    array = array.astype(dtype)
  if spec.shape.rank is not None and array.ndim != spec.shape.rank:
    raise ServingError("INVALID_ARGUMENT", f"expected rank {spec.shape.rank}, "
                       f"got shape {list(array.shape)}")
  return array


class NumericBody:
  """A predict body that is one regular tensor of JSON numbers, 2-D or more.

  The common request, `{"instances": [[784 numbers], ...]}` or
  `[[[28 numbers] x 28], ...]` (or `"inputs"`), read by simdjson straight
  into one buffer of doubles: no Python object per value (orjson + numpy
  take ~36 us for a 784-value image, simdjson's parse and copy ~10 us, ~30
  us with the structure checks below; for 28 x 28 floats ~90 vs ~50 us).
  `read` gives None for any other body, and the full parser decides, with
  all its checks and error messages.
  """

  def __init__(self, key: str, values: np.ndarray, raw: bytes):
    self.raw = raw  # for a signature this form does not fit
    self.form = "row" if key == "instances" else "columnar"
    self.values = values  # float64, exactly what np.asarray would give

  @classmethod
  def read(cls, raw: bytes) -> Optional["NumericBody"]:
    try:
      doc = simdjson.Parser().parse(raw)
      if not isinstance(doc, simdjson.Object) or len(doc) != 1:
        return None  # other keys, or one key twice
      key, = doc.keys()
      tensor = doc[key] if key in ("instances", "inputs") else None
      shape, node = [], tensor
      while isinstance(node, simdjson.Array) and len(node):
        shape.append(len(node))
        node = node[0]
      if not 2 <= len(shape) < defaults.MAX_JSON_DEPTH:
        return None  # not an array of arrays, or deeper than JSON may nest
      # Numbers only (no strings, bools, nulls, objects, or numbers past
      # int64 or double), with nested arrays flattened...
      flat = np.frombuffer(tensor.as_buffer(of_type="d"), dtype=np.float64)
      # ... so the structure is checked apart: every array at each level of
      # the first elements' length, and no '[' but theirs (with no strings
      # in the body, every '[' opens an array): no ragged or deeper rows,
      # so the buffer holds exactly the numbers of `shape`.
      level, arrays = [tensor], 0
      for depth, size in enumerate(shape):
        if any(not isinstance(a, simdjson.Array) or len(a) != size for a in level):
          return None
        arrays += len(level)
        if depth + 1 < len(shape):
          level = [child for a in level for child in a]
      if raw.count(b"[") != arrays:
        return None
      return cls(key, flat.reshape(shape), raw)
    except Exception:  # pylint: disable=broad-except
      return None  # not this simple form: the full parser says what it is

  def inputs(self, specs: Dict[str, Any]) -> Optional[Dict[str, np.ndarray]]:
    """The inputs for a one-input float signature (as `to_array` makes them)."""
    if len(specs) != 1:
      return None
    (name, spec), = specs.items()
    dtype = _dtype(spec)
    if dtype.kind != "f" or spec.shape.rank not in (None, self.values.ndim):
      return None
    return {name: self.values.astype(dtype)}


def parse_predict(body: Dict[str, Any], specs: Dict[str, Any]
                  ) -> Tuple[Dict[str, np.ndarray], str]:
  """Request body (a JSON object) -> ({input: array}, "row" | "columnar")."""
  has_rows, has_cols = "instances" in body, "inputs" in body
  if has_rows == has_cols:
    raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key"
                       if not has_rows else "Not both 'inputs' and 'instances' "
                       "can be present")
  names = list(specs)
  if has_rows:
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
      raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty list")
    # A row is a tensor, or an object naming every input ({"b64": ...} is a
    # string tensor's value, not a row object).
    is_object = isinstance(rows[0], dict) and set(rows[0]) != {"b64"}
    if len(names) == 1 and not is_object:
      return {names[0]: to_array(rows, specs[names[0]])}, "row"
    if not all(isinstance(r, dict) and set(r) == set(names) for r in rows):
      raise ServingError("INVALID_ARGUMENT", f"each instance must be an object "
                         f"with exactly the inputs {names}")
    return {n: to_array([r[n] for r in rows], specs[n]) for n in names}, "row"
  inputs = body["inputs"]
  if isinstance(inputs, dict) and set(inputs) == set(names):
    return {n: to_array(inputs[n], specs[n]) for n in names}, "columnar"
  if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) != {"b64"}):
    return {names[0]: to_array(inputs, specs[names[0]])}, "columnar"
  raise ServingError("INVALID_ARGUMENT", f"'inputs' must name the inputs {names}")


def _json_value(array: np.ndarray) -> Any:
  if array.dtype == object:
    return [_json_value(a) for a in array] if array.ndim else array.item().decode(
        errors="replace")
  return array.tolist()


def format_outputs(outputs: Dict[str, np.ndarray], form: str) -> Dict[str, Any]:
  if form == "columnar":
    if len(outputs) == 1:
      return {"outputs": _json_value(next(iter(outputs.values())))}
    return {"outputs": {k: _json_value(v) for k, v in outputs.items()}}
  n = len(next(iter(outputs.values())))
  if len(outputs) == 1:
    return {"predictions": _json_value(next(iter(outputs.values())))}
  return {"predictions": [{k: _json_value(v[i]) for k, v in outputs.items()}
                          for i in range(n)]}


def _json_finite(value: Any) -> None:
  """JSON has no NaN; Python's parser accepts it, TF Serving's does not."""
  if isinstance(value, float) and not math.isfinite(value):
    raise ServingError("INVALID_ARGUMENT", "NaN and Infinity are not valid JSON numbers")


# --- the app ---------------------------------------------------------------------

class RestApi:
  """The request handlers; `app` is the ASGI application."""

  def __init__(self, store: ModelStore,
               max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
               batcher: Optional[Batcher] = None,
               body_timeout: float = defaults.BODY_TIMEOUT_SECONDS,
               greedy: Optional[GreedyBatcher] = None,
               metrics: Optional[metrics_lib.Metrics] = None,
               request_log=None, ui=None):
    self.store = store
    self.ui = ui  # serving.ui.Ui: the page under /ui/, or None (--no-ui)
    self.metrics = metrics
    self.request_log = request_log
    self.max_payload_bytes = max_payload_bytes
    self.body_timeout = body_timeout
    self._deadlines = Deadlines(body_timeout)
    self.batcher = batcher
    # The timed batcher (--enable-batching) wins over the greedy one.
    self.greedy = greedy if batcher is None else None
    # Every other path and method goes to Starlette, so even a wrong one
    # gets a JSON error; predictions take the direct ASGI path below, and a
    # method Starlette does not route (TRACE, PROPFIND, ...) a JSON 405.
    self._starlette = Starlette(routes=[
        Route("/{path:path}", self.dispatch, methods=list(_ROUTED_METHODS))])

  async def app(self, scope, receive, send) -> None:
    """The ASGI application.

    `POST …:predict` and `:classify` are handled on raw ASGI messages: per
    request, Starlette's request, routing and response objects cost about
    as much as running the model.
    """
    if scope["type"] == "http" and scope["method"] == "POST" and (
        m := _PREDICT.fullmatch(scope["path"])):
      started = time.perf_counter()
      try:
        status, body, close, code = await self._post(scope, receive, m)
      except _ClientGone:
        return
      if self.metrics is not None:
        self.metrics.request(m.group(1), m.group(4).lower(), "REST", code, started)
      headers = [(b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]
      if close:  # the rest of the body may never come: drop the connection
        headers.append((b"connection", b"close"))
      await send({"type": "http.response.start", "status": status,
                  "headers": headers})
      await send({"type": "http.response.body", "body": body})
      return
    if scope["type"] == "http" and scope["method"] not in _ROUTED_METHODS:
      body = orjson.dumps({"error": f"Method {scope['method']} not allowed"})
      await send({"type": "http.response.start", "status": 405, "headers": [
          (b"content-type", b"application/json"), (b"allow", b"GET, POST"),
          (b"content-length", str(len(body)).encode())]})
      await send({"type": "http.response.body", "body": body})
      return
    await self._starlette(scope, receive, send)

  async def _post(self, scope, receive, m) -> Tuple[int, bytes, bool, str]:
    """(status, JSON body, close the connection, TF status code name) for a
    predict/classify POST."""
    try:
      raw = await self._body(scope, receive)
      size = len(raw)
      name, version = m.group(1), _version(m.group(2), m.group(3))  # (v, label)
      kind = m.group(4).lower()
      body = (kind == "predict" and NumericBody.read(raw)) or parse_json(raw)
      handler = {"predict": self._predict, "classify": self._classify}.get(kind)
      if handler is None:
        raise ServingError("UNIMPLEMENTED", "regress is not supported by this model")
      if self.greedy is not None and kind == "predict" and size <= INLINE_MAX_BYTES:
        # Requests that arrive together share one model call, on the loop.
        result = await self._predict_greedy(name, version, body)
      elif self.batcher is None and size <= INLINE_MAX_BYTES:
        # A small request costs less than the hop to a thread (measured:
        # p50 1.3 -> 1.0 ms, 16 clients 600 -> 1000 req/s with wrk).
        result = handler(name, version, body)
      else:
        # Large requests, and timed-batched ones (which wait for their
        # batch), run in a thread: the event loop keeps serving others.
        result = await asyncio.get_running_loop().run_in_executor(
            None, handler, name, version, body)
      return 200, orjson.dumps(result), False, "OK"
    except ServingError as e:
      return _error_body(e.code, e.message) + (False, e.code)
    except _BodyTimeout as e:
      return 408, orjson.dumps({"error": str(e)}), True, "DEADLINE_EXCEEDED"
    except _ClientGone:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # A bug, not a bad request: one log line, a JSON answer, and serving
      # goes on.
      _LOG.error("internal error on POST %s: %r", scope["path"], e)
      return _error_body("INTERNAL", f"internal error: {type(e).__name__}") + (
          False, "INTERNAL")

  async def dispatch(self, request: Request) -> Response:
    path = request.url.path
    if request.method in ("GET", "HEAD") and path in _OTHER_GETS:
      return _OTHER_GETS[path](self)
    if self.ui is not None and (path + "/").startswith(defaults.UI_PATH):
      return await self.ui.handle(request)
    if not path.startswith("/v1/"):
      page = f", the page at {defaults.UI_PATH}" if self.ui is not None else ""
      return error("NOT_FOUND", f"Not found: {path} (TF Serving's API is under "
                   f"/v1/; metrics at {metrics_lib.PATH}, health at /v2/health/{page})")
    if request.method not in ("GET", "POST"):
      return JSONResponse({"error": f"Method {request.method} not allowed"},
                          status_code=405)
    try:
      if request.method == "GET" and (m := _METADATA.fullmatch(path)):
        return JSONResponse(self.metadata(m.group(1), *_version(m.group(2), m.group(3))))
      if request.method == "GET" and (m := _STATUS.fullmatch(path)):
        if not m.group(1):
          raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
        return JSONResponse(self.status(m.group(1), *_version(m.group(2), m.group(3))))
      raise ServingError("INVALID_ARGUMENT",
                         f"Malformed request: {request.method} {path}")
    except ServingError as e:
      return error(e.code, e.message)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.error("internal error on %s %s: %r", request.method, path, e)
      return error("INTERNAL", f"internal error: {type(e).__name__}")

  async def _body(self, scope, receive) -> bytes:
    size = 0
    for key, value in scope["headers"]:
      if key == b"content-length":
        try:
          size = int(value)
        except ValueError:
          raise ServingError("INVALID_ARGUMENT", "bad Content-Length") from None
    if size > self.max_payload_bytes:
      raise ServingError("RESOURCE_EXHAUSTED", f"request of {size} bytes exceeds "
                         f"the limit of {self.max_payload_bytes} bytes")
    task = asyncio.current_task()
    self._deadlines.watch(task)
    try:
      return await self._read(receive)
    except asyncio.CancelledError:
      if not self._deadlines.expired(task):
        raise  # cancelled for another reason (shutdown): not ours to turn
      raise _BodyTimeout(f"the request body did not arrive within "
                         f"{self.body_timeout:g} s") from None
    finally:
      self._deadlines.forget(task)

  async def _read(self, receive) -> bytes:
    chunks, got = [], 0
    while True:  # chunked bodies have no length
      message = await receive()
      if message["type"] == "http.disconnect":
        raise _ClientGone()
      chunk = message.get("body", b"")
      if chunk:
        chunks.append(chunk)
        got += len(chunk)
        if got > self.max_payload_bytes:
          raise ServingError("RESOURCE_EXHAUSTED", "request exceeds the limit of "
                             f"{self.max_payload_bytes} bytes")
      if not message.get("more_body", False):
        return b"".join(chunks)

  def _predict_request(self, name: str, version: "_Spec", body: Any):
    """(servable, signature name, its function, inputs, form)."""
    servable = self.store.get(name, *version)
    if isinstance(body, NumericBody):
      fn, specs = service.input_specs(servable, DEFAULT_SIGNATURE)
      inputs = body.inputs(specs)
      if inputs is not None:
        return servable, DEFAULT_SIGNATURE, fn, inputs, body.form
      body = parse_json(body.raw)
    if not isinstance(body, dict):
      raise ServingError("INVALID_ARGUMENT", "request body must be a JSON object")
    signature = _signature_name(body, DEFAULT_SIGNATURE)
    fn, specs = service.input_specs(servable, signature)
    inputs, form = parse_predict(body, specs)
    return servable, signature, fn, inputs, form

  def _predict(self, name: str, version: "_Spec", body: Any) -> Dict[str, Any]:
    servable, signature, fn, inputs, form = self._predict_request(name, version, body)
    outputs = service.run(self.batcher, servable, signature, fn, inputs)
    if self.request_log is not None:
      self.request_log.offer(name, servable.version, signature, inputs, outputs)
    return format_outputs(outputs, form)

  async def _predict_greedy(self, name: str, version: "_Spec",
                            body: Any) -> Dict[str, Any]:
    servable, signature, fn, inputs, form = self._predict_request(name, version, body)
    outputs = await service.run_greedy(self.greedy, servable, signature, fn, inputs)
    if self.request_log is not None:
      self.request_log.offer(name, servable.version, signature, inputs, outputs)
    return format_outputs(outputs, form)

  def _classify(self, name: str, version: "_Spec", body: Any) -> Dict[str, Any]:
    """TF Serving's classify JSON: examples as feature dicts -> [label, score] pairs."""
    servable = self.store.get(name, *version)
    if not isinstance(body, dict):
      raise ServingError("INVALID_ARGUMENT", "request body must be a JSON object")
    signature = _signature_name(body, features.EXAMPLES_SIGNATURE)
    fn, specs = service.input_specs(servable, signature)
    if list(specs) != [features.EXAMPLES_INPUT]:
      raise ServingError("INVALID_ARGUMENT", f"signature \"{signature}\" does not "
                         "take serialized tf.Examples")
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
      raise ServingError("INVALID_ARGUMENT", "'examples' must be a non-empty list")
    context = body.get("context", {})
    if not isinstance(context, dict):
      raise ServingError("INVALID_ARGUMENT", "'context' must be an object of "
                         "features shared by every example")
    serialized = []
    for i, example in enumerate(examples):
      if not isinstance(example, dict):
        raise ServingError("INVALID_ARGUMENT", f"example {i} must be an object")
      serialized.append(_example(i, {**context, **example}))
    out = service.run_signature(fn, {features.EXAMPLES_INPUT: np.array(serialized, dtype=object)})
    probabilities = out[features.PROBABILITIES_KEY]
    return {"results": [[[str(c), float(p[c])] for c in range(p.shape[0])]
                        for p in probabilities]}

  def status(self, name: str, version: Optional[int],
             label: Optional[str] = None) -> Dict[str, Any]:
    return {"model_version_status": [
        {"version": str(s.version), "state": s.state,
         "status": {"error_code": s.error_code, "error_message": s.error_message}}
        for s in self.store.status(name, version, label)]}

  def metadata(self, name: str, version: Optional[int],
               label: Optional[str] = None) -> Dict[str, Any]:
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
    servable = self.store.get(name, version, label)
    return {"model_spec": {"name": name, "signature_name": "",
                           "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                service.signature_def_map(servable),
                preserving_proto_field_name=True)}}


def parse_json(raw: bytes) -> Any:
  """A request body's JSON, with TF Serving's refusals (depth, NaN)."""
  if json_depth(raw) > defaults.MAX_JSON_DEPTH:
    raise ServingError("INVALID_ARGUMENT", "JSON Parse error: nesting deeper "
                       f"than {defaults.MAX_JSON_DEPTH} levels")
  try:
    return orjson.loads(raw)
  except orjson.JSONDecodeError:
    pass  # the standard parser reads what orjson refuses, or says why not
  try:
    return json.loads(raw, parse_constant=lambda c: _json_finite(float(c)))
  except (ValueError, UnicodeDecodeError, RecursionError) as e:
    raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {e}") from e


_MAX_VERSION = (1 << 63) - 1  # TF Serving's versions are int64
_Spec = Tuple[Optional[int], Optional[str]]  # (version, label) of a request path


def _version(text: Optional[str], label: Optional[str] = None) -> _Spec:
  """(version, label) from a path; the version bounded before it is
  converted (Python refuses to convert digit strings past 4,300 digits, and
  TF Serving's are int64)."""
  if not text:
    return None, label or None
  if len(text) > len(str(_MAX_VERSION)) or int(text) > _MAX_VERSION:
    raise ServingError("INVALID_ARGUMENT", f"version must be a number from 0 to "
                       f"{_MAX_VERSION}, got {len(text)} digits")
  return int(text), None


def _metrics_page(api: "RestApi") -> Response:
  if api.metrics is None:
    return error("NOT_FOUND", "metrics are off for this server")
  return Response(api.metrics.text(), media_type=metrics_lib.CONTENT_TYPE)


def _ready(api: "RestApi") -> Response:
  """Ready once a version is loaded and warmed (KServe's readiness)."""
  ready = api.store.ready()
  return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


_OTHER_GETS = {
    metrics_lib.PATH: _metrics_page,
    LIVE_PATH: lambda api: JSONResponse({"live": True}),
    READY_PATH: _ready,
}


class Deadlines:
  """Deadlines for many tasks' body reads, kept by one timer per event loop.

  `asyncio.timeout` schedules and cancels a timer for every request (about
  a tenth of a request's own cost at thousands a second); here a request
  costs a dict entry, and one timer, armed while any read is watched, wakes
  every `interval` and cancels the reads past their deadline: a deadline
  fires at most `interval` late.
  """

  def __init__(self, seconds: float):
    self.seconds = seconds
    self.interval = min(1.0, seconds / 4)
    self._due: Dict[asyncio.Task, float] = {}
    self._expired: Dict[asyncio.Task, int] = {}  # -> its cancel requests before ours
    self._timers: Dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

  def watch(self, task: asyncio.Task) -> None:
    loop = task.get_loop()
    self._due[task] = loop.time() + self.seconds
    if loop not in self._timers:
      self._timers[loop] = loop.call_later(self.interval, self._sweep, loop)

  def forget(self, task: asyncio.Task) -> None:
    self._due.pop(task, None)
    self._expired.pop(task, None)

  def expired(self, task: asyncio.Task) -> bool:
    """Whether `task`'s cancel came from its deadline alone (as
    asyncio.timeout decides); the deadline's cancel is undone."""
    before = self._expired.pop(task, None)
    return before is not None and task.uncancel() <= before

  def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
    now, watched = loop.time(), False
    for task, due in list(self._due.items()):
      if task.get_loop() is loop:  # another loop's reads are its timer's
        watched = True
        if due <= now and task not in self._expired:
          self._expired[task] = task.cancelling()
          task.cancel()
    if watched:
      self._timers[loop] = loop.call_later(self.interval, self._sweep, loop)
    else:
      del self._timers[loop]


class _BodyTimeout(Exception):
  """The client stopped sending its body."""


class _ClientGone(Exception):
  """The client disconnected before its request was read: nobody to answer."""


def _signature_name(body: Dict[str, Any], default: str) -> str:
  name = body.get("signature_name")
  if name is None or name == "":
    return default
  if not isinstance(name, str):
    raise ServingError("INVALID_ARGUMENT", "'signature_name' must be a string")
  return name


# What a classify example may hold: the image, and the label TFMA's examples carry.
_EXAMPLE_FEATURES = {
    features.IMAGE_KEY: (features.IMAGE_SIZE, features.PIXEL_MIN, features.PIXEL_MAX),
    features.LABEL_KEY: (1, 0, features.NUM_CLASSES - 1),
}


def _example(i: int, feats: Dict[str, Any]) -> bytes:
  """One classify example as a serialized tf.Example, checked first.

  The image must be exactly 784 integers in 0-255: the tf.Example signature
  would otherwise fail deep in its parser, or accept pixels out of range.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if features.IMAGE_KEY not in feats:
    raise ServingError("INVALID_ARGUMENT", f"example {i}: missing feature "
                       f"{features.IMAGE_KEY!r}")
  proto = {}
  for key, value in feats.items():
    if key not in _EXAMPLE_FEATURES:
      raise ServingError("INVALID_ARGUMENT", f"example {i}: unknown feature {key!r} "
                         f"(this model takes {sorted(_EXAMPLE_FEATURES)})")
    size, low, high = _EXAMPLE_FEATURES[key]
    # Vectorised: JSON numbers that are whole (7, 7.0, 1e6) are integers.
    array = _numbers(value if isinstance(value, list) else [value])
    if array is None or array.ndim != 1 or np.any(array != np.floor(array)):
      raise ServingError("INVALID_ARGUMENT", f"example {i}: feature {key!r} "
                         "takes a list of integers")
    if array.size != size:
      raise ServingError("INVALID_ARGUMENT", f"example {i}: feature {key!r} "
                         f"takes {size} value(s), got {array.size}")
    if array.min() < low or array.max() > high:
      raise ServingError("INVALID_ARGUMENT", f"example {i}: feature {key!r} "
                         f"values must be in {low}-{high}")
    proto[key] = tf.train.Feature(int64_list=tf.train.Int64List(
        value=array.astype(np.int64)))
  return tf.train.Example(features=tf.train.Features(
      feature=proto)).SerializeToString()
