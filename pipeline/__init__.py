"""The mnist-tfx pipeline: DAG, configuration, runners and CLI."""

import components  # noqa: F401  (defers tfx.v1.extensions before any tfx import)
