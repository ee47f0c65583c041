"""A property-based fuzz test of the REST front end, over raw sockets.

Requests are built from the grammar of valid ones (a method, a path of TF
Serving's API, headers, a predict or classify body) and then broken in one
place: the method, the path, a header, the body, or the HTTP framing. Each
must get a status below 500 with a JSON body (the HTTP layer's own refusals
included), and a good request right after must get the right answer. The
seed and the case count are printed. `make test` uses a fixed seed, so its
cases are the same every run; MNIST_TFX_FUZZ_SEED=random draws a new one
(a number replays a run), MNIST_TFX_FUZZ_CASES=N asks for more cases.
Bounded in cases and in time.
"""

import json
import os
import random
import socket
import time

import pytest

from serving import server
from serving.model_store import ModelStore
from tests import bad_inputs, serve_process

NAME = bad_inputs.NAME
CASES = int(os.environ.get("MNIST_TFX_FUZZ_CASES", "300"))
SECONDS = 120.0  # at most, whatever CASES says
DEFAULT_SEED = 20261203
BODY_TIMEOUT = 0.5
HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def rest(tft_output, tmp_path_factory):
  base, version = serve_process.push_tiny_model(
      tft_output, tmp_path_factory.mktemp("fuzz"), NAME)
  store = ModelStore(NAME, base).start()
  api = server.RestServer(store, port=0, max_payload_bytes=1 << 20,
                          body_timeout=BODY_TIMEOUT, header_timeout=HEADER_TIMEOUT).start()
  yield api, version
  api.stop()
  store.stop()


# --- the grammar of valid requests ----------------------------------------------

def _image(rng: random.Random, flat: bool):
  pixels = [rng.randrange(256) for _ in range(784)]
  return pixels if flat else [pixels[r * 28:(r + 1) * 28] for r in range(28)]


def _valid(rng: random.Random, version: int):
  """(method, path, headers, body bytes) of a request the server answers 200."""
  where = rng.choice([f"/v1/models/{NAME}", f"/v1/models/{NAME}/versions/{version}"])
  kind = rng.choice(["predict", "predict_columns", "classify", "status", "metadata"])
  if kind == "status":
    return "GET", where, [], b""
  if kind == "metadata":
    return "GET", where + "/metadata", [], b""
  n = rng.randint(1, 3)
  if kind == "classify":
    body = {"examples": [{"image": _image(rng, True)} for _ in range(n)]}
    path = where + ":classify"
  elif kind == "predict":
    flat = rng.random() < 0.5  # [N, 784] or [N, 28, 28]: one form per request
    body = {"instances": [_image(rng, flat) for _ in range(n)]}
    path = where + ":predict"
  else:
    body = {"signature_name": "serving_uint8",
            "inputs": [_image(rng, True) for _ in range(n)]}
    path = where + ":predict"
  return "POST", path, [("Content-Type", "application/json")], json.dumps(body).encode()


# --- one thing broken --------------------------------------------------------------

_JUNK = ["", " ", "\u00e9", "%00", "%ff", "..", "//", "?", "#", ":", ";", "\t", "\\",
         "9" * 30, "9" * 5000, "-1", "1e9", "NaN", "\u202e", "%2F", "a" * 3000]
_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "FOO",
            "get", "P0ST", "CONNECT", "M" * 300]
_VALUES = [0, -1, 1.5, 1e308, -1e308, "7", None, True, [], {}, [[]], "b64",
           {"b64": "!!"}, [1] * 785, [[300] * 784], [[-1] * 784], 10 ** 400]


def _mutate_body(rng: random.Random, body: bytes) -> bytes:
  choice = rng.randrange(7)
  if choice == 0 or not body:  # cut short
    return body[:rng.randrange(len(body) + 1)] if body else b"{"
  if choice == 1:  # one byte changed
    i = rng.randrange(len(body))
    return body[:i] + bytes([rng.randrange(256)]) + body[i + 1:]
  if choice == 2:  # nested too deep
    depth = rng.choice([33, 100, 5000])
    return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
  if choice == 3:  # not JSON at all
    return rng.choice([b"\xff\xfe", b"null", b"[]", b'"x"', b"{}", b"1", b"NaN",
                       b'{"instances": NaN}', b'{"instances": [Infinity]}'])
  doc = json.loads(body)
  key = rng.choice(sorted(doc))
  if choice == 4:  # a value of the wrong kind
    doc[key] = rng.choice(_VALUES)
  elif choice == 5:  # an element of the wrong kind, deep inside
    node = doc[key]
    while isinstance(node, list) and node and isinstance(node[0], (list, dict)):
      node = node[0] if isinstance(node[0], list) else list(node[0].values())[0]
    if isinstance(node, list) and node:
      node[rng.randrange(len(node))] = rng.choice(_VALUES)
  else:  # an unknown key, or one missing
    if rng.random() < 0.5:
      doc[rng.choice(["x", "instances", "inputs", "signature_name", "context"])] = 1
    else:
      doc.pop(key)
  return json.dumps(doc, allow_nan=True).encode()


