"""The REST port's edges, over raw sockets: whatever the method, path,
number or pace of a request, the answer is JSON with TF Serving's status
mapping, and a good request is served right after."""

import json
import select
import socket
import time

import httpx
import pytest

from serving import server
from serving.model_store import ModelStore
from tests import bad_inputs, serve_process

NAME = bad_inputs.NAME
HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def rest(tft_output, tmp_path_factory):
  base, _ = serve_process.push_tiny_model(tft_output, tmp_path_factory.mktemp("edges"),
                                          NAME)
  store = ModelStore(NAME, base).start()
  api = server.RestServer(store, port=0, header_timeout=HEADER_TIMEOUT,
                          max_connections=MAX_CONNECTIONS).start()
  yield api
  api.stop()
  store.stop()


def _good(rest):
  r = httpx.post(f"http://127.0.0.1:{rest.port}{bad_inputs.PREDICT}",
                 json=bad_inputs.GOOD, timeout=30)
  assert r.status_code == 200, r.text


def _raw(rest, data: bytes, timeout: float = 10) -> tuple:
  """Sends `data`, reads until the server closes: (status, JSON body, seconds)."""
  start = time.monotonic()
  with socket.create_connection(("127.0.0.1", rest.port), timeout=timeout) as s:
    if data:
      s.sendall(data)
    return _answer(s, start)


def _answer(s: socket.socket, start: float) -> tuple:
  got = b""
  while True:
    try:
      chunk = s.recv(65536)
    except ConnectionResetError:
      break  # closed after its answer
    if not chunk:
      break
    got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
              if l.lower().startswith(b"content-length:")]
    if length and len(body) >= length[0]:
      break
  head, _, body = got.partition(b"\r\n\r\n")
  status = int(head.split(b" ")[1])
  assert b"content-type: application/json" in head.lower(), head
  return status, json.loads(body), time.monotonic() - start


@pytest.mark.parametrize("path,method", [
    (f"/v1/models/{NAME}/versions/{'9' * 5000}:predict", "POST"),
    (f"/v1/models/{NAME}/versions/{'9' * 5000}", "GET"),
    (f"/v1/models/{NAME}/versions/{'9' * 5000}/metadata", "GET"),
    (f"/v1/models/{NAME}/versions/{'9' * 20}:predict", "POST")])
def test_a_version_past_int64_is_a_400_not_a_500(rest, path, method):
  r = httpx.request(method, f"http://127.0.0.1:{rest.port}{path}",
                    json=bad_inputs.GOOD, timeout=30)
  assert r.status_code == 400, r.text
  assert "version must be a number from 0 to 9223372036854775807" in r.json()["error"]
  _good(rest)


def test_the_largest_int64_version_is_merely_not_found(rest):
  r = httpx.get(f"http://127.0.0.1:{rest.port}/v1/models/{NAME}/versions/"
                f"{(1 << 63) - 1}", timeout=30)
  assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT", "MKCOL", "LOCK"])
def test_other_methods_are_a_json_405(rest, method):
  status, body, _ = _raw(rest, f"{method} /v1/models/{NAME} HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
  assert status == 405 and "not allowed" in body["error"], (status, body)
  _good(rest)


@pytest.mark.parametrize("request_bytes", [
    b"FOO /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",               # unknown method
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a 100 KB URL
    b"GET / HTTP/1.1\r\nX: " + b"b" * 200_000 + b"\r\n\r\n",     # a 200 KB header
    b"GET / HTTP/9.9\r\n\r\n",                                    # no such HTTP
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,  # TLS to plain HTTP
    b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"])
def test_malformed_http_is_a_json_400(rest, request_bytes):
  status, body, _ = _raw(rest, request_bytes)
  assert status in (400, 404), (status, body)  # 404: a long URL that parses
  assert body["error"]
  _good(rest)


def test_headers_that_trickle_in_are_cut_off_with_a_json_408(rest):
  start = time.monotonic()
  with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as s:
    s.sendall(f"POST {bad_inputs.PREDICT} HTTP/1.1\r\n".encode())
    for i in range(20):  # one header line every 0.3 s: 6 s in all ...
      if select.select([s], [], [], 0.3)[0]:
        break  # ... unless the server has answered
      s.sendall(f"X-Slow-{i}: 1\r\n".encode())
    status, body, _ = _answer(s, start)
  took = time.monotonic() - start
  assert status == 408 and "did not arrive within 1 s" in body["error"]
  assert HEADER_TIMEOUT <= took < HEADER_TIMEOUT + 2.5, took
  _good(rest)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(rest):
  status, body, took = _raw(rest, b"")
  assert status == 408 and HEADER_TIMEOUT <= took < HEADER_TIMEOUT + 2.5
  _good(rest)


def test_past_the_connection_cap_a_json_503_and_room_again_after(rest):
  idle = [socket.create_connection(("127.0.0.1", rest.port)) for _ in range(MAX_CONNECTIONS)]
  try:
    time.sleep(0.2)
    status, body, took = _raw(rest, b"")
    assert status == 503 and f"at most {MAX_CONNECTIONS}" in body["error"]
    assert took < HEADER_TIMEOUT  # at once, not after a deadline
  finally:
    for s in idle:
      s.close()
  time.sleep(0.2)
  _good(rest)
