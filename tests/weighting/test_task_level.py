"""Task-level weightings: equal, uncertainty (Kendall), DWA, GLS, GradNorm, and the by-name factory."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.weighting import (
    DynamicWeightAverage,
    EqualWeighting,
    GeometricLossStrategy,
    GradNorm,
    UncertaintyWeighting,
    make_weighting,
)
from taskology_tf.weighting.task_level import dwa_weights, gradnorm_weight_gradient, uncertainty_loss


def _losses(**terms):
    return {k: tf.constant(v, tf.float32) for k, v in terms.items()}


def test_equal_is_the_plain_sum():
    w = make_weighting("equal", terms=["a", "b"])
    total, weights = w.combine(_losses(a=[1.0, 3.0], b=[10.0, 20.0]))
    assert float(total) == pytest.approx(2.0 + 15.0)
    assert {k: float(v) for k, v in weights.items()} == {"a": 1.0, "b": 1.0}
    assert isinstance(w, EqualWeighting) and w.trainable_variables == []


@pytest.mark.parametrize("kind, optimum", [("regression", lambda l: l), ("classification", lambda l: 2 * l)])
def test_uncertainty_loss_is_minimal_at_the_loss_variance(kind, optimum):
    """d/ds [c exp(-s) L + s/2] = 0 at exp(s) = L (regression, c = 1/2) or 2L (classification, c = 1)."""
    loss = tf.constant([0.3])
    s = tf.Variable(np.log([optimum(0.3)]).astype(np.float32))
    scale = np.float32([0.5 if kind == "regression" else 1.0])
    with tf.GradientTape() as tape:
        value = uncertainty_loss(loss, s, scale)
    assert abs(float(tape.gradient(value, s)[0])) < 1e-6


def test_uncertainty_weights_become_inversely_proportional_to_noise_variance():
    """Two regression terms y_k ~ N(m_k, v_k): fitting m_k with learned log-variances gives exp(s_k) -> v_k,
    so the weights 1/(2 sigma_k^2) end in the ratio v_2 / v_1."""
    rng = np.random.default_rng(0)
    variances = np.array([0.25, 4.0])
    y = rng.normal([1.0, -2.0], np.sqrt(variances), size=(2000, 2)).astype(np.float32)
    sample_var = y.var(axis=0)
    w = UncertaintyWeighting(["a", "b"], learning_rate=0.05)
    mean = tf.Variable([0.0, 0.0])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            err = tf.square(y - mean)
            total, weights = w.combine({"a": err[:, 0], "b": err[:, 1]})
        grads = tape.gradient(total, [mean] + w.trainable_variables)
        mean.assign_sub(0.1 * grads[0])
        w.apply_gradients(grads[1:])
        return weights

    for _ in range(600):
        weights = step()
    np.testing.assert_allclose(np.exp(w.log_variances.numpy()), sample_var, rtol=0.05)
    ratio = float(weights["a"] / weights["b"])
    assert ratio == pytest.approx(variances[1] / variances[0], rel=0.1)


def test_dwa_weights_follow_loss_ratios():
    w = make_weighting("dwa", terms=["a", "b", "c"], temperature=2.0)
    losses = _losses(a=[1.0], b=[1.0], c=[1.0])
    assert isinstance(w, DynamicWeightAverage)
    epochs = [[1.0, 2.0, 4.0], [0.5, 1.8, 4.0], [0.2, 1.8, 5.0]]
    seen = []
    for means in epochs:
        seen.append({k: float(v) for k, v in w.combine(losses)[1].items()})
        w.end_epoch(dict(zip("abc", means)))
    final = np.array([float(v) for v in w.combine(losses)[1].values()])
    # Equal weights until two epochs are known, then n softmax(r / T) of the last two epochs' ratios.
    assert seen[0] == seen[1] == {"a": 1.0, "b": 1.0, "c": 1.0}
    r = np.array([0.5 / 1.0, 1.8 / 2.0, 4.0 / 4.0])
    np.testing.assert_allclose(list(seen[2].values()), 3 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)
    r = np.array([0.2 / 0.5, 1.8 / 1.8, 5.0 / 4.0])
    np.testing.assert_allclose(final, 3 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)
    assert final.sum() == pytest.approx(3.0) and final[0] < final[1] < final[2]  # slowest-falling term weighs most
    np.testing.assert_allclose(dwa_weights(np.float32([2, 2]), np.float32([1, 1]), 1.0), [1.0, 1.0])


def test_dwa_epochs_from_steps():
    """after_step averages the steps' losses over ``epoch_steps`` and ends the epoch."""
    w = DynamicWeightAverage(["a", "b"], temperature=1.0, epoch_steps=2)
    for step, (a, b) in enumerate([(4, 4), (2, 2), (1, 3), (1, 1), (1, 1), (1, 1)], start=1):
        w.after_step(step, {"a": float(a), "b": float(b)})
    assert int(w.epoch.numpy()) == 3
    # epoch means a: 3, 1, 1; b: 3, 2, 1 -> ratios of the last two epochs: a 1, b 0.5
    r = np.array([1.0, 0.5])
    np.testing.assert_allclose(w.weights.numpy(), 2 * np.exp(r) / np.exp(r).sum(), rtol=1e-6)


