"""IdxExampleGen: the IDX records of a data dir as tf.Examples, split as published.

A Python-function component (public `tfx.v1` API) rather than a
FileBasedExampleGen executor, because the v1 API exposes no custom-executor
hook for ExampleGen. The files are checked completely in the driver process
before any Beam work starts, so a bad file fails fast, names itself, and no
Examples artifact is published.
"""


import json
import os
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from tfx import v1 as tfx

from components import features, idx

# What the file-based ExampleGens record, so TFXIO and the report read our
# artifact exactly as they read one of theirs.
_FILE_FORMAT = "tfrecords_gzip"
_PAYLOAD_FORMAT = "FORMAT_TF_EXAMPLE"
_SHARD_RECORDS = 10_000  # records per Beam element and output file
_GZIP_LEVEL = 1  # zlib's fastest: ~3x faster than its default for +13 % size
_STAGING = ".staging"  # shard files being written, outside every split


def _varint(n: int) -> bytes:
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _len_field(tag: int, payload_len: int) -> bytes:
  """Tag and length of a length-delimited protobuf field."""
  return bytes([tag]) + _varint(payload_len)


def _int64_feature(key: str, packed_len: int) -> Tuple[bytes, int]:
  """Header of a map entry {key: Feature(int64_list)} and the entry's length.

  Example := 1:Features; Features := 1:map entry*; entry := 1:key 2:Feature;
  Feature := 3:Int64List; Int64List := 1:packed varints. Every tag here is a
  length-delimited field: (field << 3) | 2.
  """
  name = key.encode()
  int64_list = _len_field(0x0A, packed_len)  # Int64List.value
  feature = _len_field(0x1A, len(int64_list) + packed_len)  # Feature.int64_list
  entry = (_len_field(0x0A, len(name)) + name +
           _len_field(0x12, len(feature) + len(int64_list) + packed_len))
  header = entry + feature + int64_list
  return _len_field(0x0A, len(header) + packed_len) + header, (
      len(header) + packed_len)


def _bytes_feature(key: str, value: bytes) -> bytes:
  """A whole map entry {key: Feature(bytes_list=[value])}.

  Feature := 1:BytesList; BytesList := 1:bytes value.
  """
  name = key.encode()
  bytes_list = _len_field(0x0A, len(value)) + value  # BytesList.value
  feature = _len_field(0x0A, len(bytes_list)) + bytes_list  # Feature.bytes_list
  entry = (_len_field(0x0A, len(name)) + name +
           _len_field(0x12, len(feature)) + feature)
  return _len_field(0x0A, len(entry)) + entry


def encode_examples(images: np.ndarray, labels: np.ndarray,
                    writers: Optional[Sequence[str]] = None) -> List[bytes]:
  """Serialized tf.Examples: `image` = the row-major pixels, `label` = the
  class and, where `writers` is given, `writer` = the writer population.

  Byte-for-byte what `tf.train.Example(...).SerializeToString()` parses to,
  built with numpy for a whole batch: encoding through the protobuf API
  was half of ExampleGen's time on MNIST. Pixels are bytes, so each packed
  varint is one byte (< 128) or two (the low 7 bits with the high bit set,
  then 1).
  """
  flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
  high = flat >= 0x80
  first = np.where(high, (flat & 0x7F) | 0x80, flat).astype(np.uint8)
  pairs = np.stack([first, np.ones_like(first)], axis=2)
  keep = np.stack([np.ones_like(high), high], axis=2)
  packed = pairs[keep].tobytes()
  ends = np.cumsum(flat.shape[1] + high.sum(axis=1))
  label_entries = {}
  writer_entries = {w: _bytes_feature(features.WRITER_KEY, w.encode())
                    for w in set(writers or ())}
  out = []
  start = 0
  for i, (end, label) in enumerate(zip(ends.tolist(), labels.tolist())):
    if label not in label_entries:
      value = _varint(int(label))
      entry_head, entry_len = _int64_feature(features.LABEL_KEY, len(value))
      label_entries[label] = (entry_head + value, entry_len)
    image_head, image_len = _int64_feature(features.IMAGE_KEY, end - start)
    label_entry, label_len = label_entries[label]
    writer_entry = writer_entries[writers[i]] if writers else b""
    features_len = (len(image_head) + (end - start) + len(label_entry) +
                    len(writer_entry))
    out.append(_len_field(0x0A, features_len) + image_head +
               packed[start:end] + label_entry + writer_entry)
    start = end
  return out


