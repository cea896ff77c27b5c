"""Tests of the segmentation task: loss with ignore labels, movable mask, metrics, panels, a training step."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import TASKS
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL
from taskology_tf.tasks.segmentation import (
    SegmentationTask,
    colorize_labels,
    label_palette,
    movable_class_ids,
    movable_mask,
    segmentation_cross_entropy,
)


def test_cross_entropy_by_hand_and_ignore_label():
    # Two classes, logits (0, log 3) everywhere: p(class 1) = 3/4.
    logits = np.zeros((2, 1, 3, 2), np.float32)
    logits[..., 1] = np.log(3.0)
    labels = np.array([[[1, 0, IGNORE_LABEL]], [[IGNORE_LABEL] * 3]], np.int32)[..., None]  # [2, 1, 3, 1]
    loss = segmentation_cross_entropy(tf.constant(logits), tf.constant(labels)).numpy()
    expected0 = (-np.log(0.75) - np.log(0.25)) / 2.0  # the ignored pixel does not count
    np.testing.assert_allclose(loss, [expected0, 0.0], rtol=1e-5)
    # Labels out of [0, C) other than 255 are ignored too, and [B, H, W] labels work.
    other = np.array([[[1, 0, 7]], [[-1, 5, 9]]], np.int32)
    np.testing.assert_allclose(segmentation_cross_entropy(logits, other).numpy(), [expected0, 0.0], rtol=1e-5)


def test_cross_entropy_gradient_is_zero_on_ignored_pixels():
    logits = tf.Variable(np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32))
    labels = np.array([[[0, IGNORE_LABEL], [2, IGNORE_LABEL]]], np.int32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(segmentation_cross_entropy(logits, labels))
    grad = tape.gradient(loss, logits).numpy()
    assert np.all(grad[0, :, 1] == 0.0) and np.all(np.abs(grad[0, :, 0]) > 0)


def test_movable_mask():
    ids = movable_class_ids()
    assert [CLASS_NAMES[i] for i in ids] == ["car", "pedestrian"]
    labels = np.array([[[CLASS_NAMES.index("car"), CLASS_NAMES.index("road")],
                        [CLASS_NAMES.index("pedestrian"), CLASS_NAMES.index("sky")]]])
    logits = tf.constant(np.eye(len(CLASS_NAMES), dtype=np.float32)[labels] * 3.0)  # [1, 2, 2, C]
    mask = movable_mask(logits, ids)
    assert tuple(mask.shape) == (1, 2, 2, 1) and mask.dtype == tf.float32
    np.testing.assert_array_equal(mask.numpy()[0, ..., 0], [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(movable_mask(logits, ()).numpy(), np.zeros((1, 2, 2, 1)))
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(movable_mask(variable * 1.0, ids))
    assert tape.gradient(total, variable) is None
    with pytest.raises(ValueError, match="not among the class names"):
        movable_class_ids(("road",), ("car",))


def test_registered_and_metrics_and_panels():
    assert TASKS["segmentation"] is SegmentationTask
    task = SegmentationTask()
    assert task.movable_ids == movable_class_ids()
    gt = np.array([[[0, 6], [7, IGNORE_LABEL]]], np.int32)[..., None]  # road, car, pedestrian, ignored
    pred = np.array([[[0, 6], [6, 1]]])  # road right, car right, pedestrian -> car
    logits = np.eye(len(CLASS_NAMES), dtype=np.float32)[pred]
    acc = task.make_metrics()
    acc.update({"image": np.zeros((1, 2, 2, 3), np.uint8), "segmentation": gt}, {"segmentation_logits": logits})
    result = acc.result()
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)
    assert result["iou_car"] == pytest.approx(0.5) and result["iou_pedestrian"] == 0.0
    assert result["miou_movable"] == pytest.approx(0.25)
    assert result["miou"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # other classes absent: excluded

    batch = {"image": np.full((1, 2, 2, 3), 255, np.uint8), "segmentation": gt}
    (panel,) = task.summary_images(batch, {"segmentation_logits": logits}).values()
    assert panel.shape == (1, 2, 6, 3) and panel.min() >= 0 and panel.max() <= 1
    np.testing.assert_allclose(panel[0, 0, 2], np.array([128, 64, 128]) / 255.0)  # predicted road
    np.testing.assert_array_equal(panel[0, 1, 5], [0, 0, 0])  # ignored label is black


def test_palette():
    palette = label_palette(CLASS_NAMES + ("extra_a", "extra_b"))
    assert palette.shape == (10, 3) and palette.min() >= 0 and palette.max() <= 1
    assert len({tuple(c) for c in palette.round(3)}) == 10
    colours = colorize_labels(np.array([[[0, 99]]]), ("road",))
    np.testing.assert_array_equal(colours[0, 0, 1], [0, 0, 0])


def test_validate_spec_without_padding():
    spec = {"image": tf.TensorSpec((64, 128, 3), tf.uint8)}
    SegmentationTask().validate_spec(spec)  # padded inside the network
    with pytest.raises(ValueError, match="Task 'segmentation'.*multiples of 128.*pad_to_multiple=True"):
        SegmentationTask(pad_to_multiple=False).validate_spec(spec)


def test_tiny_training_steps_lower_the_loss():
    tf.keras.utils.set_random_seed(0)
    task = SegmentationTask(num_filters=8, num_repeats=1, learning_rate=1e-2)
    model = task.build_model()
    optimizer = task.make_optimizer()
    rng = np.random.default_rng(0)
    # Image rows coloured by class; a few pixels ignored. Images 64 x 128 (padded to 128 x 128 inside).
    labels = np.repeat(np.arange(8)[:, None], 8, axis=0)[:64].repeat(128, axis=1)  # [64, 128], 8 bands
    labels = np.stack([labels, labels[::-1]])[..., None].astype(np.int32)  # [2, 64, 128, 1]
    colours = (label_palette(CLASS_NAMES) * 255).astype(np.uint8)
    image = colours[labels[..., 0]] + rng.integers(0, 20, size=(2, 64, 128, 3)).astype(np.uint8)
    labels[:, :4] = IGNORE_LABEL
    batch = {"image": tf.constant(image), "segmentation": tf.constant(labels)}

    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            predictions = model(task.model_inputs(batch), training=True)
            loss = tf.reduce_mean(task.loss(batch, predictions))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    assert predictions["segmentation_logits"].shape == (2, 64, 128, len(CLASS_NAMES))
    assert all(np.isfinite(losses))
    print("losses", losses)
    assert losses[-1] < 0.8 * losses[0], losses


def test_two_frame_mode_trains_on_single_labelled_frames(tmp_path):
    import tensorflow as tf

    from taskology_tf.core.trainer import TaskTrainer
    from taskology_tf.data.synthetic.dataset import synthetic_dataset
    from taskology_tf.tasks.segmentation import SegmentationTask

    task = SegmentationTask(frames=2)
    assert task.output_keys == ("segmentation_logits", "segmentation_logits_next")
    assert task.labelled_keys() == ("image", "segmentation")
    data = synthetic_dataset("coco", 4, seed=3, height=64, width=128, keys=["image", "segmentation"])
    trainer = TaskTrainer(task, dedicated=data, eval_data=data, batch_size=2, checkpoint_every=0, summary_every=0)
    assert np.isfinite(trainer.train_step()["total"])
    assert "miou" in trainer.evaluate(write=False)
    pair = next(iter(synthetic_dataset("sim", 2, seed=4, height=64, width=128, with_next=True,
                                       keys=["image", "image_next"]).batch(2)))
    out = trainer.predict(pair)
    assert out["segmentation_logits_next"].shape == (2, 64, 128, 8)
