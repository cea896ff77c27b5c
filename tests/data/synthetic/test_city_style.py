"""Tests of the "city" style: the driving video of the depth and motion experiments."""

import dataclasses

import numpy as np
import pytest

from taskology_tf.data.example import CLASS_NAMES
from taskology_tf.data.synthetic import dataset as dataset_lib
from taskology_tf.data.synthetic import render as render_lib
from taskology_tf.data.synthetic import scene as scene_lib
from taskology_tf.data.synthetic import style as style_lib

H, W = 64, 128  # the resolution of the Table 1 and staleness experiments


def _near_road(frame):
    """Grey values [n] of road pixels closer than 8 m."""
    road = (frame["segmentation"][..., 0] == CLASS_NAMES.index("road")) & (frame["depth"][..., 0] > 0) \
        & (frame["depth"][..., 0] < 8.0)
    return frame["image"][road].astype(np.float64).mean(axis=-1)


def test_city_is_a_registered_style_on_the_same_geometry():
    assert "city" in style_lib.STYLES and "city" in dataset_lib.STYLES
    scene = scene_lib.sample_scene(np.random.default_rng(0))
    city, sim = (render_lib.render(scene, 0.0, 32, 64, s) for s in ("city", "sim"))
    for key in ("depth", "segmentation", "normals"):
        np.testing.assert_array_equal(city[key], sim[key])


def test_ground_patches_give_the_near_road_texture_at_low_resolution():
    city = style_lib.get_style("city")
    flat = dataclasses.replace(city, ground_patches=0.0)
    spread = {"city": [], "flat": []}
    for seed in range(4):
        scene = scene_lib.sample_scene(np.random.default_rng(seed))
        for name, style in (("city", city), ("flat", flat)):
            grey = _near_road(render_lib.render(scene, 0.0, H, W, style))
            assert grey.size > 200
            median = np.median(grey)
            spread[name].append(np.median(np.abs(grey - median)) / median)  # robust to the lane markings
    # Without the patches the near road is nearly uniform at 64x128 (the fine noise is filtered away).
    assert np.mean(spread["city"]) > 2.0 * np.mean(spread["flat"]), spread


def test_ground_patches_must_not_be_negative():
    with pytest.raises(ValueError, match="ground_patches"):
        dataclasses.replace(style_lib.get_style("city"), ground_patches=-0.1)
