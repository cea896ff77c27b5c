import numpy as np
import pytest
import keras

from taskology_tf.models.normalization import RandomizedLayerNormalization
from taskology_tf.models.resnet import EncoderConfig, norm_layer
from taskology_tf.models.unet import build_dense_model, conv_head


def _input(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, size=(2, 6, 5, 4)) * np.arange(1, 5)).astype("float32")


def test_inference_normalises_each_example_and_channel():
    x = _input()
    y = np.asarray(RandomizedLayerNormalization(epsilon=1e-6)(x, training=False))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-3)


def test_inference_is_independent_of_the_rest_of_the_batch():
    layer = RandomizedLayerNormalization()
    x = _input()
    alone = np.asarray(layer(x[:1], training=False))
    together = np.asarray(layer(x, training=False))[:1]
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_training_perturbs_statistics_with_mean_one_noise():
    layer = RandomizedLayerNormalization(stddev=0.5, seed=3)
    x = np.tile(_input()[:1], (256, 1, 1, 1))
    clean = np.asarray(layer(x, training=False))
    noisy = np.asarray(layer(x, training=True))
    assert not np.allclose(noisy, clean, atol=1e-3)
    # The noise is per example: identical inputs give different outputs, whose average is close to clean.
    assert np.std(noisy[:, 0, 0, 0]) > 0.05
    assert abs(np.median(noisy[:, 2, 2, :] - clean[:, 2, 2, :])) < 0.2


def test_zero_stddev_training_equals_inference():
    layer = RandomizedLayerNormalization(stddev=0.0)
    x = _input()
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), np.asarray(layer(x, training=False)), atol=1e-6)


def test_errors_and_config():
    with pytest.raises(ValueError, match="stddev"):
        RandomizedLayerNormalization(stddev=-1)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        RandomizedLayerNormalization()(np.zeros((2, 3), "float32"))
    layer = RandomizedLayerNormalization(stddev=0.25, epsilon=1e-4, seed=1)
    clone = RandomizedLayerNormalization.from_config(layer.get_config())
    assert (clone.stddev, clone.epsilon, clone.seed) == (0.25, 1e-4, 1)


def test_encoder_and_dense_model_accept_randomized_layer_norm():
    assert isinstance(norm_layer("randomized_layer", 8, "n"), RandomizedLayerNormalization)
    EncoderConfig(norm="randomized_layer")
    model = build_dense_model("depth", {"depth": conv_head(1, "softplus", name="depth")}, preset="tiny",
                              height=32, width=32, norm="randomized_layer")
    kinds = {type(l).__name__ for l in model.layers}
    assert "RandomizedLayerNormalization" in kinds and "BatchNormalization" not in kinds
    out = model({"image": np.zeros((1, 32, 32, 3), "uint8")}, training=True)
    assert out["depth"].shape == (1, 32, 32, 1)
    assert np.all(np.isfinite(np.asarray(out["depth"])))