def check_data_dir(data_dir: str) -> Dict[str, idx.IdxPair]:
  """Every split's IDX pair, fully checked (see `idx.check_pair`)."""
  pairs = {}
  for split, stem in features.SPLIT_FILES.items():
    pairs[split] = idx.check_pair(idx.find_file(data_dir, stem, "images"),
                                  idx.find_file(data_dir, stem, "labels"))
  return pairs


def test_records(data_dir: str) -> Optional[int]:
  """How many records the test split's labels file declares; None when it
  cannot be read (ExampleGen then checks the files and says what is wrong)."""
  try:
    return idx.record_count(idx.find_file(
        data_dir, features.SPLIT_FILES[features.EVAL_SPLIT], "labels"))
  except (idx.IdxError, OSError):
    return None


def fingerprint(data_dir: str) -> str:
  """Cheap identity of the input files (names, sizes, mtimes) for caching.

  Like the file-based ExampleGens' fingerprint: a changed file re-runs
  ExampleGen and everything downstream; an untouched one is a cache hit.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parts = []
  for stem in features.SPLIT_FILES.values():
    for kind in ("images", "labels"):
      path = idx.find_file(data_dir, stem, kind)
      stat = tf.io.gfile.stat(path)
      parts.append(f"{os.path.basename(path)}:{stat.length}:{stat.mtime_nsec}")
  return ";".join(parts)


class _WriteShards(beam.DoFn):
  """(split, [(start, stop, index, count), ...]) -> a gzipped TFRecord file per shard.

  Written with TensorFlow's C++ writer at zlib level 1 (TFRecord readers
  decompress any level): Beam's per-record sink compressed at level 6 in
  small pieces, most of ExampleGen's time, for files ~13 % smaller. Each
  file is written aside and renamed into its split, so a reader never sees
  part of one and a retried shard replaces its own file. The shards of one
  element are read in one pass over the IDX files (see `_elements`).
  """

  def __init__(self, pairs: Dict[str, idx.IdxPair], output_uri: str):
    self._pairs = pairs
    self._output_uri = output_uri

  def process(self, element: Tuple[str, List[Tuple[int, int, int, int]]]
              ) -> Iterable[str]:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    split, shards = element
    options = tf.io.TFRecordOptions(compression_type="GZIP",
                                    compression_level=_GZIP_LEVEL)
    records = idx.read_ranges(self._pairs[split], [s[:2] for s in shards])
    for (start, stop, index, count), (images, labels) in zip(shards, records):
      final = shard_path(self._output_uri, split, index, count)
      staged = os.path.join(self._output_uri, _STAGING,
                            f"{split}-{index:05d}.{uuid.uuid4().hex}")
      with tf.io.TFRecordWriter(staged, options) as writer:
        for record in encode_examples(images, labels, writers(split, start, stop)):
          writer.write(record)
      tf.io.gfile.rename(staged, final, overwrite=True)
      yield final


def writers(split: str, start: int, stop: int) -> Optional[List[str]]:
  """The writer population of records [start, stop) of `split`: known for
  the test split only (see `features.SD3_TEST_RECORDS`)."""
  if split != features.EVAL_SPLIT:
    return None
  return [features.writer_of_test_record(i) for i in range(start, stop)]


def shard_path(output_uri: str, split: str, index: int, count: int) -> str:
  return os.path.join(output_uri, f"Split-{split}",
                      f"data_tfrecord-{index:05d}-of-{count:05d}.gz")


def _shards(pairs: Dict[str, idx.IdxPair], shard_records: int
            ) -> List[Tuple[str, int, int, int, int]]:
  """(split, start, stop, index, count) of every output file."""
  shards = []
  for split, pair in pairs.items():
    ranges = list(idx.shard_ranges(pair.count, shard_records))
    shards += [(split, a, b, i, len(ranges)) for i, (a, b) in enumerate(ranges)]
  return shards


def _elements(pairs: Dict[str, idx.IdxPair], shard_records: int
              ) -> List[Tuple[str, List[Tuple[int, int, int, int]]]]:
  """The Beam elements: a shard each, or a split's shards where it is gzipped.

  A shard of a gzipped file would decompress everything before it (six
  train shards: 3.5 passes over the file); read together they take one.
  Uncompressed files are read at an offset, so their shards stay apart and
  spread over workers.
  """
  elements: List[Tuple[str, List[Tuple[int, int, int, int]]]] = []
  for split, a, b, i, n in _shards(pairs, shard_records):
    if pairs[split].gzipped and elements and elements[-1][0] == split:
      elements[-1][1].append((a, b, i, n))
    else:
      elements.append((split, [(a, b, i, n)]))
  return elements


def write_examples(pipeline: beam.Pipeline, pairs: Dict[str, idx.IdxPair],
                   output_uri: str, shard_records: int = _SHARD_RECORDS) -> None:
  """Adds the read-encode-write stages for every split to `pipeline`.

  Call `finish_examples` once the pipeline has run.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.join(output_uri, _STAGING))
  for split in pairs:
    tf.io.gfile.makedirs(os.path.join(output_uri, f"Split-{split}"))
  _ = (pipeline
       | "Shards" >> beam.Create(_elements(pairs, shard_records))
       | "Reshuffle" >> beam.Reshuffle()  # spreads the shards over workers
       | "Write" >> beam.ParDo(_WriteShards(pairs, output_uri)))


