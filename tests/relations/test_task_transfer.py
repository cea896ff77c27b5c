"""Tests of the learned task-transfer relation: zero iff consistent, gradient routing, frozen TTNet, loading."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from taskology_tf.core.registry import RELATIONS
from taskology_tf.models.ttnet import build_ttnet
from taskology_tf.relations.task_transfer import symmetric_kl, task_transfer, transfer_consistency

TABLE = np.array([4.0, 10.0, 40.0], np.float32)  # depth of each class, metres


def _seg_to_depth_ttnet():
    """A perfect TTNet of a world where depth is a function of the class: softmax -> 1x1 conv with the table."""
    x = keras.Input((None, None, 3), name="segmentation_logits")
    p = keras.layers.Softmax()(x)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="table")
    y = keras.layers.Activation("linear", dtype="float32", name="depth")(conv(p))
    conv.set_weights([TABLE.reshape(1, 1, 3, 1)])
    return keras.Model({"segmentation_logits": x}, {"depth": y}, name="seg_to_depth")


def _depth_to_seg_ttnet(alpha=1.0):
    """logits_c = -alpha (d - table_c)^2 up to a per-pixel constant: 2 alpha table_c d - alpha table_c^2."""
    x = keras.Input((None, None, 1), name="depth")
    conv = keras.layers.Conv2D(3, 1, name="quadratic")
    y = keras.layers.Activation("linear", dtype="float32", name="segmentation_logits")(conv(x))
    conv.set_weights([(2 * alpha * TABLE).reshape(1, 1, 1, 3), -alpha * TABLE**2])
    return keras.Model({"depth": x}, {"segmentation_logits": y}, name="depth_to_seg")


def _labels(seed=0, batch=2, h=3, w=4):
    return np.random.default_rng(seed).integers(0, 3, (batch, h, w))


def test_registered_and_reads():
    assert RELATIONS["task_transfer"] is task_transfer
    rel = task_transfer(source="seg", target="dep", ttnet=_seg_to_depth_ttnet(), source_weight=0.5)
    assert rel.reads == {"seg": ("segmentation_logits",), "dep": ("depth",)}
    assert rel.weight_for("seg") == 0.5 and rel.weight_for("dep") == 1.0


def test_regression_zero_for_consistent_predictions_positive_otherwise():
    rel = task_transfer(source="seg", target="dep", ttnet=_seg_to_depth_ttnet())
    labels = _labels()
    logits = 30.0 * np.eye(3, dtype=np.float32)[labels]
    depth = TABLE[labels][..., None]
    consistent = rel.loss({}, {"seg": {"segmentation_logits": logits}, "dep": {"depth": depth}}).numpy()
    assert consistent.shape == (2,)
    np.testing.assert_allclose(consistent, 0.0, atol=1e-5)
    off = rel.loss({}, {"seg": {"segmentation_logits": logits}, "dep": {"depth": depth + 1.0}}).numpy()
    np.testing.assert_allclose(off, 1.0, rtol=1e-5)
    with pytest.raises(KeyError, match="needs predictions"):
        rel.loss({}, {"seg": {"segmentation_logits": logits}})


def test_classification_zero_for_consistent_predictions_positive_otherwise():
    ttnet = _depth_to_seg_ttnet()
    rel = task_transfer(source="dep", target="seg", source_key="depth", target_key="segmentation_logits",
                        kind="classification", ttnet=ttnet)
    labels = _labels(1)
    depth = TABLE[labels][..., None]
    own = ttnet({"depth": depth})["segmentation_logits"]  # exactly what the TTNet transfers
    np.testing.assert_allclose(rel.loss({}, {"dep": {"depth": depth}, "seg": {"segmentation_logits": own}}).numpy(),
                               0.0, atol=1e-6)
    shifted = np.roll(np.asarray(own), 1, axis=-1)  # another class distribution
    assert np.all(rel.loss({}, {"dep": {"depth": depth}, "seg": {"segmentation_logits": shifted}}).numpy() > 1.0)


def test_symmetric_kl_by_hand_and_pure_errors():
    a = np.log(np.array([[[[0.5, 0.5]]]], np.float32))
    b = np.log(np.array([[[[0.9, 0.1]]]], np.float32))
    kl = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1) + 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    np.testing.assert_allclose(symmetric_kl(a, b).numpy(), [[[kl]]], rtol=1e-5)
    with pytest.raises(ValueError, match="same \\[H, W, C\\]"):
        transfer_consistency(np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 2, 2, 3), np.float32), "regression")
    with pytest.raises(ValueError, match="kind"):
        transfer_consistency(np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 2, 2, 1), np.float32), "ranking")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_gradients_reach_only_the_live_prediction_and_never_the_ttnet(kind):
    if kind == "regression":
        ttnet, src_key, tgt_key, c_in, c_out = _seg_to_depth_ttnet(), "segmentation_logits", "depth", 3, 1
    else:
        ttnet, src_key, tgt_key, c_in, c_out = _depth_to_seg_ttnet(0.01), "depth", "segmentation_logits", 1, 3
    rel = task_transfer(source="a", target="b", source_key=src_key, target_key=tgt_key, kind=kind, ttnet=ttnet)
    assert ttnet.trainable_variables == [] and len(ttnet.non_trainable_variables) > 0
    rng = np.random.default_rng(2)
    src = tf.Variable(rng.uniform(1, 5, (1, 2, 3, c_in)).astype(np.float32))
    tgt = tf.Variable(rng.normal(size=(1, 2, 3, c_out)).astype(np.float32))
    for live in ("a", "b"):  # the trainer of `live` passes the other task's predictions with stop_gradient
        with tf.GradientTape(persistent=True) as tape:
            a = src if live == "a" else tf.stop_gradient(src)
            b = tgt if live == "b" else tf.stop_gradient(tgt)
            loss = tf.reduce_sum(rel.loss({}, {"a": {src_key: a}, "b": {tgt_key: b}}))
        g_src, g_tgt = tape.gradient(loss, [src, tgt])
        g_net = tape.gradient(loss, ttnet.weights)
        live_grad, peer_grad = (g_src, g_tgt) if live == "a" else (g_tgt, g_src)
        assert live_grad is not None and float(tf.reduce_max(tf.abs(live_grad))) > 0, live
        assert peer_grad is None, live
        assert all(g is None for g in g_net)  # the TTNet is frozen: no weight ever receives a gradient


def test_loads_trained_ttnet_from_weights_and_keras_files(tmp_path):
    net = build_ttnet(3, 1, (4, 8), input_key="segmentation_logits", output_key="depth", input_transform="softmax",
                      output_activation="softplus", name="to_load")
    net.save_weights(str(tmp_path / "t.weights.h5"))
    net.save(str(tmp_path / "t.keras"))
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 3)).astype(np.float32)
    depth = np.full((1, 8, 8, 1), 5.0, np.float32)
    expected = np.mean(np.abs(np.asarray(net({"segmentation_logits": x})["depth"]) - 5.0))
    from_weights = task_transfer(source="s", target="d", ttnet_path=str(tmp_path / "t.weights.h5"), in_channels=3,
                                 out_channels=1, widths=(4, 8), output_activation="softplus")
    from_keras = task_transfer(source="s", target="d", ttnet_path=str(tmp_path / "t.keras"))
    for rel in (from_weights, from_keras):
        value = rel.loss({}, {"s": {"segmentation_logits": x}, "d": {"depth": depth}}).numpy()
        np.testing.assert_allclose(value, [expected], rtol=1e-5)
    with pytest.raises(ValueError, match="in_channels and out_channels"):
        task_transfer(ttnet_path=str(tmp_path / "t.weights.h5"))
    with pytest.raises(ValueError, match="expects 3"):
        from_keras.loss({}, {"s": {"segmentation_logits": x[..., :2]}, "d": {"depth": depth}})


def test_factory_errors():
    with pytest.raises(ValueError, match="exactly one"):
        task_transfer()
    with pytest.raises(ValueError, match="separate tasks"):
        task_transfer(source="x", target="x", ttnet=_seg_to_depth_ttnet())
    with pytest.raises(ValueError, match="kind"):
        task_transfer(kind="ranking", ttnet=_seg_to_depth_ttnet())
    with pytest.raises(ValueError, match=".keras"):
        task_transfer(ttnet_path="model.h5")
