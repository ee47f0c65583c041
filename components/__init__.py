"""Custom TFX components and user modules for mnist-tfx."""

from mnist_tfx.speedups.lazy_extensions import defer_tfx_extensions

defer_tfx_extensions()
