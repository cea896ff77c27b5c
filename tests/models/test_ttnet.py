"""Tests of the task-transfer network: shapes, paper parameter count, input transforms, config, training."""

import numpy as np
import pytest

import keras

from taskology_tf.models.ttnet import (
    build_ttnet,
    make_masked_cross_entropy,
    masked_l1_loss,
    one_hot_labels,
    train_ttnet,
    ttnet_keys,
)


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def _paper_ttnet_params(c_in, c_out, w=(64, 128, 256)):
    """3x3 convs with biases: contracting 2 per level, expansive 2 per level (input doubled by the skip), 1x1 out."""
    def conv(i, o, k=3):
        return k * k * i * o + o
    down = conv(c_in, w[0]) + conv(w[0], w[0]) + conv(w[0], w[1]) + conv(w[1], w[1]) + conv(w[1], w[2]) + conv(w[2], w[2])
    up = conv(w[2], w[1]) + conv(w[1], w[1]) + conv(2 * w[1], w[0]) + conv(w[0], w[0]) + conv(2 * w[0], w[0]) + conv(w[0], w[0])
    return down + up + conv(w[0], c_out, 1)


@pytest.mark.parametrize("c_in, c_out, batch, h, w", [(7, 1, 2, 16, 24), (1, 5, 1, 8, 8)])
def test_shapes_names_and_dtype(c_in, c_out, batch, h, w):
    net = build_ttnet(c_in, c_out, (4, 8, 16), input_key="a", output_key="b", name=f"tt_{c_in}")
    assert ttnet_keys(net) == ("a", "b")
    x = np.random.default_rng(0).normal(size=(batch, h, w, c_in)).astype(np.float32)
    out = net({"a": x})
    assert set(out) == {"b"} and tuple(out["b"].shape) == (batch, h, w, c_out) and out["b"].dtype == "float32"


def test_paper_size_parameter_count_with_and_without_skips():
    net = build_ttnet(7, 1)
    assert _trainable(net) == _paper_ttnet_params(7, 1)
    plain = build_ttnet(7, 1, skip_connections=False, name="plain")
    # Without skips the two upper expansive levels read half the channels.
    assert _trainable(net) - _trainable(plain) == 9 * (128 * 64 + 64 * 64)
    print("paper TTNet (7 -> 1) trainable parameters:", _trainable(net))


def test_softmax_input_makes_logit_offsets_irrelevant_and_scale_matters():
    net = build_ttnet(3, 2, (4, 8), input_transform="softmax", name="soft")
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    a = np.asarray(net({"source": x})["target"])
    b = np.asarray(net({"source": x + 5.0})["target"])  # same probabilities
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    scaled = build_ttnet(1, 2, (4, 8), input_scale=0.0, name="zeroed")
    d = np.random.default_rng(2).uniform(1, 50, size=(1, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(scaled({"source": d})["target"]),
                               np.asarray(scaled({"source": np.zeros_like(d)})["target"]))


def test_output_activation_and_bias():
    net = build_ttnet(2, 1, (4, 8), output_activation="softplus", output_bias=float(np.log(np.expm1(3.0))), name="sp")
    out = np.asarray(net({"source": np.zeros((1, 8, 8, 2), np.float32)})["target"])
    np.testing.assert_allclose(out, 3.0, rtol=1e-5)  # zero input -> zero features -> softplus(bias)


def test_errors():
    with pytest.raises(ValueError, match="multiple of 8"):
        build_ttnet(2, 1, height=12, width=16)
    with pytest.raises(ValueError, match="input_transform"):
        build_ttnet(2, 1, input_transform="sigmoid")
    with pytest.raises(ValueError, match="must differ"):
        build_ttnet(2, 1, input_key="x", output_key="x")
    with pytest.raises(ValueError, match="widths"):
        build_ttnet(2, 1, widths=())


def test_config_round_trip():
    net = build_ttnet(3, 1, (4, 8), input_transform="softmax", input_scale=0.5, name="cfg")
    clone = keras.Model.from_config(net.get_config())
    clone.set_weights(net.get_weights())
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(clone({"source": x})["target"]), np.asarray(net({"source": x})["target"]), rtol=1e-5)


def test_one_hot_labels_and_masked_losses():
    labels = np.array([[[0, 2], [255, 1]]], np.int32)[..., None]
    probs = one_hot_labels(labels, 3)
    np.testing.assert_allclose(probs[0, 0, 1], [0, 0, 1])
    np.testing.assert_allclose(probs[0, 1, 0], [1 / 3] * 3)
    gt = np.array([[[[2.0], [0.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(masked_l1_loss(gt, gt + 1.5)), [1.5])
    ce = make_masked_cross_entropy(3)
    logits = np.log(probs * 0.9 + 0.1 / 3)  # correct class gets 0.9 + 0.1/3
    expected = -np.log(0.9 + 0.1 / 3)
    np.testing.assert_allclose(np.asarray(ce(labels, logits)), [expected], rtol=1e-5)  # ignored pixel excluded


def test_train_ttnet_learns_a_class_to_depth_table():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 3, size=(8, 2, 2)), 4, axis=1), 4, axis=2)  # 4x4 blocks, 8x8
    table = np.array([2.0, 5.0, 9.0], np.float32)
    depth = table[labels][..., None]
    net = build_ttnet(3, 1, (8, 16), output_bias=5.0, name="fit")
    losses = train_ttnet(net, one_hot_labels(labels, 3), depth, "regression", epochs=25, batch_size=8, learning_rate=1e-2)
    print("train_ttnet losses", losses)
    assert len(losses) == 25 and all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(ValueError, match="kind"):
        train_ttnet(net, one_hot_labels(labels, 3), depth, "other")
