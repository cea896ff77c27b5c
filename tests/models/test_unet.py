"""Tests of the U-Net decoder, the dense-model builder, its heads and custom layers."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from taskology_tf.models.resnet import build_encoder
from taskology_tf.models.unet import (
    DECODER_PRESETS,
    ImageToFloat,
    L2Normalize,
    build_dense_model,
    check_image_size,
    conv_head,
    normals_head,
    unet_decoder,
)


def _heads():
    return {
        "depth": conv_head(1, "softplus", name="depth"),
        "normals": normals_head(name="normals"),
        "logits": conv_head(5, name="logits", kernel_size=1),
    }


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_model():
    # Seeded: with some random initialisations a few border pixels of the untrained normals head see only dead ReLU
    # features, get an all-zero vector and fail the unit-length check (seen once in a clean-clone CI run).
    keras.utils.set_random_seed(0)
    return build_dense_model("net", _heads(), preset="tiny")


@pytest.mark.parametrize(
    "preset, batch, height, width",
    [("tiny", 2, 64, 64), ("tiny", 1, 32, 96), ("small", 2, 64, 64), ("resnet18", 1, 64, 64), ("resnet50", 1, 32, 32)],
)
def test_output_shapes_per_preset(preset, batch, height, width):
    model = build_dense_model(f"m_{preset}", {"depth": conv_head(1, "softplus", name="depth")}, preset=preset)
    out = model({"image": _images(batch, height, width)})
    assert set(out) == {"depth"}
    assert tuple(out["depth"].shape) == (batch, height, width, 1)
    assert out["depth"].dtype == "float32"
    assert np.all(np.asarray(out["depth"]) > 0)  # softplus


def test_dict_outputs_names_and_ranges(tiny_model):
    out = tiny_model({"image": _images(2, 64, 64)})
    assert set(out) == {"depth", "normals", "logits"}
    assert sorted(tiny_model.output_names) == ["depth", "logits", "normals"]
    assert [inp.name for inp in tiny_model.inputs] == ["image"]
    assert tiny_model.inputs[0].dtype == "uint8"
    assert tuple(out["normals"].shape) == (2, 64, 64, 3)
    assert tuple(out["logits"].shape) == (2, 64, 64, 5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out["normals"]), axis=-1), 1.0, atol=1e-5)


def test_decoder_shapes_and_widths():
    encoder = build_encoder("tiny", 64, 32, name="enc")
    features = encoder.outputs
    x = unet_decoder(features, DECODER_PRESETS["tiny"], name="dec", upsampling="bilinear")
    assert tuple(x.shape) == (None, 64, 32, DECODER_PRESETS["tiny"][-1])
    with pytest.raises(ValueError, match="5 features"):
        unet_decoder(features[1:], DECODER_PRESETS["tiny"], name="dec2")
    with pytest.raises(ValueError, match="5 widths"):
        unet_decoder(features, (8, 8), name="dec3")


def test_image_to_float_scales_uint8():
    x = np.array([0, 51, 255], np.uint8).reshape(1, 1, 3, 1)
    y = ImageToFloat()(x)
    assert y.dtype == "float32"
    np.testing.assert_allclose(np.asarray(y).ravel(), [0.0, 0.2, 1.0], atol=1e-7)


def test_model_rescales_image_inside(tiny_model):
    layer = tiny_model.get_layer("net_image_to_float")
    probe = keras.Model(tiny_model.inputs, layer.output)
    y = np.asarray(probe({"image": np.full((1, 32, 32, 3), 255, np.uint8)}))
    np.testing.assert_allclose(y, 1.0)


@pytest.mark.parametrize("size", [(60, 60), (64, 60), (33, None)])
def test_bad_static_size_raises(size):
    with pytest.raises(ValueError, match="multiple of 32"):
        build_dense_model("bad", _heads(), preset="tiny", height=size[0], width=size[1])


def test_check_image_size_message():
    check_image_size(64, None)
    check_image_size(None, None)
    with pytest.raises(ValueError, match=r"width=60.*32 or .* 64"):
        check_image_size(64, 60)


def test_no_heads_or_unknown_preset_raise():
    with pytest.raises(ValueError, match="head"):
        build_dense_model("nohead", {}, preset="tiny")
    with pytest.raises(ValueError, match="preset"):
        build_dense_model("badpreset", _heads(), preset="vgg")


def test_gradient_reaches_every_trainable_weight(tiny_model):
    images = _images(2, 32, 64)
    with tf.GradientTape() as tape:
        out = tiny_model({"image": images}, training=True)
        loss = (
            tf.reduce_mean(out["depth"])
            + tf.reduce_mean(out["normals"] * tf.constant([0.3, -0.5, 0.7]))
            + tf.reduce_mean(tf.square(out["logits"]))
        )
    weights = tiny_model.trainable_weights
    grads = tape.gradient(loss, weights)
    assert len(weights) > 50
    for w, g in zip(weights, grads):
        assert g is not None, f"no gradient for {w.path}"
        assert np.all(np.isfinite(g.numpy())), w.path
        assert np.any(g.numpy() != 0), f"zero gradient for {w.path}"


def test_dynamic_batch_and_size_in_tf_function(tiny_model):
    fn = tf.function(
        lambda image: tiny_model({"image": image}),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    for batch, height, width in [(1, 32, 32), (3, 64, 96)]:
        out = fn(tf.constant(_images(batch, height, width)))
        assert tuple(out["depth"].shape) == (batch, height, width, 1)
        assert tuple(out["normals"].shape) == (batch, height, width, 3)


def test_static_size_model():
    model = build_dense_model("fixed", {"d": conv_head(2, name="d")}, preset="tiny", height=32, width=64)
    assert tuple(model.outputs[0].shape) == (None, 32, 64, 2)
    out = model({"image": _images(3, 32, 64)})
    assert tuple(out["d"].shape) == (3, 32, 64, 2)


@pytest.mark.parametrize("norm", ["group", "none"])
def test_norm_override(norm):
    model = build_dense_model(f"n_{norm}", {"d": conv_head(1, name="d")}, preset="tiny", norm=norm)
    types = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in types
    assert ("GroupNormalization" in types) == (norm == "group")
    assert tuple(model({"image": _images(1, 32, 32)})["d"].shape) == (1, 32, 32, 1)


def test_custom_layers_config_round_trip():
    layer = L2Normalize(axis=0, epsilon=1e-4, name="l2")
    clone = L2Normalize.from_config(layer.get_config())
    assert (clone.axis, clone.epsilon, clone.name, clone.dtype_policy.name) == (0, 1e-4, "l2", "float32")
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(clone(x.T)).T, [[0.6, 0.8], [0.0, 0.0]], atol=1e-4)
    restored = ImageToFloat.from_config(ImageToFloat(name="to_float").get_config())
    assert restored.name == "to_float"


def test_model_save_and_load_keras_file(tmp_path):
    model = build_dense_model("saved", _heads(), preset="tiny")
    images = _images(1, 32, 32)
    expected = model({"image": images})
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    got = loaded({"image": images})
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=1e-5)


def test_mixed_precision_outputs_are_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        heads = dict(_heads(), raw=lambda x: keras.layers.Conv2D(2, 1, name="raw")(x))
        model = build_dense_model("mixed", heads, preset="tiny")
        assert model.get_layer("mixed_encoder_stem_conv").compute_dtype == "float16"
        assert model.get_layer("raw").compute_dtype == "float16"
        assert model.get_layer("mixed_raw_float32").compute_dtype == "float32"
        out = model({"image": _images(1, 32, 32)})
    finally:
        keras.config.set_dtype_policy(previous)
    assert {key: keras.backend.standardize_dtype(value.dtype) for key, value in out.items()} == {
        "depth": "float32", "normals": "float32", "logits": "float32", "raw": "float32"
    }
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out["normals"]), axis=-1), 1.0, atol=1e-5)


def test_export_has_named_uint8_input_and_named_outputs(tmp_path, tiny_model):
    path = str(tmp_path / "export")
    tiny_model.export(path, verbose=False)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["image"]
    assert inputs["image"].dtype == tf.uint8
    assert inputs["image"].shape.as_list() == [None, None, None, 3]
    images = _images(2, 32, 64)
    out = signature(image=tf.constant(images))
    assert set(out) == {"depth", "normals", "logits"}
    expected = tiny_model({"image": images})
    np.testing.assert_allclose(out["depth"].numpy(), np.asarray(expected["depth"]), atol=1e-5)
