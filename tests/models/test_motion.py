"""Tests for taskology_tf.models.motion: shapes, both directions, learned scales, refinement upsampling."""

import numpy as np
import pytest
import keras
from keras import ops

from taskology_tf.models.motion import (
    IntrinsicsFromBottleneck,
    LearnedScale,
    ResizeLike,
    build_motion_model,
    get_motion_widths,
    motion_network,
)


def _pair(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8),
        "image_next": rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize("height,width", [(64, 128), (40, 52)])
def test_outputs_and_shapes(height, width):
    model = build_motion_model(preset="tiny", object_motion=True, learn_intrinsics=True)
    out = {k: ops.convert_to_numpy(v) for k, v in model(_pair(2, height, width)).items()}
    assert set(out) == {
        "rotation", "translation", "rotation_backward", "translation_backward",
        "residual_translation", "residual_translation_backward", "intrinsics",
    }
    for key in ("rotation", "translation", "rotation_backward", "translation_backward"):
        assert out[key].shape == (2, 3) and out[key].dtype == np.float32
    assert out["residual_translation"].shape == (2, height, width, 3)
    k = out["intrinsics"]
    assert k.shape == (2, 3, 3)
    np.testing.assert_allclose(k[:, 2], [[0, 0, 1]] * 2)
    assert np.all(k[:, 0, 0] > 0) and np.all(k[:, 1, 1] > 0)


def test_untrained_motion_is_small_and_directions_share_weights():
    model = build_motion_model(preset="tiny")
    pair = _pair(2, 64, 128, seed=1)
    out = model(pair)
    # Learned scales start at 0.01: the untrained network predicts almost no motion.
    assert float(ops.max(ops.abs(out["translation"]))) < 0.5
    swapped = model({"image": pair["image_next"], "image_next": pair["image"]})
    np.testing.assert_allclose(ops.convert_to_numpy(swapped["translation"]), ops.convert_to_numpy(out["translation_backward"]), atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(swapped["rotation_backward"]), ops.convert_to_numpy(out["rotation"]), atol=1e-5)


def test_paper_size_parameter_count():
    # Seven stride-2 convs 16..1024, bottleneck motion, residual field refined through every level.
    net = motion_network(get_motion_widths("paper"), object_motion=False)
    plain = net.count_params()
    assert 6.2e6 < plain < 6.4e6, plain  # 6,298,962
    full = motion_network(get_motion_widths("paper"), object_motion=True, learn_intrinsics=True).count_params()
    assert 40e6 < full < 50e6, full


def test_learned_scale_is_kept_above_its_minimum():
    layer = LearnedScale(initial=0.01, minimum=0.001)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), 0.01, rtol=1e-6)
    layer.scale.assign(-5.0)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), 0.001, rtol=1e-6)
    assert float(ops.convert_to_numpy(layer.scale.constraint(layer.scale))) == pytest.approx(0.001)
    clone = LearnedScale.from_config(layer.get_config())
    assert clone.initial == 0.01 and clone.minimum == 0.001


def test_bilinear_2x_matches_half_pixel_resize():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
    ours = ops.convert_to_numpy(ResizeLike()(x, np.zeros((2, 6, 10, 1), np.float32)))
    ref = ops.convert_to_numpy(ops.image.resize(x, (6, 10), interpolation="bilinear", antialias=False))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_resize_like_broadcasts_and_crops():
    layer = ResizeLike()
    seed = np.arange(6, dtype=np.float32).reshape(2, 1, 1, 3)
    ref = np.zeros((2, 7, 5, 8), np.float32)
    out = ops.convert_to_numpy(layer(seed, ref))
    assert out.shape == (2, 7, 5, 3)
    np.testing.assert_allclose(out[:, 3, 2], seed[:, 0, 0])
    coarse = np.ones((2, 4, 3, 3), np.float32)  # ceil(7 / 2), ceil(5 / 2)
    assert ops.convert_to_numpy(layer(coarse, ref)).shape == (2, 7, 5, 3)


def test_intrinsics_head_centres_the_principal_point():
    raw = np.zeros((1, 1, 1, 4), np.float32)
    image = np.zeros((1, 40, 100, 6), np.float32)
    k = ops.convert_to_numpy(IntrinsicsFromBottleneck()(raw, image))[0]
    np.testing.assert_allclose([k[0, 2], k[1, 2]], [50.0, 20.0])
    np.testing.assert_allclose([k[0, 0], k[1, 1]], [np.log(2.0) * 100, np.log(2.0) * 40], rtol=1e-5)


def test_unknown_preset_is_explained():
    with pytest.raises(ValueError, match="tiny"):
        get_motion_widths("huge")


def test_model_round_trips_through_keras_saving(tmp_path):
    model = build_motion_model(preset="tiny", object_motion=True)
    path = str(tmp_path / "motion.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    pair = _pair(1, 32, 64, seed=3)
    a, b = model(pair), loaded(pair)
    for key in a:
        np.testing.assert_allclose(ops.convert_to_numpy(a[key]), ops.convert_to_numpy(b[key]), atol=1e-6)


def test_frame_difference_adds_the_difference_channels_and_saves(tmp_path):
    net = motion_network(get_motion_widths("tiny"), frame_difference=True, name="m")
    assert net.get_layer("m_conv1").kernel.shape == (3, 3, 9, 8)
    frames = np.random.default_rng(4).random((1, 8, 8, 6)).astype("float32")
    diff = ops.convert_to_numpy(net.get_layer("m_difference")(frames))
    np.testing.assert_allclose(diff, frames[..., 3:] - frames[..., :3], atol=1e-7)
    model = build_motion_model(preset="tiny", frame_difference=True)
    path = str(tmp_path / "motion_diff.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    pair = _pair(1, 32, 64, seed=5)
    np.testing.assert_allclose(ops.convert_to_numpy(model(pair)["translation"]),
                               ops.convert_to_numpy(loaded(pair)["translation"]), atol=1e-6)
