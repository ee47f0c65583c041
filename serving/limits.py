"""Serving's defaults and limits, in one place: the CLI, REST and gRPC read them.

Each limit bounds what one request can make the server do: read, parse,
allocate or wait for. A request past a limit is refused with a clear error
before the work is done.
"""

HOST = "127.0.0.1"  # loopback: exposing the server is a decision (--host)
REST_PORT = 8501  # TF Serving's
GRPC_PORT = 8500  # TF Serving's
POLL_SECONDS = 2.0  # how often the base path is read for new versions
MODEL_NAME = "mnist"

# Request size: REST bodies and gRPC messages alike.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MIN_PAYLOAD_BYTES = 1024  # below this not even one 784-value image fits
MAX_PAYLOAD_BYTES_LIMIT = 1 << 30  # gRPC lengths are int32; keep far below
# JSON nesting: a request needs 5 levels ({"instances": [[[28 values]]]});
# a parser recursing 100,000 levels is an attack, not a request.
MAX_JSON_DEPTH = 32
# A body must arrive within this; a client that stops sending is dropped.
BODY_TIMEOUT_SECONDS = 10.0
# Values one request may hold, counted before anything is allocated. An
# 8 MiB message of packed uint8 values holds at most 8 Mi of them.
MAX_TENSOR_ELEMENTS = MAX_PAYLOAD_BYTES

BATCH_SIZE = 32  # --max-batch-size
BATCH_TIMEOUT_MICROS = 2000  # --batch-timeout-micros
MAX_BATCH_SIZE_LIMIT = 4096
MAX_BATCH_TIMEOUT_MICROS = 1_000_000
MIN_POLL_SECONDS = 0.1
MAX_POLL_SECONDS = 24 * 3600.0
