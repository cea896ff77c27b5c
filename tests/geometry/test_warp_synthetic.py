"""Warping a synthetic-world frame by its true depth and ego-motion reproduces the next frame."""

import numpy as np
import pytest

from taskology_tf.data.example import CLASS_NAMES
from taskology_tf.data.synthetic.dataset import render_example
from taskology_tf.geometry import inverse_warp

MOVABLE = [CLASS_NAMES.index("car"), CLASS_NAMES.index("pedestrian")]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_true_depth_and_pose_reproduce_the_next_frame(index):
    ex = render_example(index, style="sim", height=96, width=320, with_next=True)
    batch = lambda x: np.asarray(x, np.float32)[None]
    warped, valid = inverse_warp(batch(ex["image_next"]), batch(ex["depth"]), batch(ex["intrinsics"]), batch(ex["ego_motion"]))
    warped, valid = np.asarray(warped)[0], np.asarray(valid)[0, ..., 0] > 0
    static = (ex["depth"][..., 0] > 0) & ~np.isin(ex["segmentation"][..., 0], MOVABLE)
    check = static & valid
    assert check.mean() > 0.3  # most of the picture is static, visible in both frames
    err = np.abs(warped - ex["image"].astype(np.float32)).max(axis=-1)
    # Pixels that disagree are occlusions / disocclusions and texture aliasing at a few edges.
    assert np.mean(err[check] < 12.0) > 0.9
    assert np.median(err[check]) < 4.0
    # The identity (no motion) is much worse: the test does measure the motion.
    no_motion = np.abs(ex["image_next"].astype(np.float32) - ex["image"].astype(np.float32)).max(axis=-1)
    assert np.mean(no_motion[check] < 12.0) < np.mean(err[check] < 12.0) - 0.1


def _moving_pixels(ex, key="object_motion"):
    return np.linalg.norm(ex[key], axis=-1) > 0.05


@pytest.mark.parametrize("index", [1, 3, 5])
def test_true_object_motion_reproduces_moving_objects_in_both_directions(index):
    # Eq. (2) with the true per-pixel object motion: moving cars and pedestrians land where they are in the
    # other frame; the camera motion alone misplaces them.
    ex = render_example(index, style="sim", height=96, width=320, with_next=True, next_labels=True)
    batch = lambda x: np.asarray(x, np.float32)[None]
    backward = np.linalg.inv(ex["ego_motion"])
    cases = (("image", "image_next", "depth", ex["ego_motion"], "object_motion"),
             ("image_next", "image", "depth_next", backward, "object_motion_backward"))
    for target, source, depth, transform, field in cases:
        moving = _moving_pixels(ex, field) & (ex[depth][..., 0] > 0)
        if moving.sum() < 100:  # a few edge pixels of a distant pedestrian say little
            continue
        args = (batch(ex[source]), batch(ex[depth]), batch(ex["intrinsics"]), batch(transform))
        with_field, valid = inverse_warp(*args, translation_field=batch(ex[field]))
        without, _ = inverse_warp(*args)
        check = moving & (np.asarray(valid)[0, ..., 0] > 0)
        err = np.abs(np.asarray(with_field)[0] - ex[target].astype(np.float32)).max(axis=-1)[check]
        err_static = np.abs(np.asarray(without)[0] - ex[target].astype(np.float32)).max(axis=-1)[check]
        assert np.median(err) < 6.0, (target, np.median(err))
        assert np.median(err) < 0.5 * np.median(err_static), (target, np.median(err), np.median(err_static))
        return
    pytest.skip(f"example {index} has no moving object in view")


def test_object_motion_is_zero_on_static_surfaces_and_next_labels_match_the_next_frame():
    ex = render_example(2, style="sim", height=64, width=128, with_next=True, next_labels=True)
    nxt = render_example(2, style="sim", height=64, width=128, with_next=True)
    static = ex["segmentation"][..., 0] < CLASS_NAMES.index("car")
    assert np.all(ex["object_motion"][static] == 0.0)
    assert ex["depth_next"].shape == (64, 128, 1) and ex["segmentation_next"].dtype == np.int32
    assert np.array_equal(ex["image_next"], nxt["image_next"])  # the extra labels do not change the frames
    with pytest.raises(ValueError, match="with_next"):
        render_example(0, next_labels=True)
