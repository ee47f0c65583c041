"""IDX reading and checking: good files, and each way a file can be bad."""

import os

import numpy as np
import pytest

from components import idx
from tests import tiny_mnist


def _pair(tmp_path, n=20, compress=False, labels=None, images=None):
  labels = np.arange(n, dtype=np.uint8) % 10 if labels is None else labels
  images = tiny_mnist.make_images(labels) if images is None else images
  suffix = ".gz" if compress else ""
  ip = os.path.join(tmp_path, f"train-images-idx3-ubyte{suffix}")
  lp = os.path.join(tmp_path, f"train-labels-idx1-ubyte{suffix}")
  idx.write_images(ip, images, compress)
  idx.write_labels(lp, labels, compress)
  return ip, lp, images, labels


@pytest.mark.parametrize("compress", [False, True])
def test_check_and_read_round_trip(tmp_path, compress):
  ip, lp, images, labels = _pair(tmp_path, compress=compress)
  pair = idx.check_pair(ip, lp)
  assert (pair.count, pair.rows, pair.cols) == (20, 28, 28)
  got_images, got_labels = idx.read_range(pair, 5, 12)
  np.testing.assert_array_equal(got_images, images[5:12])
  np.testing.assert_array_equal(got_labels, labels[5:12])


@pytest.mark.parametrize("compress", [False, True])
def test_ranges_are_read_in_one_pass_as_each_range_alone(tmp_path, monkeypatch,
                                                         compress):
  ip, lp, images, labels = _pair(tmp_path, n=30, compress=compress)
  pair = idx.check_pair(ip, lp)
  assert pair.gzipped == compress
  opened = []
  open_raw = idx.open_raw
  monkeypatch.setattr(idx, "open_raw", lambda p: opened.append(p) or open_raw(p))
  ranges = [(0, 4), (4, 10), (13, 20), (29, 30)]  # adjacent, a gap, the end
  got = list(idx.read_ranges(pair, ranges))
  assert opened == [ip, lp]  # each file once, however many ranges
  for (a, b), (got_images, got_labels) in zip(ranges, got):
    np.testing.assert_array_equal(got_images, images[a:b])
    np.testing.assert_array_equal(got_labels, labels[a:b])


@pytest.mark.parametrize("ranges", [[(5, 10), (2, 4)], [(0, 6), (5, 8)], [(4, 2)]])
def test_ranges_out_of_order_are_refused(tmp_path, ranges):
  ip, lp, _, _ = _pair(tmp_path)
  with pytest.raises(ValueError, match="ascend without overlap"):
    list(idx.read_ranges(idx.check_pair(ip, lp), ranges))


def test_a_range_past_the_end_is_a_clear_error(tmp_path):
  ip, lp, _, _ = _pair(tmp_path, n=20, compress=True)
  with pytest.raises(idx.IdxError, match="changed while being read"):
    list(idx.read_ranges(idx.check_pair(ip, lp), [(0, 5), (18, 25)]))


def test_raw_sha256_ignores_compression(tmp_path):
  (tmp_path / "raw").mkdir()
  (tmp_path / "gz").mkdir()
  raw = _pair(tmp_path / "raw", compress=False)
  gz = _pair(tmp_path / "gz", compress=True)
  a, b = idx.check_pair(*raw[:2]), idx.check_pair(*gz[:2])
  assert a.images_sha256 == b.images_sha256
  assert a.labels_sha256 == b.labels_sha256


def test_find_file_accepts_gz_and_raw_and_names_missing(tmp_path):
  ip, _, _, _ = _pair(tmp_path, compress=True)
  assert idx.find_file(str(tmp_path), "train", "images") == ip
  with pytest.raises(idx.IdxError, match="no images file for split 't10k'"):
    idx.find_file(str(tmp_path), "t10k", "images")
  with pytest.raises(idx.IdxError, match="does not exist"):
    idx.find_file(str(tmp_path / "nope"), "train", "images")


def test_ambiguous_files_are_an_error(tmp_path):
  _pair(tmp_path, compress=True)
  _pair(tmp_path, compress=False)
  with pytest.raises(idx.IdxError, match="ambiguous"):
    idx.find_file(str(tmp_path), "train", "images")


def test_truncated_images(tmp_path):
  ip, lp, _, _ = _pair(tmp_path)
  with open(ip, "rb+") as f:
    f.truncate(16 + 28 * 28 * 19 + 100)
  with pytest.raises(idx.IdxError, match="truncated") as e:
    idx.check_pair(ip, lp)
  assert e.value.path == ip


