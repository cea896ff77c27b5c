"""Tests of the field tasks (scaling studies): targets, loss, network, registration by count."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import task_factory
from taskology_tf.tasks.field import FieldTask, box_mean, field_target, field_tasks, masked_l1, source_field


def _batch():
    depth = np.array([2.0, 4.0, 0.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51  # gray = 0.299 + 0.114 * 0.2
    return {"depth": depth, "image": image}


def test_sources_and_their_valid_pixels():
    field, valid = (np.asarray(x)[0, ..., 0] for x in source_field(_batch(), "inverse_depth"))
    np.testing.assert_allclose(field, [[0.5, 0.25], [0.0, 1.0]])
    np.testing.assert_array_equal(valid, [[1, 1], [0, 1]])
    log_depth = np.asarray(source_field(_batch(), "log_depth")[0])[0, ..., 0]
    np.testing.assert_allclose(log_depth, [[np.log(2), np.log(4)], [0.0, 0.0]], atol=1e-6)
    gray, valid = (np.asarray(x) for x in source_field(_batch(), "gray"))
    np.testing.assert_allclose(gray, 0.299 + 0.114 * 0.2, atol=1e-6)
    assert valid.min() == 1.0
    np.testing.assert_allclose(np.asarray(source_field(_batch(), "blue")[0]), 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="FieldTask.source"):
        source_field(_batch(), "albedo")


def test_box_mean_averages_valid_pixels_only():
    field = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    valid = np.ones_like(field)
    valid[0, 1, 1] = 0  # the centre is unknown: it never enters a mean, and it is known from its neighbours
    mean, has = (np.asarray(x)[0, ..., 0] for x in box_mean(field, valid, 3))
    assert has.min() == 1.0
    assert mean[1, 1] == pytest.approx((36 - 4) / 8)
    assert mean[0, 0] == pytest.approx((0 + 1 + 3) / 3)  # window cut at the border, centre excluded
    same = box_mean(field, valid, 1)
    assert same[0] is field and same[1] is valid


def test_target_is_affine_and_the_loss_masks_unknown_pixels():
    target, valid = (np.asarray(x) for x in field_target(_batch(), "inverse_depth", scale=2.0, offset=1.0))
    np.testing.assert_allclose(target[0, ..., 0], [[2.0, 1.5], [0.0, 3.0]])
    pred = target.copy()
    pred[0, 1, 0] = 100.0  # wrong where nothing is known: free
    pred[0, 0, 0] += 0.3
    np.testing.assert_allclose(np.asarray(masked_l1(pred, target, valid)), [0.1], atol=1e-6)


def test_task_network_loss_metrics_and_ground_truth():
    task = FieldTask("f", smooth=1, width=4, num_layers=1)
    assert task.label_keys == ("depth",) and task.output_keys == ("field",)
    assert FieldTask("g", source="gray").label_keys == ()
    model = task.build_model()
    batch = _batch()
    out = model({"image": batch["image"]})
    assert out["field"].shape == (1, 2, 2, 1)
    assert np.asarray(task.loss(batch, task.ground_truth(batch))).tolist() == [0.0]
    metrics = task.make_metrics()
    metrics.update(batch, {"field": np.asarray(task.ground_truth(batch)["field"]) + 0.5})
    assert metrics.result() == {"l1": pytest.approx(0.5)}
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(task.loss(batch, model({"image": batch["image"]})))
    assert all(g is not None for g in tape.gradient(loss, variables))
    panels = task.summary_images(batch, {"field": np.asarray(out["field"])})
    assert panels["f/image_prediction_label"].shape == (1, 2, 6, 3)


@pytest.mark.parametrize("kwargs, message", [(dict(source="x"), "source"), (dict(smooth=2), "smooth")])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldTask("f", **kwargs)


def test_field_tasks_registers_names_configured_per_scope():
    names = field_tasks(3, prefix="scaled")
    assert names == ["scaled_0", "scaled_1", "scaled_2"]
    assert field_tasks(3, prefix="scaled") == names  # registering again is harmless
    gin.parse_config(["scaled_1/FieldTask.source = 'gray'"])
    try:
        tasks = {}
        for name in names:
            with gin.config_scope(name):
                tasks[name] = task_factory(name)(name=name)
    finally:
        gin.clear_config()
    assert tasks["scaled_1"].source == "gray" and tasks["scaled_0"].source == "inverse_depth"
    with pytest.raises(ValueError, match="count"):
        field_tasks(0)
