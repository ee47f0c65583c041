"""mnist-tfx predict: pictures of any size/colour, sent to REST, gRPC or the SavedModel."""

import numpy as np
import pytest
from PIL import Image

from components import pusher
from components.models import Hyperparameters, build_model
from components.trainer import export
from mnist_tfx import cli
from serving import client, grpc_server
from serving.model_store import ModelStore
from serving.server import RestServer
from tests import tiny_mnist


def _digit():
  return tiny_mnist.make_images(np.array([4]), seed=2)[0]


def _save(tmp_path, name, array, mode="L"):
  path = str(tmp_path / name)
  Image.fromarray(array).convert(mode).save(path)
  return path


def test_dark_on_light_colour_jpeg_becomes_mnist_like(tmp_path):
  digit = _digit()
  big = Image.fromarray(255 - digit).resize((210, 210), Image.NEAREST).convert("RGB")
  canvas = Image.new("RGB", (300, 260), (245, 240, 230))
  canvas.paste(big, (40, 20))
  path = str(tmp_path / "photo.jpg")
  canvas.save(path, quality=92)
  out = client.load_digit(path)
  assert out.shape == (28, 28) and out.dtype == np.uint8
  assert out.max() >= 200 and np.median(out) == 0  # light ink on dark
  ys, xs = np.indices(out.shape)
  assert abs((ys * out).sum() / out.sum() - 13.5) < 1.5  # centred by mass
  assert abs((xs * out).sum() / out.sum() - 13.5) < 1.5


def test_light_on_dark_and_transparent_png(tmp_path):
  digit = _digit()
  a = client.load_digit(_save(tmp_path, "a.png", digit))
  rgba = np.zeros((28, 28, 4), np.uint8)
  rgba[..., 3] = 255 - digit  # black ink drawn on transparency
  b = client.load_digit(_save(tmp_path, "b.png", rgba, "RGBA"))
  assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8


def test_blank_and_unreadable_files_are_refused(tmp_path):
  with pytest.raises(ValueError, match="blank"):
    client.load_digit(_save(tmp_path, "blank.png", np.full((40, 40), 255, np.uint8)))
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  with pytest.raises(ValueError, match="not a readable image"):
    client.load_digit(str(bad))


def test_local_rest_and_grpc_give_the_same_answer(tft_output, tmp_path, capsys):
  model_dir = str(tmp_path / "model")
  export.export(build_model(Hyperparameters(), 10), tft_output, model_dir)
  base = str(tmp_path / "mnist")
  pusher.push(model_dir, base, {})
  store = ModelStore("mnist", base).start()
  rest = RestServer(store, port=0).start()
  grpc = grpc_server.start(store, "127.0.0.1", 0)
  try:
    files = [_save(tmp_path, f"{i}.png", img) for i, img in
             enumerate(tiny_mnist.make_images(np.arange(3), seed=6))]
    local = client.predict_files(files, model_dir=base)
    via_rest = client.predict_files(files, rest=f"http://127.0.0.1:{rest.port}")
    via_grpc = client.predict_files(files, grpc_target=f"127.0.0.1:{grpc.bound_port}")
    for a, b, c in zip(local, via_rest, via_grpc):
      assert a["digit"] == b["digit"] == c["digit"]
      np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-5)
      np.testing.assert_allclose(a["probabilities"], c["probabilities"], rtol=1e-5)
    assert cli.main(["predict", *files, "--model-dir", base]) == 0
    assert capsys.readouterr().out.count(".png: ") == 3
  finally:
    grpc.stop(0)
    rest.stop()
    store.stop()


def test_no_server_is_a_clear_error(tmp_path, capsys):
  path = _save(tmp_path, "d.png", _digit())
  assert cli.main(["predict", path, "--rest", "http://127.0.0.1:9"]) == 1
  assert "is `mnist-tfx serve` running" in capsys.readouterr().err
