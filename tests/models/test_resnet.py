"""Tests of the ResNet encoders: feature shapes/strides, parameter counts, configs."""

import dataclasses

import numpy as np
import pytest

import keras

from taskology_tf.models.resnet import ENCODER_PRESETS, FEATURE_STRIDES, EncoderConfig, build_encoder, resnet_encoder


def _num_trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize(
    "preset, expected",
    [
        # torchvision ResNets without the final fc layer (weights + BN gamma/beta).
        ("resnet18", 11_176_512),
        ("resnet34", 21_284_672),
        ("resnet50", 23_508_032),
    ],
)
def test_paper_encoders_match_standard_parameter_counts(preset, expected):
    model = build_encoder(preset)
    assert abs(_num_trainable(model) - expected) <= 0.02 * expected
    # Built the torchvision way, the count is in fact exact.
    assert _num_trainable(model) == expected


@pytest.mark.parametrize("preset", ["tiny", "small", "resnet18", "resnet50"])
def test_feature_shapes_and_strides(preset):
    config = ENCODER_PRESETS[preset]
    model = build_encoder(preset, name=f"enc_{preset}")
    height, width = 64, 96
    if preset == "resnet50":  # keep the big one cheap: batch 1, one 32x32 image
        height, width = 32, 32
    batch = 1 if preset.startswith("resnet") else 2
    features = model(np.random.default_rng(0).uniform(size=(batch, height, width, 3)).astype("float32"))
    assert len(features) == 5
    for feature, stride, channels in zip(features, FEATURE_STRIDES, config.feature_channels):
        assert tuple(feature.shape) == (batch, height // stride, width // stride, channels)
        assert np.all(np.isfinite(np.asarray(feature)))


def test_feature_channels_of_presets():
    assert ENCODER_PRESETS["resnet18"].feature_channels == (64, 64, 128, 256, 512)
    assert ENCODER_PRESETS["resnet50"].feature_channels == (64, 256, 512, 1024, 2048)
    assert ENCODER_PRESETS["tiny"].feature_channels == (8, 8, 16, 32, 64)
    assert ENCODER_PRESETS["small"].feature_channels == (16, 16, 32, 64, 128)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norm_choices(norm):
    config = dataclasses.replace(ENCODER_PRESETS["tiny"], norm=norm)
    model = build_encoder(config, 32, 32, name=f"enc_{norm}")
    layer_types = {type(layer).__name__ for layer in model.layers}
    assert ("BatchNormalization" in layer_types) == (norm == "batch")
    assert ("GroupNormalization" in layer_types) == (norm == "group")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.use_bias == (norm == "none") for c in convs)
    features = model(np.ones((1, 32, 32, 3), "float32"))
    assert tuple(features[-1].shape) == (1, 1, 1, 64)


def test_encoder_on_symbolic_tensor_with_dynamic_size():
    x = keras.Input(shape=(None, None, 3))
    features = resnet_encoder(x, "tiny", name="dyn")
    assert [f.shape[-1] for f in features] == [8, 8, 16, 32, 64]
    model = keras.Model(x, features)
    out = model(np.zeros((3, 64, 32, 3), "float32"))
    assert tuple(out[0].shape) == (3, 32, 16, 8)
    assert tuple(out[4].shape) == (3, 2, 1, 64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(block="wide"), "block"),
        (dict(norm="layer"), "norm"),
        (dict(blocks=(1, 1, 1)), "4 stages"),
        (dict(widths=(8, 0, 8, 8)), "positive"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="resnet18"):
        build_encoder("resnet101")