def test_truncated_gzip_stream(tmp_path):
  ip, lp, _, _ = _pair(tmp_path, compress=True)
  data = open(ip, "rb").read()
  open(ip, "wb").write(data[: len(data) // 2])
  with pytest.raises(idx.IdxError, match="gzip|truncated") as e:
    idx.check_pair(ip, lp)
  assert ip in str(e.value)


def test_trailing_bytes(tmp_path):
  ip, lp, _, _ = _pair(tmp_path)
  with open(ip, "ab") as f:
    f.write(b"\0" * 7)
  with pytest.raises(idx.IdxError, match="7 unexpected bytes"):
    idx.check_pair(ip, lp)


def test_wrong_magic(tmp_path):
  ip, lp, _, _ = _pair(tmp_path)
  # Labels where images belong: the classic mix-up.
  with pytest.raises(idx.IdxError, match="wrong magic number 0x00000801") as e:
    idx.check_pair(lp, lp)
  assert e.value.path == lp


def test_count_mismatch(tmp_path):
  ip, lp, _, labels = _pair(tmp_path)
  idx.write_labels(lp, labels[:-1])
  with pytest.raises(idx.IdxError, match="19 labels but .* has 20 images"):
    idx.check_pair(ip, lp)


def test_label_out_of_range(tmp_path):
  labels = np.arange(20, dtype=np.uint8) % 10
  labels[13] = 10
  ip, lp, _, _ = _pair(tmp_path, labels=labels)
  with pytest.raises(idx.IdxError, match="label 10 at record 13 is out of range 0-9") as e:
    idx.check_pair(ip, lp)
  assert e.value.path == lp


@pytest.mark.parametrize("which", ["images", "labels"])
def test_empty_file(tmp_path, which):
  ip, lp, _, _ = _pair(tmp_path)
  path = ip if which == "images" else lp
  open(path, "wb").close()
  with pytest.raises(idx.IdxError, match="file is empty") as e:
    idx.check_pair(ip, lp)
  assert e.value.path == path


def test_zero_records(tmp_path):
  ip, lp, _, _ = _pair(tmp_path, labels=np.zeros(0, np.uint8),
                       images=np.zeros((0, 28, 28), np.uint8))
  with pytest.raises(idx.IdxError, match="holds no records"):
    idx.check_pair(ip, lp)


def test_wrong_image_size(tmp_path):
  labels = np.zeros(3, np.uint8)
  ip, lp, _, _ = _pair(tmp_path, labels=labels,
                       images=np.zeros((3, 32, 32), np.uint8))
  with pytest.raises(idx.IdxError, match="images are 32x32, expected 28x28"):
    idx.check_pair(ip, lp)


def test_not_gzip_but_named_gz_reads_raw(tmp_path):
  ip, lp, _, _ = _pair(tmp_path)
  os.rename(ip, ip + ".gz")
  assert idx.check_pair(ip + ".gz", lp).count == 20


def test_shard_ranges_cover_everything():
  assert list(idx.shard_ranges(25, 10)) == [(0, 10), (10, 20), (20, 25)]


def test_the_files_own_sha256_is_what_sha256sum_prints(tmp_path):
  import gzip
  import hashlib
  images_path, labels_path = _pair(tmp_path, compress=True)[:2]
  pair = idx.check_pair(images_path, labels_path)
  for path, file_hash, content_hash in (
      (images_path, pair.images_file_sha256, pair.images_sha256),
      (labels_path, pair.labels_file_sha256, pair.labels_sha256)):
    with open(path, "rb") as f:
      data = f.read()
    assert file_hash == hashlib.sha256(data).hexdigest()
    assert content_hash == hashlib.sha256(gzip.decompress(data)).hexdigest()


def test_headers_that_disagree_fail_before_any_data_is_read(tmp_path, monkeypatch):
  """Ten million images promised beside 2,000 labels: the headers say so."""
  import struct
  images_path = str(tmp_path / "train-images-idx3-ubyte.gz")
  labels_path = str(tmp_path / "train-labels-idx1-ubyte.gz")
  idx.write_labels(labels_path, np.zeros(2000, np.uint8), compress=True)
  idx._write(images_path, struct.pack(">I3I", idx.IMAGES_MAGIC, 10_000_000, 28, 28),  # pylint: disable=protected-access
             np.zeros((5, 28, 28), np.uint8), compress=True)
  read = []
  monkeypatch.setattr(idx, "_hash_rest", lambda *a: read.append(a) or ())
  with pytest.raises(idx.IdxError, match="2000 labels but .* has 10000000 images"):
    idx.check_pair(images_path, labels_path)
  assert read == []  # no payload read
  # Counts are compared before sizes.
  idx._write(images_path, struct.pack(">I3I", idx.IMAGES_MAGIC, 10_000_000, 32, 32),  # pylint: disable=protected-access
             np.zeros((5, 32, 32), np.uint8), compress=True)
  with pytest.raises(idx.IdxError, match="2000 labels"):
    idx.check_pair(images_path, labels_path)
