"""Shared fixtures: tiny IDX datasets written by the tests themselves."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import components  # noqa: E402,F401  (defers tfx.v1.extensions)
from tests import tiny_mnist  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """300 train / 100 eval learnable images, gzipped like the real files."""
  directory = str(tmp_path_factory.mktemp("tiny_mnist"))
  tiny_mnist.write_dataset(directory)
  return directory
