"""IdxExampleGen's encoding and its Beam stages, on tiny data."""

import glob
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf

from components import example_gen, features, idx
from tests import tiny_mnist


def _proto(image, label, writer=None):
  feature = {
      features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=image.reshape(-1).tolist())),
      features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(label)])),
  }
  if writer is not None:
    feature[features.WRITER_KEY] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[writer.encode()]))
  return tf.train.Example(features=tf.train.Features(feature=feature))


@pytest.mark.parametrize("fill", ["random", 0, 127, 128, 255])
def test_fast_encoding_equals_protobuf(fill):
  rng = np.random.default_rng(1)
  if fill == "random":
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
  else:
    images = np.full((3, 28, 28), fill, np.uint8)
  labels = rng.integers(0, 10, size=len(images)).astype(np.uint8)
  encoded = example_gen.encode_examples(images, labels)
  for data, image, label in zip(encoded, images, labels):
    assert tf.train.Example.FromString(data) == _proto(image, label)


def test_fast_encoding_with_writers_equals_protobuf():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=6).astype(np.uint8)
  writers = example_gen.writers(features.EVAL_SPLIT, 4997, 5003)
  assert writers == ["SD-3"] * 3 + ["SD-1"] * 3
  encoded = example_gen.encode_examples(images, labels, writers)
  for data, image, label, writer in zip(encoded, images, labels, writers):
    assert tf.train.Example.FromString(data) == _proto(image, label, writer)


def test_only_the_test_split_knows_its_writers():
  assert example_gen.writers(features.TRAIN_SPLIT, 0, 10) is None
  assert example_gen.writers(features.EVAL_SPLIT, 0, 2) == ["SD-3", "SD-3"]
  assert example_gen.writers(features.EVAL_SPLIT, 9998, 10000) == ["SD-1", "SD-1"]


def _write(pairs, out):
  with beam.Pipeline() as pipeline:
    example_gen.write_examples(pipeline, pairs, out, shard_records=64)
  example_gen.finish_examples(pairs, out, shard_records=64)


@pytest.mark.parametrize("compress", [True, False])
def test_write_examples_writes_every_record_of_every_split(tmp_path, compress):
  data_dir, _ = tiny_mnist.write_dataset(str(tmp_path / "data"), compress=compress)
  tmp_path = tmp_path / "out"
  pairs = example_gen.check_data_dir(data_dir)
  assert all(p.gzipped == compress for p in pairs.values())
  _write(pairs, str(tmp_path))
  for split, n in (("train", 300), ("eval", 100)):
    files = sorted(glob.glob(os.path.join(tmp_path, f"Split-{split}", "*.gz")))
    assert [os.path.basename(f) for f in files] == [
        f"data_tfrecord-{i:05d}-of-{-(-n // 64):05d}.gz" for i in range(-(-n // 64))]
    records = [tf.train.Example.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert len(records) == n
    # Shards in name order are the IDX records in file order.
    labels = [r.features.feature[features.LABEL_KEY].int64_list.value[0]
              for r in records]
    assert labels == idx.read_range(pairs[split], 0, n)[1].tolist()
    written = [r.features.feature[features.WRITER_KEY].bytes_list.value
               for r in records]
    assert written == ([[b"SD-3"]] * n if split == "eval" else [[]] * n)
    assert all(len(r.features.feature[features.IMAGE_KEY].int64_list.value)
               == features.IMAGE_SIZE for r in records)
  assert sorted(os.listdir(tmp_path)) == ["Split-eval", "Split-train"]  # no staging


def test_a_gzipped_split_is_one_element_and_a_raw_shard_is_one(tmp_path):
  gz, _ = tiny_mnist.write_dataset(str(tmp_path / "gz"), compress=True)
  raw, _ = tiny_mnist.write_dataset(str(tmp_path / "raw"), compress=False)
  grouped = example_gen._elements(example_gen.check_data_dir(gz), 64)
  apart = example_gen._elements(example_gen.check_data_dir(raw), 64)
  assert grouped == [
      ("train", [(0, 64, 0, 5), (64, 128, 1, 5), (128, 192, 2, 5),
                 (192, 256, 3, 5), (256, 300, 4, 5)]),
      ("eval", [(0, 64, 0, 2), (64, 100, 1, 2)])]
  assert apart == [(split, [shard]) for split, shards in grouped
                   for shard in shards]


def test_writing_again_replaces_each_shard_and_adds_nothing(tiny_data_dir, tmp_path):
  pairs = example_gen.check_data_dir(tiny_data_dir)
  _write(pairs, str(tmp_path))
  first = {f: open(f, "rb").read() for f in glob.glob(str(tmp_path / "*" / "*"))}
  _write(pairs, str(tmp_path))  # as a retried shard or a rerun would
  second = {f: open(f, "rb").read() for f in glob.glob(str(tmp_path / "*" / "*"))}
  assert first == second


def test_a_missing_shard_fails_the_component(tiny_data_dir, tmp_path):
  pairs = example_gen.check_data_dir(tiny_data_dir)
  _write(pairs, str(tmp_path))
  os.remove(example_gen.shard_path(str(tmp_path), "eval", 1, 2))
  with pytest.raises(RuntimeError, match="1 shard.*00001-of-00002"):
    example_gen.finish_examples(pairs, str(tmp_path), shard_records=64)


def test_fingerprint_changes_with_the_files(tmp_path):
  d = str(tmp_path)
  tiny_mnist.write_dataset(d, n_train=20, n_eval=10)
  before = example_gen.fingerprint(d)
  assert example_gen.fingerprint(d) == before
  tiny_mnist.write_dataset(d, n_train=30, n_eval=10)
  assert example_gen.fingerprint(d) != before


def test_reads_and_checks_through_tf_gfile_uris():
  """Any filesystem TF reads works (here TF's in-memory ram://), not just open()."""
  root = "ram://mnist-uri-test"
  tf.io.gfile.makedirs(root)
  labels = (np.arange(30) % 10).astype(np.uint8)
  from components import idx
  for stem in ("train", "t10k"):
    idx.write_images(f"{root}/{stem}-images-idx3-ubyte.gz",
                     tiny_mnist.make_images(labels), compress=True)
    idx.write_labels(f"{root}/{stem}-labels-idx1-ubyte.gz", labels, compress=True)
  pairs = example_gen.check_data_dir(root)
  assert {s: p.count for s, p in pairs.items()} == {"train": 30, "eval": 30}
  assert pairs["train"].images_path.startswith("ram://")
  images, got = idx.read_range(pairs["eval"], 10, 20)
  np.testing.assert_array_equal(got, labels[10:20])
  assert example_gen.fingerprint(root)  # stat() through gfile too
