"""ServingInfraValidator: the candidate on `mnist-tfx serve` before the push."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components import features, infra_validator
from serving import warmup
from tests import tiny_mnist
from tests.serve_process import push_tiny_model


@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory):
  return _examples(tmp_path_factory.mktemp("examples"))


def _examples(root, brightness=1):
  """An Examples artifact's layout: gzipped tf.Examples under Split-train."""
  split = root / f"Split-{features.TRAIN_SPLIT}"
  split.mkdir()
  labels = np.arange(8) % 10
  images = tiny_mnist.make_images(labels).reshape(8, -1).astype(np.int64) * brightness
  with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"),
                            options="GZIP") as writer:
    for image, label in zip(images, labels):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image)),
          features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
              value=[int(label)]))})).SerializeToString())
  return str(root)


@pytest.fixture(scope="module")
def candidate(tft_output, tmp_path_factory):
  base, version = push_tiny_model(tft_output, tmp_path_factory.mktemp("candidate"))
  return os.path.join(base, str(version))


def test_a_sound_candidate_is_served_and_answers_as_itself(candidate, examples_uri,
                                                           tmp_path):
  found = infra_validator.validate(candidate, examples_uri, str(tmp_path), "mnist",
                                   infra_validator.TIMEOUT_SECONDS)
  assert found["requests"] == 3 * warmup.EXAMPLES
  assert found["max_difference"] <= infra_validator.TOLERANCE
  stamped = os.path.join(str(tmp_path), infra_validator.STAMPED_MODEL)
  assert len(warmup.read(stamped)) == 3 * warmup.EXAMPLES
  assert not os.path.exists(os.path.join(str(tmp_path), "serving"))  # cleaned up


def test_a_server_that_never_becomes_ready_times_out(candidate, examples_uri, tmp_path):
  with pytest.raises(infra_validator.NotValid, match="did not listen within 1 s"):
    infra_validator.validate(candidate, examples_uri, str(tmp_path), "mnist", 1.0)


def test_a_server_that_exits_is_said_with_its_last_line(candidate, examples_uri,
                                                        tmp_path, monkeypatch):
  monkeypatch.setenv("MNIST_TFX_SPEEDUPS", "sometimes")  # serve refuses: exit 2
  with pytest.raises(infra_validator.NotValid,
                     match=r"exited before it listened \(code 2\): mnist-tfx: "):
    infra_validator.validate(candidate, examples_uri, str(tmp_path), "mnist", 60)


class _Noisy(tf.Module):
  """Loads and runs in Python, but never answers the same twice."""

  def _out(self, n):
    p = tf.nn.softmax(tf.random.uniform([n, 10]))
    return {features.PROBABILITIES_KEY: p,
            features.CLASSES_KEY: tf.argmax(p, axis=1)}

  @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
  def floats(self, images):
    return self._out(tf.shape(images)[0])

  @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.uint8, name="images")])
  def uint8(self, images):
    return self._out(tf.shape(images)[0])

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def examples(self, examples):
    return self._out(tf.shape(examples)[0])


def test_a_candidate_that_answers_otherwise_on_the_server_is_refused(examples_uri,
                                                                     tmp_path):
  model = _Noisy()
  path = str(tmp_path / "noisy")
  tf.saved_model.save(model, path, signatures={
      features.SERVING_SIGNATURE: model.floats, features.UINT8_SIGNATURE: model.uint8,
      features.EXAMPLES_SIGNATURE: model.examples})
  with pytest.raises(infra_validator.NotValid, match="differs from the SavedModel's"):
    infra_validator.validate(path, examples_uri, str(tmp_path / "work"), "mnist", 120)


def test_a_candidate_the_server_refuses_to_load_is_refused(examples_uri, tmp_path):
  """Runs in Python on pixels past 255 (it has no check), but the server's
  input contract refuses them, so its warm-up fails the load."""
  model = _Noisy()
  path = str(tmp_path / "unchecked")
  tf.saved_model.save(model, path, signatures={
      features.SERVING_SIGNATURE: model.floats, features.UINT8_SIGNATURE: model.uint8,
      features.EXAMPLES_SIGNATURE: model.examples})
  bright = tmp_path / "bright"
  bright.mkdir()
  with pytest.raises(infra_validator.NotValid,
                     match=r"could not load the candidate: .*0-255"):
    infra_validator.validate(path, _examples(bright, brightness=5),
                             str(tmp_path / "work"), "mnist", 120)


def test_an_unblessed_candidate_is_not_served(baseline_run_dir):
  with open(os.path.join(baseline_run_dir, "summary.json")) as f:
    weak = json.load(f)
  assert not weak["blessed"] and weak["infra_blessed"] is False
  assert weak["infra_reason"] == "not blessed by the Evaluator: not validated"
  assert weak["pushed_model_path"] is None
