import math

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import task_factory
from taskology_tf.tasks import box_coding as bc
from taskology_tf.tasks.detection import (
    EXAMPLE_KEYS,
    DetectionTask,
    flow_targets,
    sigmoid_focal_loss,
    smooth_l1,
)

B, NF, P, N = 2, 3, 256, 4


def _batch(labelled=((1, 1, 1), (0, 0, 0)), seed=0):
    """Two vehicles: track 5 moves +0.5 m in x per frame, track 7 stands still (tiny preset, sensor frame)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-8, 8, (B, NF, P, 4)).astype(np.float32)
    pts[..., 2] = rng.uniform(-1.8, 0.0, (B, NF, P))
    boxes = np.zeros((B, NF, N, 7), np.float32)
    for f in range(NF):
        boxes[:, f, 0] = [1.0 + 0.5 * f, 2.0, -1.0, 4.5, 2.0, 1.6, 0.1 + 0.05 * f]
        boxes[:, f, 1] = [-3.0, -4.0, -1.0, 4.0, 1.9, 1.5, 1.6]
    labelled = np.asarray(labelled, np.float32)
    box_mask = np.tile(np.array([1, 1, 0, 0], np.float32), (B, NF, 1)) * labelled[..., None]
    track_ids = np.where(box_mask > 0, np.tile(np.array([5, 7, -1, -1]), (B, NF, 1)), -1).astype(np.int64)
    return {"points": pts, "points_mask": np.ones((B, NF, P), np.float32), "boxes": boxes * box_mask[..., None],
            "box_mask": box_mask, "track_ids": track_ids, "labelled": labelled,
            "num_points_in_box": (box_mask * 20).astype(np.int32), "id": np.arange(B, dtype=np.int64)}


@pytest.fixture(scope="module")
def task_and_model():
    task = DetectionTask(preset="tiny")
    return task, task.build_model()


def test_registered_and_contract_matches_the_data_module():
    assert task_factory("detection") is DetectionTask
    task = DetectionTask()
    assert task.input_keys == ("points", "points_mask")
    assert set(task.label_keys) <= set(EXAMPLE_KEYS)
    lidar = pytest.importorskip("taskology_tf.data.lidar_sequence")
    for key, (shape, dtype, _) in EXAMPLE_KEYS.items():
        if key in lidar.SEQUENCE_KEYS:
            want_shape, want_dtype, _ = lidar.SEQUENCE_KEYS[key]
            assert (len(shape), dtype) == (len(want_shape), want_dtype), key


def test_focal_loss_and_smooth_l1_hand_values():
    fl = np.asarray(sigmoid_focal_loss(np.array([0.0, 0.0, 2.0], np.float32), np.array([1.0, 0.0, 1.0], np.float32)))
    p = 1 / (1 + math.exp(-2.0))
    np.testing.assert_allclose(fl, [0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2), 0.25 * (1 - p) ** 2 * -math.log(p)],
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(smooth_l1(np.array([0.05, -1.0], np.float32), beta=0.1)),
                               [0.5 * 0.05**2 / 0.1, 1.0 - 0.05], rtol=1e-5)


def test_flow_targets_follow_track_ids():
    batch = _batch()
    targets, valid = (np.asarray(x) for x in flow_targets(batch["boxes"], batch["box_mask"], batch["track_ids"]))
    assert targets.shape == (B, N, NF - 1, 3) and valid.shape == (B, N, NF - 1)
    np.testing.assert_array_equal(valid[0], [[1, 1], [1, 1], [0, 0], [0, 0]])
    assert not valid[1].any()  # unlabelled example
    np.testing.assert_allclose(targets[0, 0], [[-0.5, 0.0, -0.05], [-1.0, 0.0, -0.1]], atol=1e-6)  # k = 1, 2 back
    np.testing.assert_allclose(targets[0, 1], 0.0, atol=1e-6)


def test_loss_is_per_example_and_zero_without_labels(task_and_model):
    task, model = task_and_model
    batch = _batch()
    preds = model(task.model_inputs(batch), training=False)
    terms = {k: np.asarray(v) for k, v in task.loss_terms(batch, preds).items()}
    assert set(terms) == {"detection_class", "detection_box", "detection_direction", "detection_flow"}
    assert task.loss_kind("detection_class") == "classification" and task.loss_kind("detection_box") == "regression"
    total = np.asarray(task.loss(batch, preds))
    assert total.shape == (B,)
    np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-6)
    assert np.all(total[:1] > 0) and total[1] == 0.0
    assert all(v[1] == 0.0 for v in terms.values())


def test_perfect_predictions_have_zero_box_direction_and_flow_loss(task_and_model):
    task, _ = task_and_model
    batch = _batch(labelled=((1, 1, 1), (1, 0, 1)))
    t = task.targets(batch)
    positive = np.asarray(t["positive"])  # [B, n_f, H, W, n_a]
    assert positive[0].sum() > 0 and positive[1, 1].sum() == 0  # unlabelled frame: no positives
    to_model = lambda x: np.moveaxis(np.asarray(x), 1, 4)  # [B, n_f, H, W, n_a, ...] -> [B, H, W, n_a, n_f, ...]
    logits = np.where(positive, 12.0, -12.0).astype(np.float32)
    flow = np.zeros((B, 32, 32, 2, NF - 1, 3), np.float32)
    flow[..., 0] = np.where(np.asarray(t["assigned"])[:, -1] == 0, -0.5, 0.0)[..., None]  # track 5 moved
    flow[..., 0] *= np.array([1.0, 2.0])
    flow[..., 2] = np.where(np.asarray(t["assigned"])[:, -1] == 0, -0.05, 0.0)[..., None] * np.array([1.0, 2.0])
    preds = {"class_logits": to_model(logits), "residuals": to_model(t["residuals"]),
             "direction_logits": to_model(4.0 * np.asarray(t["direction"]) - 2.0), "box_flow": flow}
    terms = {k: np.asarray(v) for k, v in task.loss_terms(batch, preds).items()}
    np.testing.assert_allclose(terms["detection_box"], 0.0, atol=1e-6)
    np.testing.assert_allclose(terms["detection_flow"], 0.0, atol=1e-6)
    assert np.all(terms["detection_class"] < 1e-4) and np.all(terms["detection_direction"] < 0.2 * 0.2)
    # Example 1's frame 1 is unlabelled, so the flow of example 1 has no target 1 frame back...
    # ...and the metrics score these perfect boxes AP = 1 on the labelled current frames.
    acc = task.make_metrics()
    acc.update(batch, preds)
    result = acc.result()
    assert result["ap_3d_l1"] == pytest.approx(1.0) and result["aph_bev_l1"] == pytest.approx(1.0, abs=1e-3)
    assert result["num_frames"] == 2 and result["flow_epe"] == pytest.approx(0.0, abs=1e-6)
    panels = task.summary_images(batch, preds)
    (image,) = panels.values()
    assert image.shape == (B, 256, 256, 3) and 0 <= image.min() and image.max() <= 1
    gt_drawn, pred_drawn = image[..., 1] > 0.99, image[..., 0] > 0.99
    assert gt_drawn[0].sum() > 50 and pred_drawn[0].sum() > 50
    assert (gt_drawn & pred_drawn)[0].sum() > 0.8 * gt_drawn[0].sum()  # the perfect boxes coincide (yellow)


def test_tiny_training_step_is_finite(task_and_model):
    task, model = task_and_model
    batch = {k: tf.constant(v) for k, v in _batch(labelled=((1, 0, 1), (0, 1, 1))).items()}
    optimizer = task.make_optimizer()

    def step(batch):  # eager: one step, no graph to build
        with tf.GradientTape() as tape:
            preds = model(task.model_inputs(batch), training=True)
            loss = tf.reduce_mean(task.loss(batch, preds))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss, grads

    loss, grads = step(batch)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads) > 0.9 * len(grads)


def test_head_subsets_and_validation():
    flow_only = DetectionTask(name="flow", heads=("flow",))
    assert flow_only.output_keys == ("box_flow",)
    model = flow_only.build_model()
    batch = _batch()
    terms = flow_only.loss_terms(batch, model(flow_only.model_inputs(batch)))
    assert set(terms) == {"flow_flow"}
    detector = DetectionTask(heads=("detection",))
    assert detector.output_keys == ("class_logits", "residuals", "direction_logits")
    spec = {"points": tf.TensorSpec((2, 100, 4), tf.float32), "boxes": tf.TensorSpec((2, 8, 7), tf.float32)}
    with pytest.raises(ValueError, match="n_f=3"):
        detector.validate_spec(spec)
    with pytest.raises(ValueError, match="heads"):
        DetectionTask(heads=("segmentation",))
    with pytest.raises(ValueError, match="frames >= 2"):
        DetectionTask(frames=1)
    assert DetectionTask(frames=1, heads=("detection",)).config.frames == 1


def _one_box_batch(box, frames=NF):
    """One example whose every frame holds ``box`` (labelled), random points."""
    batch = _batch(labelled=((1, 1, 1), (1, 1, 1)))
    boxes = np.zeros_like(batch["boxes"])
    boxes[:, :, 0] = box
    mask = np.zeros_like(batch["box_mask"])
    mask[:, :, 0] = 1.0
    return dict(batch, boxes=boxes, box_mask=mask, track_ids=np.where(mask > 0, 5, -1).astype(np.int64))


def test_boxes_centred_outside_the_grid_are_ignored_not_negative():
    """Ladder step (c): 45 % of the synthetic vehicles within the 12 m range have their centre outside the 16 m
    grid. They used to force-match edge anchors (targets the network cannot see) while the evaluation
    dropped them, so a detection of such a partly visible vehicle counted as a false positive."""
    task = DetectionTask(preset="tiny")
    outside = _one_box_batch([8.9, 2.25, -1.0, 4.5, 1.9, 1.5, 0.0])  # 0.9 m beyond the grid's x_max = 8
    t = {k: np.asarray(v) for k, v in task.targets(outside).items()}
    assert t["positive"].sum() == 0
    edge = t["negative"][0, -1, 20, 31, 0]  # anchor at x = 7.75, y = 2.25: IoU with the box 0.55
    assert not edge and t["negative"][0, -1, 20, 25, 0]  # 6 cells in: IoU 0, IoU 0.05, a negative
    inside = _one_box_batch([7.4, 2.25, -1.0, 4.5, 1.9, 1.5, 0.0])
    assert np.asarray(task.targets(inside)["positive"])[0, -1].sum() > 0
    # The metrics leave out predictions centred outside the grid, as they leave out such ground truths.
    acc = task.make_metrics()
    logits = np.full((B, 32, 32, 2, NF), -9.0, np.float32)
    logits[:, 20, 31, 0, :] = 9.0
    residuals = np.zeros((B, 32, 32, 2, NF, 7), np.float32)
    residuals[:, 20, 31, 0, :, 0] = (8.9 - 7.75) / math.hypot(4.7, 2.1)  # decodes to x = 8.9
    acc.update(outside, {"class_logits": logits, "residuals": residuals})
    assert acc.metrics.num_predictions == 0 and acc.metrics.num_gt[1] == 0


def test_regress_ignored_trains_the_boxes_of_anchors_between_the_thresholds():
    """Ladder step (a): anchors with IoU in [negative_iou, positive_iou) get no class target, so they can fire
    with a high score; their never-trained boxes (e.g. 13 m tall) were ranked above the true positives
    (measured before boxes centred outside the grid were left out of the targets)."""
    box = [0.25, 0.25, -1.0, 4.7, 2.1, 1.7, 0.0]
    batch = _one_box_batch(box)
    plain = {k: np.asarray(v) for k, v in DetectionTask(preset="tiny").targets(batch).items()}
    task = DetectionTask(preset="tiny", heads=("detection",), regress_ignored=True)
    t = {k: np.asarray(v) for k, v in task.targets(batch).items()}
    ignored = ~t["positive"] & ~t["negative"]
    assert ignored[0, -1, 16, 19, 0]  # 1.5 m along the length: IoU 0.516
    assert not plain["regress"][0, -1, 16, 19, 0] and t["regress"][0, -1, 16, 19, 0]
    np.testing.assert_array_equal(plain["regress"], plain["positive"])
    np.testing.assert_array_equal(t["regress"], t["positive"] | ignored)
    # The target of an ignored anchor decodes to the box it overlaps.
    decoded = np.asarray(bc.decode_residuals(t["residuals"][0, -1, 16, 19, 0], task.anchors[16, 19, 0]))
    np.testing.assert_allclose(decoded, box, atol=1e-5)
    # A box error at an ignored anchor costs loss with regress_ignored, nothing without.
    to_model = lambda x: np.moveaxis(np.asarray(x), 1, 4)
    wrong = np.array(t["residuals"])
    wrong[0, -1, 16, 19, 0, 5] += 1.0  # its height off by a factor e
    preds = {"class_logits": to_model(np.where(t["positive"], 9.0, -9.0).astype(np.float32)),
             "residuals": to_model(wrong), "direction_logits": to_model(np.full(t["positive"].shape, -5.0, np.float32))}
    assert float(np.asarray(task.loss_terms(batch, preds)["detection_box"])[0]) > 0.05
    plain_task = DetectionTask(preset="tiny", heads=("detection",))
    preds_plain = {k: v for k, v in preds.items()}
    assert float(np.asarray(plain_task.loss_terms(batch, preds_plain)["detection_box"])[0]) < 1e-6


def test_grid_network_and_batchnorm_overrides():
    task = DetectionTask(preset="tiny", heads=("detection",), frames=1, bn_momentum=0.9,
                         grid={"x_min": 0.0, "cell_size": 0.64, "width": 100, "height": 64, "y_min": -20.48},
                         network={"pillar_channels": 16, "block_channels": [16, 32, 32]})
    assert task.config.grid.z_min == -3.0 and task.config.grid.x_max == pytest.approx(64.0)
    assert task.config.block_channels == (16, 32, 32) and task.config.pillar_channels == 16
    assert task.config.bn_momentum == 0.9 and task.anchors.shape == (64, 100, 2, 7)


def test_cosine_learning_rate_option():
    constant = DetectionTask(preset="tiny", learning_rate=1e-3).make_optimizer()
    assert float(constant.learning_rate) == pytest.approx(1e-3)
    decayed = DetectionTask(preset="tiny", learning_rate=1e-3, lr_decay_steps=100, lr_final_fraction=0.1)
    schedule = decayed.make_optimizer()._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(100)) == pytest.approx(1e-4)
    assert float(schedule(50)) == pytest.approx(0.55e-3, rel=1e-3)
    with pytest.raises(ValueError, match="lr_decay_steps"):
        DetectionTask(preset="tiny", lr_decay_steps=-1)
