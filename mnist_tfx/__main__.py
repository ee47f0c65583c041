"""`python -m mnist_tfx ...` is `mnist-tfx ...`."""

from mnist_tfx.cli import entry

entry()
