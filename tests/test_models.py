"""The model registry, hyperparameters, and the builders' architectures."""

import numpy as np
import pytest

from components import features
from components.models import MODELS, Hyperparameters, build_model


@pytest.mark.parametrize("name,params", [("basic", 7_850), ("improved", 79_510),
                                         ("cnn", 94_358)])
def test_parameter_counts(name, params):
  model = build_model(Hyperparameters(model=name), steps_per_epoch=10)
  assert model.count_params() == params


def test_architectures_are_the_reference_layers_ending_in_softmax():
  basic = build_model(Hyperparameters(model="basic"), 10)
  improved = build_model(Hyperparameters(model="improved"), 10)
  assert [(l.units, l.activation.__name__) for l in basic.layers[1:]] == [
      (10, "softmax")]
  assert [(l.units, l.activation.__name__) for l in improved.layers[1:]] == [
      (100, "relu"), (10, "softmax")]
  assert basic.loss == "sparse_categorical_crossentropy"


def test_cnn_is_lenet_like_on_the_flat_transformed_inputs():
  cnn = build_model(Hyperparameters(model="cnn"), 10)
  shapes = [(l.name, tuple(l.output.shape[1:])) for l in cnn.layers[1:]]
  assert shapes == [("to_2d", (28, 28, 1)), ("conv_0", (28, 28, 16)),
                    ("pool_0", (14, 14, 16)), ("conv_1", (10, 10, 32)),
                    ("pool_1", (5, 5, 32)), ("flatten", (800,)),
                    ("hidden_0", (100,)), ("scores", (10,))]
  assert cnn.layers[-1].activation.__name__ == "softmax"
  out = cnn(np.zeros((2, features.IMAGE_SIZE), np.float32))
  np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-6)


def test_the_sigmoid_option_reproduces_the_reference_script():
  hp = Hyperparameters(model="improved", output_activation="sigmoid")
  improved = build_model(hp, 10)
  assert [(l.units, l.activation.__name__) for l in improved.layers[1:]] == [
      (100, "relu"), (10, "sigmoid")]
  assert improved.count_params() == 79_510
  assert improved.loss == "sparse_categorical_crossentropy"
  assert type(improved.optimizer).__name__ == "Adam"


def test_hidden_units_override_and_output_shape():
  model = build_model(Hyperparameters(model="basic", hidden_units=(32, 16)), 5)
  out = model(np.zeros((3, features.IMAGE_SIZE), np.float32))
  assert out.shape == (3, features.NUM_CLASSES)
  assert model.count_params() == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


def test_defaults_are_the_references_except_schedule_and_softmax():
  hp = Hyperparameters()
  assert (hp.model, hp.optimizer, hp.loss, hp.epochs, hp.batch_size) == (
      "improved", "adam", "sparse_categorical_crossentropy", 5, 32)
  assert hp.lr_schedule == "cosine"
  assert hp.layers == MODELS["improved"].hidden_units


def test_round_trip_through_dict():
  hp = Hyperparameters(model="basic", hidden_units=(64,), epochs=2)
  assert Hyperparameters.from_dict(hp.to_dict()) == hp
  assert Hyperparameters.from_dict(Hyperparameters().to_dict()).hidden_units is None


@pytest.mark.parametrize("bad,match", [
    ({"model": "huge"}, "unknown model 'huge'"),
    ({"optimizer": "adagrad"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"learning_rate": 0}, "learning_rate must be positive"),
    ({"hidden_units": (10, 0)}, "hidden_units must be positive"),
])
def test_bad_hyperparameters(bad, match):
  with pytest.raises(ValueError, match=match):
    Hyperparameters(**bad)


def test_unknown_key_is_an_error():
  with pytest.raises(ValueError, match="unknown hyperparameters: epoch"):
    Hyperparameters.from_dict({"epoch": 3})


def test_resolved_hyperparameters_name_the_layers_the_model_has():
  from components.models import Hyperparameters  # pylint: disable=g-import-not-at-top
  assert Hyperparameters().to_dict()["hidden_units"] is None  # the architecture's
  assert Hyperparameters().resolved()["hidden_units"] == [100]
  assert Hyperparameters(model="basic").resolved()["hidden_units"] == []
  cnn = Hyperparameters(model="cnn").resolved()
  assert cnn["hidden_units"] == [100] and cnn["conv_filters"] == [16, 32]
  assert Hyperparameters(hidden_units=(256, 128)).resolved()["hidden_units"] == [256, 128]
