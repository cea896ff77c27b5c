"""Tests of the XTasC task: loss terms by hand, consistency targets, stop-gradient, metrics, training."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import TASKS
from taskology_tf.data.example import IGNORE_LABEL
from taskology_tf.tasks.xtasc import (
    XTasCTask,
    combine_task_losses,
    cross_entropy,
    masked_l1,
    to_depth_target,
    xtasc_loss_terms,
)

CLASSES = ("road", "building", "sky")
TABLE = np.array([4.0, 10.0, 40.0], np.float32)  # depth of each class, metres


def _world(seed=0, batch=2, h=4, w=6):
    """Labels where depth is a function of the class, and the predictions of a perfect XTasC-Net."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (batch, h, w, 1)).astype(np.int32)
    depth = TABLE[labels[..., 0]][..., None]
    one_hot = np.eye(3, dtype=np.float32)[labels[..., 0]]
    predictions = {
        "segmentation": 30.0 * one_hot,
        "depth": depth.copy(),
        "depth_from_segmentation": depth.copy(),  # TTNet s->d maps classes to their depth exactly
        "segmentation_from_depth": 30.0 * one_hot,  # TTNet d->s recovers the classes exactly
    }
    return {"segmentation": labels, "depth": depth}, predictions


def test_registered_keys_and_kinds_per_mode():
    assert TASKS["xtasc"] is XTasCTask
    task = XTasCTask(class_names=CLASSES)
    assert task.label_keys == ("segmentation", "depth")
    assert task.output_keys == ("segmentation", "depth", "depth_from_segmentation", "segmentation_from_depth")
    assert task.loss_kind("segmentation") == task.loss_kind("segmentation_from_depth") == "classification"
    assert task.loss_kind("depth") == task.loss_kind("depth_from_segmentation") == "regression"
    mt = XTasCTask(mode="mt", lambda_segmentation=0.5)
    assert mt.lambda_segmentation == 0.0 and mt.output_keys == ("segmentation", "depth")
    st = XTasCTask(mode="st", single_task="depth")
    assert st.label_keys == ("depth",) and st.output_keys == ("depth",) and st.labelled_keys() == ("image", "depth")


def test_pure_losses_by_hand():
    logits = np.zeros((1, 1, 3, 2), np.float32)
    logits[..., 1] = np.log(3.0)  # p(class 1) = 3/4
    labels = np.array([[[1, 0, IGNORE_LABEL]]], np.int32)[..., None]
    valid = (labels != IGNORE_LABEL).astype(np.float32)
    np.testing.assert_allclose(cross_entropy(logits, labels, valid).numpy(),
                               [(-np.log(0.75) - np.log(0.25)) / 2], rtol=1e-5)
    soft = np.full((1, 1, 3, 2), 0.5, np.float32)
    np.testing.assert_allclose(cross_entropy(logits, soft).numpy(), [-(np.log(0.75) + np.log(0.25)) / 2], rtol=1e-5)
    pred = np.full((2, 2, 2, 1), 3.0, np.float32)
    gt = np.zeros((2, 2, 2, 1), np.float32)
    gt[0, 0] = 1.0
    np.testing.assert_allclose(masked_l1(pred, gt, gt > 0).numpy(), [2.0, 0.0])
    np.testing.assert_allclose(to_depth_target(np.array([[[[0.0], [4.0]]]], np.float32), "inverse").numpy().ravel(), [0.0, 0.25])
    with pytest.raises(ValueError, match="depth_target"):
        to_depth_target(gt, "disparity")


