import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.tasks.depth import DepthTask, masked_squared_error


def test_masked_squared_error_ignores_unlabelled_pixels():
    gt = np.zeros((2, 4, 4, 1), np.float32)
    gt[0, :2] = 2.0
    pred = np.full((2, 4, 4, 1), 3.0, np.float32)
    loss = masked_squared_error(tf.constant(pred), tf.constant(gt)).numpy()
    np.testing.assert_allclose(loss, [1.0, 0.0])


def test_model_outputs_and_initial_depth():
    task = DepthTask(preset="tiny", initial_depth=7.0)
    model = task.build_model()
    out = model({"image": np.zeros((2, 32, 64, 3), np.uint8)})
    assert set(out) == {"depth"} and out["depth"].shape == (2, 32, 64, 1)
    assert np.all(out["depth"].numpy() > 0)
    assert abs(float(np.median(out["depth"].numpy())) - 7.0) < 3.0


def test_image_size_must_be_multiple_of_32():
    spec = {"image": tf.TensorSpec((60, 100, 3), tf.uint8)}
    with pytest.raises(ValueError, match="Task 'depth'.*multiple of 32"):
        DepthTask().validate_spec(spec)


def test_metrics_and_panels():
    task = DepthTask()
    gt = np.random.default_rng(0).uniform(2, 20, (2, 32, 32, 1)).astype(np.float32)
    batch = {"image": np.zeros((2, 32, 32, 3), np.uint8), "depth": gt}
    acc = task.make_metrics()
    acc.update(batch, {"depth": gt * 1.1})
    result = acc.result()
    assert result["abs_rel"] == pytest.approx(0.1, rel=1e-4)
    panels = task.summary_images(batch, {"depth": gt})
    (panel,) = panels.values()
    assert panel.shape == (2, 32, 96, 3) and panel.min() >= 0 and panel.max() <= 1


def test_invalid_initial_depth():
    with pytest.raises(ValueError, match="initial_depth"):
        DepthTask(initial_depth=0)


def test_two_frame_mode_runs_one_network_on_both_frames():
    task = DepthTask(frames=2, preset="tiny")
    assert task.input_keys == ("image", "image_next") and task.output_keys == ("depth", "depth_next")
    model = task.build_model()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    out = model({"image": a, "image_next": b}, training=False)
    swapped = model({"image": b, "image_next": a}, training=False)
    assert out["depth"].shape == (2, 32, 64, 1) and out["depth_next"].shape == (2, 32, 64, 1)
    np.testing.assert_allclose(np.asarray(out["depth"]), np.asarray(swapped["depth_next"]), rtol=1e-5)
    assert not np.allclose(np.asarray(out["depth"]), np.asarray(out["depth_next"]))
    with pytest.raises(ValueError, match="frames"):
        DepthTask(frames=3)


def test_norm_option_builds_the_depth_from_videos_normalisation():
    task = DepthTask(preset="tiny", norm="randomized_layer")
    model = task.build_model()
    assert any(type(l).__name__ == "RandomizedLayerNormalization" for l in model.layers)
    assert not any(type(l).__name__ == "BatchNormalization" for l in model.layers)


def test_metrics_split_moving_and_static_pixels_when_object_motion_is_given():
    task = DepthTask(median_scaling=True)
    gt = np.full((2, 32, 32, 1), 10.0, np.float32)
    pred = gt.copy()
    pred[:, :4] = 15.0  # wrong only on the moving rows
    motion = np.zeros((2, 32, 32, 3), np.float32)
    motion[:, :4, :, 2] = 0.8  # metres per frame
    acc = task.make_metrics()
    acc.update({"image": np.zeros((2, 32, 32, 3), np.uint8), "depth": gt, "object_motion": motion}, {"depth": pred})
    result = acc.result()
    assert result["moving_abs_rel"] == pytest.approx(0.5)
    assert result["static_abs_rel"] == pytest.approx(0.0)
    assert result["abs_rel"] == pytest.approx(0.5 * 4 / 32)
    assert result["moving_images"] == 2
    plain = task.make_metrics()
    plain.update({"image": np.zeros((2, 32, 32, 3), np.uint8), "depth": gt}, {"depth": pred})
    assert not any(k.startswith(("moving_", "static_")) for k in plain.result())
