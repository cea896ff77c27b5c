"""Tests for the depth <-> motion photometric relation (Eq. 2-3, both directions)."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.core.registry import relation_factory
from taskology_tf.data.synthetic.dataset import render_example
from taskology_tf.relations.depth_motion import depth_motion, depth_motion_loss, depth_motion_terms


def _euler(r):
    return np.stack([np.arctan2(r[:, 2, 1], r[:, 2, 2]), -np.arcsin(r[:, 2, 0]), np.arctan2(r[:, 1, 0], r[:, 0, 0])], -1).astype(np.float32)


def _video(n=3, height=48, width=96):
    examples = [render_example(i, style="sim", height=height, width=width, with_next=True) for i in range(n)]
    # The renderer gives the depth of frame t only; frame t's depth stands in for frame t+1's (the
    # backward direction is then approximate, the forward one exact).
    return {k: np.stack([e[k] for e in examples]) for k in ("image", "image_next", "intrinsics", "depth", "ego_motion")}


def _motion_predictions(ego, scale=1.0):
    inv = np.linalg.inv(ego)
    return {
        "rotation": _euler(ego[:, :3, :3]) * scale,
        "translation": ego[:, :3, 3] * scale,
        "rotation_backward": _euler(inv[:, :3, :3]) * scale,
        "translation_backward": inv[:, :3, 3] * scale,
    }


def test_registered_and_declares_what_it_reads():
    rel = relation_factory("depth_motion")()
    assert rel.reads == {"depth": ("depth", "depth_next"),
                         "motion": ("rotation", "translation", "rotation_backward", "translation_backward")}
    assert set(rel.input_keys) == {"image", "image_next", "intrinsics"}
    rel = depth_motion(depth="d", motion="m", motion_weight=0.5)
    assert rel.weight_for("m") == 0.5 and rel.weight_for("d") == 1.0


def test_true_motion_scores_better_than_no_motion():
    batch = _video()
    depth = np.where(batch["depth"] > 0, batch["depth"], 80.0).astype(np.float32)
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    results = {}
    for name, scale in (("true", 1.0), ("none", 0.0)):
        preds = {"depth": {"depth": depth, "depth_next": depth}, "motion": _motion_predictions(batch["ego_motion"], scale)}
        terms = depth_motion_terms(inputs, preds)
        results[name] = {k: ops.convert_to_numpy(v) for k, v in terms.items()}
    assert np.all(results["true"]["photometric"] < 0.6 * results["none"]["photometric"])
    np.testing.assert_allclose(results["true"]["rotation_cycle"], 0.0, atol=1e-9)
    np.testing.assert_allclose(results["true"]["translation_cycle"], 0.0, atol=1e-9)
    assert np.all(results["true"]["visible_fraction"] > 0.5)


def test_loss_is_per_example_and_gradients_reach_both_tasks():
    batch = _video(2, 32, 64)
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    depth = tf.Variable(np.full((2, 32, 64, 1), 8.0, np.float32))
    depth_next = tf.Variable(np.full((2, 32, 64, 1), 8.0, np.float32))
    motion = {k: tf.Variable(v) for k, v in _motion_predictions(batch["ego_motion"], 0.5).items()}
    weights = {"smoothness": 1e-3, "depth_consistency": 0.05, "rotation_cycle": 1e-3, "translation_cycle": 1e-2}
    with tf.GradientTape() as tape:
        loss = depth_motion_loss(inputs, {"depth": {"depth": depth, "depth_next": depth_next}, "motion": motion}, weights)
        total = tf.reduce_sum(loss)
    assert loss.shape == (2,) and np.all(np.isfinite(loss.numpy()))
    grads = tape.gradient(total, [depth, depth_next, motion["translation"], motion["translation_backward"]])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_weights_are_applied():
    batch = _video(1, 32, 64)
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    depth = np.full((1, 32, 64, 1), 8.0, np.float32)
    preds = {"depth": {"depth": depth, "depth_next": depth}, "motion": _motion_predictions(batch["ego_motion"], 0.5)}
    terms = depth_motion_terms(inputs, preds)
    loss = depth_motion_loss(inputs, preds, {"smoothness": 0.0, "depth_consistency": 2.0})
    expected = terms["photometric"] + 2.0 * terms["depth_consistency"]
    np.testing.assert_allclose(ops.convert_to_numpy(loss), ops.convert_to_numpy(expected), rtol=1e-5)


def test_inverse_backward_uses_only_the_forward_motion():
    batch = _video(2, 32, 64)
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    depth = np.where(batch["depth"] > 0, batch["depth"], 80.0).astype(np.float32)
    preds = {"depth": {"depth": depth, "depth_next": depth}, "motion": _motion_predictions(batch["ego_motion"])}
    exact = depth_motion_terms(inputs, preds, backward="inverse")
    garbage = dict(preds["motion"], translation_backward=np.full((2, 3), 5.0, np.float32))
    ignored = depth_motion_terms(inputs, {"depth": preds["depth"], "motion": garbage}, backward="inverse")
    np.testing.assert_allclose(ops.convert_to_numpy(exact["photometric"]), ops.convert_to_numpy(ignored["photometric"]))
    np.testing.assert_allclose(ops.convert_to_numpy(ignored["translation_cycle"]), 0.0)
    used = depth_motion_terms(inputs, {"depth": preds["depth"], "motion": garbage})
    assert np.all(ops.convert_to_numpy(used["photometric"]) > ops.convert_to_numpy(exact["photometric"]))
    with pytest.raises(ValueError, match="inverse"):
        depth_motion_terms(inputs, preds, backward="both")


def test_blurred_copies_keep_the_true_motion_best():
    batch = _video(2, 32, 64)
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    depth = np.where(batch["depth"] > 0, batch["depth"], 80.0).astype(np.float32)
    losses = {}
    for name, scale in (("true", 1.0), ("half", 0.5)):
        preds = {"depth": {"depth": depth, "depth_next": depth}, "motion": _motion_predictions(batch["ego_motion"], scale)}
        losses[name] = ops.convert_to_numpy(depth_motion_terms(inputs, preds, blur_sizes=(1, 5, 9))["photometric"])
    assert np.all(losses["true"] < losses["half"])


def test_occlusion_test_hides_over_estimated_depth_from_its_correction():
    """The occlusion test compares predicted depths, so a patch predicted too far looks occluded and gets
    no gradient; without the test (occlusion_tolerance=None) the gradient pulls it back towards the truth."""
    ex = [render_example(i, style="sim", height=64, width=128, with_next=True, next_labels=True) for i in range(2)]
    batch = {k: np.stack([e[k] for e in ex]) for k in ("image", "image_next", "intrinsics", "depth", "depth_next",
                                                        "ego_motion", "object_motion", "object_motion_backward")}
    inputs = {k: batch[k] for k in ("image", "image_next", "intrinsics")}
    true = {k: np.where(batch[k] > 0, batch[k], 1000.0).astype(np.float32) for k in ("depth", "depth_next")}
    patch = np.zeros_like(true["depth"], bool)
    patch[:, 40:56, 32:96] = True  # road in front of the car
    far = tf.constant(np.where(patch, 1.3 * true["depth"], true["depth"]))
    fields = (tf.constant(batch["object_motion"]), tf.constant(batch["object_motion_backward"]))
    grads = {}
    for tolerance in (0.05, None):
        with tf.GradientTape() as tape:
            tape.watch(far)
            preds = {"depth": {"depth": far, "depth_next": true["depth_next"]},
                     "motion": _motion_predictions(batch["ego_motion"])}
            terms = depth_motion_terms(inputs, preds, occlusion_tolerance=tolerance, translation_fields=fields,
                                       backward="inverse")
            loss = tf.reduce_sum(terms["photometric"])
        grads[tolerance] = tape.gradient(loss, far).numpy()[patch]
    assert np.mean(grads[0.05] != 0.0) < 0.25  # hidden: 8 % of the patch gets a gradient
    assert np.mean(grads[None] != 0.0) > 0.75  # 94 %
    assert np.sum(grads[None]) > 0.0  # descent lowers the over-estimated depth
