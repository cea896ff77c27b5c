"""A tiny image model exported as versioned SavedModels, and a server/client pair on 127.0.0.1."""

import contextlib

import keras
import numpy as np
import pytest

from taskology_tf.serving.client import PredictClient
from taskology_tf.serving.export import export_model
from taskology_tf.serving.server import ModelServer


def tiny_model(bias: float = 0.0):
    """{"image": uint8 [B, H, W, 3]} -> {"depth": float32 [B, H, W, 1], "mean": float32 [B, 1]}; depth = x.w + bias."""
    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(image)
    depth = keras.layers.Conv2D(
        1,
        1,
        kernel_initializer=keras.initializers.Constant([[[[0.5], [-1.0], [2.0]]]]),
        bias_initializer=keras.initializers.Constant(bias),
        name="depth_conv",
    )(x)
    mean = keras.layers.GlobalAveragePooling2D(name="mean")(depth)
    return keras.Model({"image": image}, {"depth": depth, "mean": mean}, name="tiny")


def set_bias(model, bias: float) -> None:
    model.get_layer("depth_conv").bias.assign(np.full((1,), bias, np.float32))


def images(batch=2, h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def reference(image, bias: float = 0.0):
    """The tiny model's outputs computed in numpy."""
    depth = (image.astype(np.float32) / 255.0) @ np.array([[0.5], [-1.0], [2.0]], np.float32) + bias
    return {"depth": depth, "mean": depth.mean(axis=(1, 2))}


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def base_v1(tmp_path_factory, model):
    """A base folder holding version 1 (bias 0) with a warm-up request."""
    base = tmp_path_factory.mktemp("served") / "tiny"
    export_model(model, str(base), 1, warmup_inputs={"image": images(1)})
    return str(base)


@contextlib.contextmanager
def serving(models, client_model=None, **kwargs):
    """A started ModelServer (polling fast) and, if ``client_model`` is given, a PredictClient for it."""
    kwargs.setdefault("poll_seconds", 0.05)
    server = ModelServer(models, **kwargs)
    port = server.start()
    client = None
    if client_model is not None:
        client = PredictClient(f"127.0.0.1:{port}", client_model, timeout=10.0, retries=1, backoff=0.05, tls=kwargs.get("tls"))
    try:
        yield server, client
    finally:
        if client is not None:
            client.close()
        server.stop(grace=0.5)


@pytest.fixture(scope="session")
def shared_server(base_v1):
    """One server on version 1 for the read-only tests."""
    with serving({"tiny": base_v1}, "tiny") as pair:
        yield pair


@pytest.fixture(scope="session")
def tiny():
    """The helpers above, for test modules (importlib import mode: test files cannot import conftest)."""

    class Helpers:
        pass

    ns = Helpers()
    ns.tiny_model = tiny_model
    ns.set_bias = set_bias
    ns.images = images
    ns.reference = reference
    ns.serving = serving
    return ns