def _mutate(rng: random.Random, request):
  method, path, headers, body = request
  where = rng.choice(["method", "path", "header", "body", "framing"])
  length = str(len(body))
  if where == "method":
    method = rng.choice(_METHODS)
  elif where == "path":
    i = rng.randrange(len(path) + 1)
    path = path[:i] + rng.choice(_JUNK) + path[i + rng.randrange(3):]
    if rng.random() < 0.2:
      path = path.replace(NAME, rng.choice(["other", "", NAME.upper(), "m" * 500]), 1)
  elif where == "header":
    header = rng.choice([("Content-Length", rng.choice(["-1", "x", "99999999999",
                                                        str(len(body) + 7), "1 2"])),
                         ("Content-Type", rng.choice(["text/plain", "", "\u00e9"])),
                         ("X-Big", "v" * rng.choice([10, 9000, 200_000])),
                         ("Transfer-Encoding", rng.choice(["chunked", "gzip", "x"])),
                         ("Bad Header", "1"), ("", "empty name")])
    if header[0] == "Content-Length":
      length = header[1]
    else:
      headers = headers + [header]
  elif where == "body":
    body = _mutate_body(rng, body)
    length = str(len(body))
  return method, path, headers, body, length, where == "framing"


def _encode(method, path, headers, body, length, broken_framing, rng):
  head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
  head += [f"{k}: {v}" for k, v in headers]
  head.append(f"Content-Length: {length}")
  data = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
  if broken_framing:
    cut = rng.choice(["lf", "space", "version", "nul"])
    if cut == "lf":
      data = data.replace(b"\r\n", b"\n", 1)
    elif cut == "space":
      data = data.replace(b" ", b"", 1)
    elif cut == "version":
      data = data.replace(b"HTTP/1.1", rng.choice([b"HTTP/2.0", b"HTTP/1.9", b"HTTX"]), 1)
    else:
      i = rng.randrange(len(data))
      data = data[:i] + b"\x00" + data[i:]
  return data


def _exchange(port: int, data: bytes):
  """(status, body bytes, headers) of the first answer to `data`."""
  with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
    try:
      s.sendall(data)
    except OSError:
      pass  # the server refused part way: read what it said
    got = b""
    while True:
      try:
        chunk = s.recv(65536)
      except OSError:
        break
      if not chunk:
        break
      got += chunk
      head, sep, rest = got.partition(b"\r\n\r\n")
      lengths = [int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length:")]
      if sep and lengths and len(rest) >= lengths[0]:
        break
  head, _, rest = got.partition(b"\r\n\r\n")
  status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
  return status, rest, head


def _good(port: int, version: int, rng: random.Random) -> None:
  method, path, headers, body = _valid(rng, version)
  status, answer, head = _exchange(port, _encode(method, path, headers, body,
                                                 str(len(body)), False, rng))
  assert status == 200, (path, status, answer[:300])
  doc = json.loads(answer)
  if path.endswith(":predict"):
    sent = json.loads(body)
    if "instances" in sent:  # row form: one prediction per instance
      assert len(doc["predictions"]) == len(sent["instances"])
      probabilities = doc["predictions"][0]["probabilities"]
    else:  # columnar form: each output a batch
      assert len(doc["outputs"]["classes"]) == len(sent["inputs"])
      probabilities = doc["outputs"]["probabilities"][0]
    assert abs(sum(probabilities) - 1) < 1e-4


def test_random_broken_requests_get_a_json_answer_below_500(rest):
  api, version = rest
  asked = os.environ.get("MNIST_TFX_FUZZ_SEED", str(DEFAULT_SEED))
  seed = random.SystemRandom().randrange(1 << 32) if asked == "random" else int(asked)
  rng = random.Random(seed)
  start, done, by_status = time.monotonic(), 0, {}
  print(f"\nREST fuzz: seed {seed} (MNIST_TFX_FUZZ_SEED={seed} replays it)")
  try:
    for case in range(CASES):
      if time.monotonic() - start > SECONDS:
        break
      request = _valid(rng, version)
      method, path, headers, body, length, framing = _mutate(rng, request)
      data = _encode(method, path, headers, body, length, framing, rng)
      status, answer, head = _exchange(api.port, data)
      context = (case, method, path[:200], headers[-1:], body[:200], length, framing,
                 status, answer[:300])
      assert status is not None and status < 500 or (
          status == 501 and ":regress" in path.lower()), context
      assert b"content-type: application/json" in head.lower(), context
      if method != "HEAD":  # a HEAD answer has no body, by HTTP's rules
        assert "error" in json.loads(answer) or status == 200, context
      by_status[status] = by_status.get(status, 0) + 1
      _good(api.port, version, rng)
      done += 1
  finally:
    print(f"REST fuzz: {done} cases in {time.monotonic() - start:.1f} s, "
          f"statuses {dict(sorted(by_status.items()))}, seed {seed}")
  assert done >= min(CASES, 50)