def finish_examples(pairs: Dict[str, idx.IdxPair], output_uri: str,
                    shard_records: int = _SHARD_RECORDS) -> None:
  """Checks that every shard file is there; removes the staging folder."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  missing = [path for path in (shard_path(output_uri, s, i, n) for s, _, _, i, n
                               in _shards(pairs, shard_records))
             if not tf.io.gfile.exists(path)]
  if missing:
    raise RuntimeError(f"ExampleGen wrote {len(missing)} shard(s) fewer than "
                       f"planned, e.g. {missing[0]}")
  tf.io.gfile.rmtree(os.path.join(output_uri, _STAGING))


@tfx.dsl.components.component(use_beam=True)
def IdxExampleGen(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.Examples],
    input_base: tfx.dsl.components.Parameter[str],
    input_fingerprint: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[
        beam.Pipeline] = None,
) -> None:
  """Checks the IDX files in `input_base` and writes them as gzipped tf.Examples.

  `input_fingerprint` is not read here: it is in the signature so that TFX's
  cache key changes when the files do.
  """
  del input_fingerprint
  pairs = check_data_dir(input_base)
  with beam_pipeline as pipeline:
    write_examples(pipeline, pairs, examples.uri)
  finish_examples(pairs, examples.uri)
  examples.split_names = json.dumps(list(pairs))
  examples.set_string_custom_property("file_format", _FILE_FORMAT)
  examples.set_string_custom_property("payload_format", _PAYLOAD_FORMAT)
  examples.set_json_value_custom_property(
      "idx_files", {split: {"images": p.images_path, "labels": p.labels_path,
                            "count": p.count,
                            "images_file_sha256": p.images_file_sha256,
                            "labels_file_sha256": p.labels_file_sha256,
                            "images_content_sha256": p.images_sha256,
                            "labels_content_sha256": p.labels_sha256,
                            "label_counts": list(p.label_counts)}
                    for split, p in pairs.items()})