def test_gls_is_the_geometric_mean():
    w = make_weighting("gls", terms=["a", "b", "c"])
    assert isinstance(w, GeometricLossStrategy)
    losses = {k: tf.Variable(v) for k, v in {"a": [2.0, 2.0], "b": [0.5, 1.5], "c": [8.0, 8.0]}.items()}
    with tf.GradientTape() as tape:
        total, weights = w.combine(losses)
    assert float(total) == pytest.approx((2.0 * 1.0 * 8.0) ** (1 / 3), rel=1e-6)
    # The implied weight of each term is d total / d L_k = GM / (n L_k) (per-example grads are that / B).
    grads = tape.gradient(total, [losses[k] for k in "abc"])
    for k, g in zip("abc", grads):
        assert float(tf.reduce_sum(g)) == pytest.approx(float(weights[k]), rel=1e-5)


def test_gradnorm_gradient_signs():
    """Equal gradient norms: the term that trains slower (higher L(t)/L(0)) gets a larger target -> its weight grows."""
    grad, loss = gradnorm_weight_gradient(np.float32([1, 1]), np.float32([1, 1]), np.float32([0.9, 0.1]),
                                          np.float32([1, 1]), alpha=1.0)
    assert float(grad[0]) < 0 < float(grad[1]) and float(loss) > 0
    grad, loss = gradnorm_weight_gradient(np.float32([1, 1]), np.float32([3, 1]), np.float32([1, 1]),
                                          np.float32([1, 1]), alpha=1.0)
    assert float(grad[0]) > 0 > float(grad[1])  # alpha irrelevant at equal rates: balance the norms


def test_gradnorm_moves_towards_equal_gradient_norms():
    """Two terms on a shared weight vector whose gradients differ 10x: the weighted gradient norms equalise."""
    shared = tf.Variable([1.0, -1.0, 0.5])
    w = make_weighting("gradnorm", terms=["big", "small"], alpha=0.0, learning_rate=0.05)
    assert isinstance(w, GradNorm) and w.persistent_tape

    @tf.function
    def step(update):
        with tf.GradientTape(persistent=True) as tape:
            means = {"big": 10.0 * tf.reduce_sum(tf.square(shared)), "small": tf.reduce_sum(tf.square(shared))}
            w.combine(means)
        inputs = w.update_inputs(tape, means, model=_Shared(shared))
        if update:
            w.apply_gradients([], inputs)
        return inputs["grad_norms"] * tf.convert_to_tensor(w.weights)  # G_k = w_k ||grad_W L_k||

    g = step(False)
    assert float(g[0] / g[1]) == pytest.approx(10.0)
    for _ in range(100):
        step(True)
    g = step(False)
    assert abs(np.log(float(g[0] / g[1]))) < 0.25  # from 10x apart to within ~25%
    assert float(tf.reduce_sum(w.weights)) == pytest.approx(2.0, rel=1e-5)
    assert float(w.weights[0]) < float(w.weights[1])


class _Shared:
    """A stand-in model whose only trainable variable is the shared vector."""

    def __init__(self, var):
        self.trainable_variables = [var]


def test_state_round_trips_through_a_checkpoint(tmp_path):
    u = UncertaintyWeighting(["a", "b"], learning_rate=0.1)
    with tf.GradientTape() as tape:
        total, _ = u.combine(_losses(a=[3.0], b=[0.1]))
    u.apply_gradients(tape.gradient(total, u.trainable_variables))
    d = DynamicWeightAverage(["a", "b"])
    for means in ([1.0, 1.0], [0.5, 1.0]):
        d.end_epoch(dict(zip("ab", means)))
    path = tf.train.Checkpoint(u=u, d=d).write(str(tmp_path / "w"))
    u2, d2 = UncertaintyWeighting(["a", "b"], learning_rate=0.1), DynamicWeightAverage(["a", "b"])
    tf.train.Checkpoint(u=u2, d=d2).read(path).assert_consumed()
    np.testing.assert_array_equal(u2.log_variances.numpy(), u.log_variances.numpy())
    assert int(u2.optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(d2.weights.numpy(), d.weights.numpy())
    assert int(d2.epoch.numpy()) == 2


def test_factory_and_errors():
    with pytest.raises(ValueError, match="Unknown weighting 'nope'"):
        make_weighting("nope", terms=["a"])
    with pytest.raises(ValueError, match="distinct names"):
        make_weighting("equal", terms=["a", "a"])
    with pytest.raises(ValueError, match=r"kinds\['a'\] must be one of"):
        make_weighting("equal", terms=["a"], kinds={"a": "ranking"})
    with pytest.raises(ValueError, match=r"kinds names terms \['b'\]"):
        make_weighting("equal", terms=["a"], kinds={"b": "regression"})
    with pytest.raises(ValueError, match=r"built for loss terms \['a', 'b'\] but got terms \['a'\]"):
        make_weighting("uncertainty", terms=["a", "b"]).combine(_losses(a=[1.0]))


def test_gin_configures_strategies_made_by_name():
    with gin.unlock_config():
        gin.parse_config("DynamicWeightAverage.temperature = 0.5")
    try:
        assert make_weighting("dwa", terms=["a", "b"]).temperature == 0.5
    finally:
        gin.clear_config()
