"""Every default and limit of mnist-tfx, in one place that everything imports.

Paths and names of a run, the blessing and validation bounds, and serving's
ports and limits. Each serving limit bounds what one request can make the
server do (read, parse, allocate, wait for); a request past one is refused
with a clear error before the work is done. Nothing heavy is imported here.
"""

# --- a pipeline run ---------------------------------------------------------
PIPELINE_NAME = "mnist-tfx"
OUTPUT_DIR = "outputs"  # --output-dir
SUMMARY_FILE = "summary.json"
METADATA_FILE = "metadata.sqlite"
HISTORY_FILE = "history.json"  # the Trainer's per-epoch metrics, in its model run dir
TENSORBOARD_DIR = "tensorboard"  # TensorBoard's event files, in a model run or trial dir
# In-process Beam: on 2 cores the multi-process DirectRunner was slower (its
# workers re-import TF and pickle every element); see the README.
BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
IMAGE = "mnist-tfx:latest"  # container image of a compiled pipeline (Dockerfile)
# Blessing: the absolute bound is the architecture's (components.models);
# this is the accuracy a candidate may lose against the last blessed model.
MAX_REGRESSION = 0.001
# What any one digit's accuracy may lose against the last blessed model's
# (each digit has ~1,000 test records: 0.01 is ten of them).
MAX_CLASS_REGRESSION = 0.01
# By how much a model more complex than `basic` must beat the basic model's
# last blessed accuracy in the store.
MIN_MARGIN_OVER_SIMPLER = 0.01
# Label distribution that data validation enforces (see
# components.data_validation): MNIST's rarest digit holds 8.9 % of a split,
# and a digit's share differs between the splits by < 0.5 %.
MIN_LABEL_SHARE = 0.05
MAX_LABEL_DRIFT = 0.1
# Hyperparameter search (--tune): the budget, and the share of the training
# records held out to select on (the test split is the Evaluator's alone).
TUNE_TRIALS = 30  # --tune-trials
TUNE_MINUTES = 10.0  # --tune-minutes: no trial starts after it, a running one stops
VALIDATION_SHARE = 0.1  # --validation-share

# --- serving ----------------------------------------------------------------
MODEL_NAME = "mnist"  # the serving name every blessed model is pushed under
# `mnist-tfx serve`'s web page: under a path of its own, apart from TF
# Serving's /v1/, /monitoring/ and KServe's /v2/.
UI_PATH = "/ui/"
HOST = "127.0.0.1"  # loopback: exposing the server is a decision (--host)
REST_PORT = 8501  # TF Serving's
GRPC_PORT = 8500  # TF Serving's
POLL_SECONDS = 2.0  # how often the base path is read for new versions
MIN_POLL_SECONDS = 0.1
MAX_POLL_SECONDS = 24 * 3600.0
# Request size: REST bodies and gRPC messages alike.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MIN_PAYLOAD_BYTES = 1024  # below this not even one 784-value image fits
MAX_PAYLOAD_BYTES_LIMIT = 1 << 30  # gRPC lengths are int32; keep far below
# JSON nesting: a request needs 5 levels ({"instances": [[[28 values]]]});
# a parser recursing 100,000 levels is an attack, not a request.
MAX_JSON_DEPTH = 32
# A body must arrive within this; a client that stops sending is dropped.
BODY_TIMEOUT_SECONDS = 10.0
# A request's head (request line and headers) must arrive within this of
# its first byte (or of the connection, when it sends nothing): a client
# that trickles its headers holds a connection no longer.
HEADER_TIMEOUT_SECONDS = 10.0  # --header-timeout-seconds
MIN_HEADER_TIMEOUT_SECONDS = 0.1
MAX_HEADER_TIMEOUT_SECONDS = 3600.0
# `mnist-tfx predict` reads pictures up to this size (a phone photo is
# 12-50 MP); a larger one, or a decompression bomb, is refused from its header.
MAX_PICTURE_PIXELS = 64_000_000
# Open REST connections at once; one more gets a JSON 503 and is closed.
MAX_CONNECTIONS = 1024  # --max-connections
MAX_CONNECTIONS_LIMIT = 65536
# Values one request may hold, counted before anything is allocated. An
# 8 MiB message of packed uint8 values holds at most 8 Mi of them.
MAX_TENSOR_ELEMENTS = MAX_PAYLOAD_BYTES
BATCH_SIZE = 32  # --max-batch-size
BATCH_TIMEOUT_MICROS = 2000  # --batch-timeout-micros
# Timed batching's queue: at most this many full batches wait; one request
# more is refused with UNAVAILABLE (503) instead of waiting without bound.
MAX_ENQUEUED_BATCHES = 100  # --max-enqueued-batches, TF Serving's name
MAX_ENQUEUED_BATCHES_LIMIT = 100_000
GREEDY_TURNS = 3  # event-loop turns a greedy batch gathers requests for
# ... then more, until this many turns in a row bring no request ...
GREEDY_QUIET_TURNS = 2
# ... for at most this many more turns.
GREEDY_GATHER_TURNS = 32
# Requests up to this size run on the event loop (their model call costs
# less than the hop to a thread); larger ones run in a worker thread.
INLINE_MAX_BYTES = 64 * 1024
# Threads for large requests and timed batching: each waiting request holds
# one, so a timed batch can fill to 16 concurrent requests.
WORKER_THREADS = 16
MAX_BATCH_SIZE_LIMIT = 4096
MAX_BATCH_TIMEOUT_MICROS = 1_000_000
# TF Serving's --model_config_file_poll_wait_seconds: how often the model
# config file is read for changes (promote, rollback, an edit).
CONFIG_POLL_SECONDS = 2.0
# --request-log: the share of answered predict requests kept (TF Serving's
# sampling_rate), the size a file rotates at, and the cap on the whole log.
REQUEST_LOG_SAMPLING = 0.01
REQUEST_LOG_FILE_BYTES = 64 * 1024 * 1024
REQUEST_LOG_TOTAL_BYTES = 1024 * 1024 * 1024
MIN_REQUEST_LOG_FILE_BYTES = 4096
# The model config file `promote` and `rollback` edit, and where serving
# with labels reads it (make serve passes it when it exists).
MODEL_CONFIG_FILE = "models.config"  # in the output dir
# `mnist-tfx monitor`: requests needed before a comparison means anything,
# and the drift bounds (TFDV's comparators: Jensen-Shannon divergence of the
# pixel values, L-infinity distance of the predicted-class shares against
# the training labels').
MONITOR_MIN_REQUESTS = 50
MONITOR_PIXEL_JSD = 0.1
MONITOR_CLASS_LINF = 0.25
MAX_AGE_DAYS = 30.0  # --max-age-days: the served version's age that fails monitor
