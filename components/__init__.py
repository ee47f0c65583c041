"""Custom TFX components and user modules for mnist-tfx."""

from components.lazy_imports import defer_tfx_extensions

defer_tfx_extensions()
