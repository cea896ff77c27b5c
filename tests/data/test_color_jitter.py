"""Tests of colour jitter: the pure image transform, stateless draws, the dataset wrapper and its errors."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.data import color_jitter as cj

IDENTITY = {"channel_order": tf.constant(0), "hue": tf.constant(0.0), "saturation": tf.constant(1.0),
            "brightness": tf.constant(0.0), "contrast": tf.constant(1.0), "grayscale": tf.constant(False)}


def _image(seed=0, shape=(8, 12, 3)):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8))


def test_identity_draw_leaves_the_image_and_each_part_acts_alone():
    image = _image()
    np.testing.assert_array_equal(cj.apply_jitter(image, IDENTITY).numpy(), image.numpy())
    swapped = cj.apply_jitter(image, {**IDENTITY, "channel_order": tf.constant(5)})  # (2, 1, 0)
    np.testing.assert_array_equal(swapped.numpy(), image.numpy()[..., ::-1])
    grey = cj.apply_jitter(image, {**IDENTITY, "grayscale": tf.constant(True)}).numpy().astype(int)
    assert np.all(np.abs(grey[..., 0] - grey[..., 1]) <= 1) and np.all(np.abs(grey[..., 1] - grey[..., 2]) <= 1)
    brighter = cj.apply_jitter(image, {**IDENTITY, "brightness": tf.constant(0.1)}).numpy().astype(int)
    assert np.all(brighter >= image.numpy()) and brighter.mean() > image.numpy().mean() + 20
    # a half turn of hue maps pure red to cyan
    red = tf.constant(np.tile(np.array([200, 0, 0], np.uint8), (2, 2, 1)))
    cyan = cj.apply_jitter(red, {**IDENTITY, "hue": tf.constant(0.5)}).numpy()
    assert cyan[0, 0, 0] < 5 and cyan[0, 0, 1] > 190 and cyan[0, 0, 2] > 190


def test_draws_are_stateless_and_in_range():
    settings = dict(hue=0.3, saturation=(0.6, 1.4), brightness=0.1, contrast=(0.8, 1.2), grayscale=0.5)
    draws = [cj.draw_jitter(tf.constant([7, i], tf.int64), **settings) for i in range(200)]
    again = cj.draw_jitter(tf.constant([7, 3], tf.int64), **settings)
    assert all(float(again[k]) == float(draws[3][k]) for k in again)
    hue = np.array([float(d["hue"]) for d in draws])
    assert hue.min() >= -0.3 and hue.max() <= 0.3 and hue.std() > 0.1
    assert set(int(d["channel_order"]) for d in draws) == set(range(6))
    assert 0.35 < np.mean([bool(d["grayscale"]) for d in draws]) < 0.65
    sat = np.array([float(d["saturation"]) for d in draws])
    assert sat.min() >= 0.6 and sat.max() <= 1.4
    fixed = cj.draw_jitter(tf.constant([7, 0], tf.int64), channel_shuffle=False)
    assert int(fixed["channel_order"]) == 0


def _pairs(n=4):
    images = np.stack([_image(i).numpy() for i in range(n)])
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "image_next": images, "segmentation": np.arange(n, dtype=np.int32)})


def test_dataset_jitters_both_frames_alike_keeps_labels_and_repeats_with_new_draws():
    out = list(cj.color_jitter(_pairs(4), seed=1, grayscale=0.0).take(8).as_numpy_iterator())
    original = list(_pairs(4).as_numpy_iterator())
    for i, example in enumerate(out):
        np.testing.assert_array_equal(example["image"], example["image_next"])  # one draw per example
        assert example["segmentation"] == original[i % 4]["segmentation"]  # labels untouched, order kept
        assert example["image"].dtype == np.uint8 and example["image"].shape == (8, 12, 3)
    assert not np.array_equal(out[0]["image"], original[0]["image"])
    assert not np.array_equal(out[0]["image"], out[4]["image"])  # the second pass draws anew
    # the same seed gives the same stream (a resumed run skipping what it drew sees the same examples)
    again = list(cj.color_jitter(_pairs(4), seed=1, grayscale=0.0).skip(5).take(3).as_numpy_iterator())
    for a, b in zip(again, out[5:]):
        np.testing.assert_array_equal(a["image"], b["image"])


def test_copy_suffix_adds_the_jittered_copies_and_keeps_the_originals():
    replaced = list(cj.color_jitter(_pairs(4), seed=1).take(4).as_numpy_iterator())
    copied = list(cj.color_jitter(_pairs(4), seed=1, copy_suffix="_jittered").take(4).as_numpy_iterator())
    original = list(_pairs(4).as_numpy_iterator())
    for r, c, o in zip(replaced, copied, original):
        assert sorted(c) == ["image", "image_jittered", "image_next", "image_next_jittered", "segmentation"]
        np.testing.assert_array_equal(c["image"], o["image"])
        np.testing.assert_array_equal(c["image_jittered"], r["image"])  # the same draw as in place
        np.testing.assert_array_equal(c["image_next_jittered"], r["image_next"])
    with pytest.raises(ValueError, match="copy_suffix"):
        cj.color_jitter(_pairs(), copy_suffix="")


def test_clear_errors():
    with pytest.raises(ValueError, match="none of the keys"):
        cj.color_jitter(_pairs().map(lambda e: {"segmentation": e["segmentation"]}))
    with pytest.raises(ValueError, match="hue"):
        cj.color_jitter(_pairs(), hue=0.7)
    with pytest.raises(ValueError, match="saturation"):
        cj.color_jitter(_pairs(), saturation=(1.5, 0.5))
    with pytest.raises(ValueError, match="seed"):
        cj.color_jitter(_pairs(), seed=-1)
    floats = tf.data.Dataset.from_tensor_slices({"image": np.zeros((2, 4, 4, 3), np.float32)})
    with pytest.raises(ValueError, match="uint8"):
        cj.color_jitter(floats)


def test_gin_binding_wraps_a_source():
    import gin

    from taskology_tf.data import sources  # noqa: F401  (registers color_jitter and synthetic)

    with gin.unlock_config():
        gin.parse_config([
            "t/color_jitter.dataset = @t/synthetic()",
            "t/synthetic.num_examples = 2", "t/synthetic.height = 16", "t/synthetic.width = 32",
            "t/synthetic.keys = ['image', 'segmentation']",
        ])
    try:
        with gin.config_scope("t"):
            data = gin.get_configurable("color_jitter")()
        example = next(iter(data))
        assert example["image"].dtype == tf.uint8 and example["image"].shape == (16, 32, 3)
        assert "segmentation" in example
    finally:
        gin.clear_config()
