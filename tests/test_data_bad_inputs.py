"""Every damaged dataset in the corpus (tests/bad_inputs.py DATA) is refused,
naming the file (or folder) and what is wrong, by the same checks the
pipeline runs: IdxExampleGen's file checks, then the label distribution
that AnomaliesGate enforces. The pipeline-level path is in test_faults.py.
"""

import gzip
import os
import shutil

import numpy as np
import pytest

from components import data_validation, example_gen, idx
from mnist_tfx import defaults
from tests import bad_inputs, tiny_mnist


def _path(d, stem, kind, gz):
  dims = "idx3" if kind == "images" else "idx1"
  return os.path.join(d, f"{stem}-{kind}-{dims}-ubyte" + (".gz" if gz else ""))


def _labels(d, stem, gz):
  return idx.load(_path(d, stem, "images", gz), _path(d, stem, "labels", gz))[1]


def _relabel(d, stem, gz, labels):
  idx.write_labels(_path(d, stem, "labels", gz), np.asarray(labels, np.uint8), gz)
  return _path(d, stem, "labels", gz)


def _rewrite(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return path


def _read(path):
  with open(path, "rb") as f:
    return f.read()


def _append(path, data):
  return _rewrite(path, _read(path) + data)


def _set_label(d, gz, index, value):
  # Written raw, past the checks a good file would pass.
  path = _path(d, "train", "labels", gz)
  data = bytearray(gzip.decompress(_read(path)) if gz else _read(path))
  data[8 + index] = value
  return _rewrite(path, gzip.compress(bytes(data)) if gz else bytes(data))


# damage -> (gzipped dataset?, function(dir) -> the path the error must name)
DAMAGE = {
    "truncate_gz": (True, lambda d: _rewrite(
        _path(d, "train", "images", True),
        _read(_path(d, "train", "images", True))[:2000])),
    "append_garbage_to_gz": (True, lambda d: _rewrite(
        _path(d, "train", "images", True),
        _read(_path(d, "train", "images", True)) + b"garbage!")),
    "append_cut_gz_stream": (True, lambda d: _append(
        _path(d, "t10k", "labels", True), _read(_path(d, "t10k", "labels", True))[:30])),
    "flip_gz_bytes": (True, lambda d: _rewrite(
        _path(d, "train", "images", True),
        (lambda b: b[:500] + bytes(x ^ 0xFF for x in b[500:600]) + b[600:])(
            _read(_path(d, "train", "images", True))))),
    "truncate_raw": (False, lambda d: _rewrite(
        _path(d, "train", "images", False),
        _read(_path(d, "train", "images", False))[:-100])),
    "append_raw_bytes": (False, lambda d: _rewrite(
        _path(d, "t10k", "images", False),
        _read(_path(d, "t10k", "images", False)) + b"\0" * 7)),
    "images_magic": (False, lambda d: _rewrite(
        _path(d, "train", "images", False),
        b"\0\0\x08\x02" + _read(_path(d, "train", "images", False))[4:])),
    "labels_magic": (False, lambda d: _rewrite(
        _path(d, "train", "labels", False),
        b"\0\0\x08\x03" + _read(_path(d, "train", "labels", False))[4:])),
    "swap_files": (False, lambda d: shutil.copy(
        _path(d, "train", "labels", False), _path(d, "train", "images", False))),
    "empty_images": (False, lambda d: _rewrite(_path(d, "train", "images", False), b"")),
    "empty_labels": (False, lambda d: _rewrite(_path(d, "t10k", "labels", False), b"")),
    "cut_header": (False, lambda d: _rewrite(
        _path(d, "train", "images", False),
        _read(_path(d, "train", "images", False))[:10])),
    "small_images": (False, lambda d: idx.write_images(
        _path(d, "train", "images", False), np.zeros((300, 14, 14), np.uint8))
        or _path(d, "train", "images", False)),
    "fewer_labels": (False, lambda d: _relabel(d, "train", False,
                                               _labels(d, "train", False)[:-1])),
    "label_10": (False, lambda d: _set_label(d, False, 13, 10)),
    "label_255": (True, lambda d: _set_label(d, True, 0, 255)),
    "zero_records": (False, lambda d: (
        idx.write_images(_path(d, "t10k", "images", False), np.zeros((0, 28, 28), np.uint8)),
        idx.write_labels(_path(d, "t10k", "labels", False), np.zeros(0, np.uint8)),
        _path(d, "t10k", "images", False))[-1]),
    "remove_labels": (True, lambda d: os.remove(_path(d, "train", "labels", True)) or d),
    "remove_test_images": (True, lambda d: os.remove(_path(d, "t10k", "images", True)) or d),
    "duplicate_gz_and_raw": (True, lambda d: _rewrite(
        _path(d, "train", "images", False),
        gzip.decompress(_read(_path(d, "train", "images", True)))) and d),
    "remove_dir": (True, lambda d: shutil.rmtree(d) or d),
    "one_digit_train": (True, lambda d: _relabel(d, "train", True, [3] * 300) and None),
    "one_digit_eval": (True, lambda d: _relabel(d, "t10k", True, [0] * 100) and None),
    "no_sevens": (True, lambda d: _relabel(
        d, "train", True, np.where(_labels(d, "train", True) == 7, 1,
                                   _labels(d, "train", True))) and None),
    # 30 % zeros in eval against 10 % in train; every digit still >= 5 %.
    "drifted_eval": (True, lambda d: _relabel(
        d, "t10k", True, [0] * 30 + [c for c in range(1, 10) for _ in range(7)]
        + [9] * 7) and None),
}


def _check(data_dir):
  """What the pipeline checks before training, in its order."""
  pairs = example_gen.check_data_dir(data_dir)
  found = data_validation.label_distribution_anomalies(
      {split: list(p.label_counts) for split, p in pairs.items()},
      defaults.MIN_LABEL_SHARE, defaults.MAX_LABEL_DRIFT)
  if found:
    raise data_validation.DataAnomaliesError("; ".join(found))


@pytest.mark.parametrize("case", bad_inputs.DATA, ids=[c[0] for c in bad_inputs.DATA])
def test_damaged_data_is_refused_naming_file_and_problem(tmp_path, case):
  _, damage, words = case
  gz, apply = DAMAGE[damage]
  data_dir = str(tmp_path / "mnist")
  tiny_mnist.write_dataset(data_dir, compress=gz)
  _check(data_dir)  # the good dataset passes
  named = apply(data_dir)
  with pytest.raises((idx.IdxError, data_validation.DataAnomaliesError)) as caught:
    _check(data_dir)
  message = str(caught.value)
  assert words in message, message
  if named:
    assert named in message, message


def test_every_damage_in_the_corpus_exists():
  assert {c[1] for c in bad_inputs.DATA} <= set(DAMAGE)
