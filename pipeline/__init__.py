"""The mnist-tfx pipeline: the DAG, its configuration and its runners."""

import components  # noqa: F401  (defers tfx.v1.extensions before any tfx import)