@pytest.mark.parametrize("consistency", ["hard", "soft"])
def test_consistency_is_zero_for_perfect_transfers_and_the_combination(consistency):
    batch, predictions = _world()
    terms = xtasc_loss_terms(batch, predictions, "xtasc", 3, segmentation_consistency=consistency)
    assert set(terms) == {"segmentation", "depth", "segmentation_from_depth", "depth_from_segmentation"}
    np.testing.assert_array_equal(terms["depth_from_segmentation"].numpy(), [0.0, 0.0])
    np.testing.assert_allclose(terms["segmentation_from_depth"].numpy(), [0.0, 0.0], atol=1e-6)

    # A wrong transfer costs; eq. (11)/(16) combine the terms with lambda and omega.
    predictions["depth_from_segmentation"] = predictions["depth_from_segmentation"] + 2.0
    task = XTasCTask(class_names=CLASSES, lambda_segmentation=0.1, lambda_depth=0.2, segmentation_weight=1.0,
                     depth_weight=0.5, segmentation_consistency=consistency)
    terms = task.loss_terms(batch, predictions)
    np.testing.assert_allclose(terms["depth_from_segmentation"].numpy(), [2.0, 2.0])
    expected = (0.9 * terms["segmentation"] + 0.1 * terms["segmentation_from_depth"]
                + 0.5 * (0.8 * terms["depth"] + 0.2 * terms["depth_from_segmentation"]))
    np.testing.assert_allclose(task.loss(batch, predictions).numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(task.loss(batch, predictions).numpy(), [0.2, 0.2], atol=1e-5)


def test_xtasc_targets_direct_predictions_align_targets_labels():
    batch, predictions = _world()
    # The direct depth is off by +1 m everywhere but the transfer matches the labels.
    predictions["depth"] = predictions["depth"] + 1.0
    xtasc = xtasc_loss_terms(batch, predictions, "xtasc", 3)
    align = xtasc_loss_terms(batch, predictions, "align", 3)
    np.testing.assert_allclose(xtasc["depth_from_segmentation"].numpy(), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(align["depth_from_segmentation"].numpy(), [0.0, 0.0])
    # Unlabelled pixels (rows 0-1 of 4, where the direct depth is 5 m further off): masked with
    # consistency_mask="labels", counted with "none".
    batch["depth"][:, :2] = 0.0
    predictions["depth"][:, :2] += 5.0
    masked = xtasc_loss_terms(batch, predictions, "xtasc", 3)["depth_from_segmentation"].numpy()
    everywhere = xtasc_loss_terms(batch, predictions, "xtasc", 3, consistency_mask="none")["depth_from_segmentation"]
    np.testing.assert_allclose(masked, [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(everywhere.numpy(), [3.5, 3.5], rtol=1e-6)


def test_term_grouping_tasks():
    batch, predictions = _world()
    predictions["segmentation_from_depth"] = np.zeros_like(predictions["segmentation_from_depth"])  # uniform: log 3
    task = XTasCTask(class_names=CLASSES, term_grouping="tasks", lambda_segmentation=0.25)
    terms = task.loss_terms(batch, predictions)
    assert set(terms) == {"segmentation", "depth"}
    raw = task.raw_loss_terms(batch, predictions)
    np.testing.assert_allclose(terms["segmentation"].numpy(), 0.75 * raw["segmentation"].numpy() + 0.25 * np.log(3.0), rtol=1e-5)
    np.testing.assert_allclose(task.loss(batch, predictions).numpy(), (terms["segmentation"] + terms["depth"]).numpy())
    assert combine_task_losses({"depth": raw["depth"]}, 0.5, 0.5)["depth"] is raw["depth"]


def _branch_gradients(model, batch, term, mode="xtasc"):
    """Largest |gradient| of a loss term per branch: segmentation, depth, encoder, each TTNet."""
    task = XTasCTask(class_names=CLASSES, mode=mode)
    with tf.GradientTape() as tape:
        predictions = model({"image": batch["image"]}, training=True)
        value = tf.reduce_sum(task.raw_loss_terms(batch, predictions)[term])
    variables = model.trainable_variables
    grads = tape.gradient(value, variables)
    out = {}
    for v, g in zip(variables, grads):
        branch = next(b for b in ("xtasc_segmentation_", "xtasc_depth_", "xtasc_encoder", "xtasc_ttnet_segmentation_to_depth",
                                  "xtasc_ttnet_depth_to_segmentation") if v.path.startswith(b))
        size = 0.0 if g is None else float(tf.reduce_max(tf.abs(g)))
        out[branch] = max(out.get(branch, 0.0), size)
    return out


def test_consistency_gradients_do_not_reach_the_target_branch():
    from taskology_tf.models.xtasc import build_xtasc_model

    tf.keras.utils.set_random_seed(1)
    model = build_xtasc_model(3, "xtasc", "tiny", decoder_convs=1, ttnet_widths=(4, 8), initial_depth=10.0,
                              depth_input_scale=0.1, name="xtasc")
    batch, _ = _world(batch=2, h=32, w=32)
    batch["image"] = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)

    seg = _branch_gradients(model, batch, "segmentation_from_depth")  # target: the direct segmentation
    assert seg["xtasc_segmentation_"] == 0.0
    assert seg["xtasc_ttnet_segmentation_to_depth"] == 0.0
    assert min(seg["xtasc_depth_"], seg["xtasc_encoder"], seg["xtasc_ttnet_depth_to_segmentation"]) > 0.0

    depth = _branch_gradients(model, batch, "depth_from_segmentation")  # target: the direct depth
    assert depth["xtasc_depth_"] == 0.0
    assert depth["xtasc_ttnet_depth_to_segmentation"] == 0.0
    assert min(depth["xtasc_segmentation_"], depth["xtasc_encoder"], depth["xtasc_ttnet_segmentation_to_depth"]) > 0.0


def test_metrics_by_hand():
    task = XTasCTask(class_names=CLASSES, depth_target="inverse")
    batch, predictions = _world(batch=1, h=2, w=2)
    batch["depth"][0, 0, 0] = 0.0  # one invalid pixel
    target = to_depth_target(batch["depth"], "inverse").numpy()
    predictions["depth"] = target * 1.1  # 10 % relative error in inverse depth
    predictions["depth_from_segmentation"] = target
    predictions["segmentation_from_depth"] = -predictions["segmentation_from_depth"]  # always wrong
    metrics = task.make_metrics()
    metrics.update(batch, predictions)
    result = metrics.result()
    valid = target > 0
    assert result["rel_err"] == pytest.approx(0.1, rel=1e-5)
    assert result["abs_err"] == pytest.approx(float(np.mean(0.1 * target[valid])), rel=1e-5)
    assert result["transfer_abs_err"] == 0.0
    assert result["pixel_accuracy"] == 1.0 and result["transfer_pixel_accuracy"] == 0.0
    assert result["abs_rel"] == pytest.approx(1 - 1 / 1.1, rel=1e-4)  # metres: 1/1.1 of the truth
    panels = task.summary_images({**batch, "image": np.zeros((1, 2, 2, 3), np.uint8)}, predictions)
    (panel,) = panels.values()
    assert panel.shape == (1, 2, 10, 3)


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        XTasCTask(mode="cross")
    with pytest.raises(ValueError, match="lambda_depth"):
        XTasCTask(lambda_depth=1.5)
    with pytest.raises(ValueError, match="no TTNets"):
        XTasCTask(mode="mt", ttnet_weights={"depth_from_segmentation": "x.weights.h5"})
    with pytest.raises(ValueError, match="depth_target"):
        XTasCTask(depth_target="disparity")


def test_trains_with_task_trainer_on_synthetic_data():
    from taskology_tf.core.trainer import TaskTrainer
    from taskology_tf.data.synthetic.dataset import synthetic_dataset

    tf.keras.utils.set_random_seed(0)
    # The smallest network (tracing the step dominates the time): 1 conv per decoder block, 2-level TTNets.
    task = XTasCTask(depth_target="inverse", learning_rate=2e-3, lambda_segmentation=0.1, lambda_depth=0.1,
                     decoder_convs=1, ttnet_widths=(4, 8))
    data = synthetic_dataset("sim", 2, seed=5, height=32, width=64, keys=["image", "segmentation", "depth"])
    trainer = TaskTrainer(task, dedicated=data, eval_data=data, batch_size=2, checkpoint_every=0, summary_every=0)
    losses = [trainer.train_step()["total"] for _ in range(6)]
    print("xtasc losses", losses)
    assert all(np.isfinite(losses))
    assert min(losses[3:]) < losses[0], losses
    result = trainer.evaluate(write=False)
    for key in ("miou", "pixel_accuracy", "abs_err", "rel_err", "transfer_miou", "transfer_abs_err"):
        assert np.isfinite(result[key]), key
