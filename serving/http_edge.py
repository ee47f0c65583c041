"""The REST port's HTTP layer: uvicorn's httptools protocol with its edges closed.

uvicorn answers what never reaches the app (a request it cannot parse: an
unknown method, a URL or header past httptools' limits) with a plain-text
400, holds a connection whose request head trickles in for as long as it
trickles, and takes any number of connections. `protocol(...)` gives the
protocol class uvicorn runs instead (`uvicorn.Config(http=...)`):
- refusals are JSON, as every other answer of TF Serving's REST API;
- a request's head (request line and headers) must arrive within
  `header_timeout` seconds of its first byte, or of the connection when it
  sends none (checked every min(1 s, timeout / 4)); else a JSON 408 and the
  connection is closed;
- past `max_connections` open connections, a new one gets a JSON 503
  (UNAVAILABLE, TF Serving's status for it) and is closed at once.
It relies on uvicorn's `HttpToolsProtocol` (checked on uvicorn 0.54): where
that class lacks the methods it extends, uvicorn's own protocol runs, said
once in the log.
"""

import logging
from typing import Optional, Type

import orjson

_LOG = logging.getLogger(__name__)
_EXTENDED = ("connection_made", "on_message_begin", "on_headers_complete",
             "send_400_response")
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


def _response(status: int, message: str) -> bytes:
  body = orjson.dumps({"error": message})
  return b"".join([
      b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
      b"content-type: application/json\r\n",
      b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])


def protocol(header_timeout: float, max_connections: int) -> Optional[Type]:
  """The protocol class, or None where uvicorn's httptools one is not there
  as expected (then uvicorn's default runs)."""
  try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    _LOG.warning("REST edges: uvicorn's httptools protocol is missing (%s); "
                 "uvicorn's own refusals and limits apply", e)
    return None
  if not all(callable(getattr(HttpToolsProtocol, m, None)) for m in _EXTENDED):
    _LOG.warning("REST edges: this uvicorn's HttpToolsProtocol differs; "
                 "uvicorn's own refusals and limits apply")
    return None

  interval = min(1.0, header_timeout / 4)  # how late a deadline may fire
  sweepers = {}  # event loop -> its one timer, armed while connections are open

  class EdgeProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with JSON refusals, a head deadline and a cap.

    A request's head costs one attribute, not a timer: one timer per event
    loop wakes every `interval` while connections are open and refuses
    those whose head is late (a timer per request cost a third of the
    16-client throughput).
    """

    _head_since = None  # loop time the current head began; None: none pending

    def connection_made(self, transport) -> None:
      super().connection_made(transport)
      if len(self.connections) > max_connections:
        self._refuse(503, f"too many connections: this server takes at most "
                     f"{max_connections} at once (--max-connections)")
        return
      self._head_since = self.loop.time()
      if self.loop not in sweepers:
        sweepers[self.loop] = self.loop.call_later(interval, _sweep, self.loop,
                                                   self.connections)

    def on_message_begin(self) -> None:
      super().on_message_begin()
      self._head_since = self.loop.time()  # this request's head: from its first byte

    def on_headers_complete(self) -> None:
      self._head_since = None
      super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
      self._refuse(400, "malformed HTTP request: the request line or headers "
                   "cannot be parsed (unknown method, or a URL or header too long)")

    def _refuse(self, status: int, message: str) -> None:
      self._head_since = None
      if not self.transport.is_closing():
        self.transport.write(_response(status, message))
        self.transport.close()

  def _sweep(loop, connections) -> None:
    now = loop.time()
    for connection in list(connections):
      since = getattr(connection, "_head_since", None)
      if since is not None and now - since >= header_timeout:
        connection._refuse(408, f"the request's headers did not arrive within "  # pylint: disable=protected-access
                           f"{header_timeout:g} s")
    if connections:  # armed while any connection is open
      sweepers[loop] = loop.call_later(interval, _sweep, loop, connections)
    else:
      del sweepers[loop]

  return EdgeProtocol
