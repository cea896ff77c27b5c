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
