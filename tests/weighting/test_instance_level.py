"""Instance-level task parameters: the loss, sparse momentum SGD, clamping, the id table, checkpoints, reports."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.data.synthetic.dataset import example_id
from taskology_tf.weighting import InstanceParameters, make_weighting
from taskology_tf.weighting.instance_level import instance_loss


def _step(params, losses, ids):
    """One training step of the parameters alone on fixed per-example losses (term -> [B])."""
    with tf.GradientTape() as tape:
        total, weights = params.combine({k: tf.constant(v, tf.float32) for k, v in losses.items()},
                                        ids=tf.constant(ids, tf.int64))
    params.apply_gradients(tape.gradient(total, params.trainable_variables))
    return total, weights


def _rows(params, ids):
    rows = params.rows(tf.constant(ids, tf.int64))
    return tf.gather(params.log_variances, rows).numpy(), tf.gather(params.momentum, rows).numpy()


def test_loss_matches_the_paper():
    """l / (2 sigma^2) + log sigma^2 for regression, l / sigma^2 + log sigma^2 for classification (Eqs. 2, 4, 6)."""
    l = np.float32([[2.0, 3.0]])
    s = np.float32([[0.5, -1.0]])
    expected = 2.0 / (2 * np.exp(0.5)) + 0.5 + 3.0 / np.exp(-1.0) - 1.0
    np.testing.assert_allclose(instance_loss(l, s, np.float32([0.5, 1.0])), [expected], rtol=1e-6)
    params = make_weighting("instance", terms=["r", "c"], kinds={"c": "classification"}, capacity=4)
    total, weights = params.combine({"r": tf.constant([2.0]), "c": tf.constant([3.0])}, ids=tf.constant([7], tf.int64))
    assert float(total) == pytest.approx(2.0 / 2 + 3.0)  # s starts at 0
    assert float(weights["r"]) == 0.5 and float(weights["c"]) == 1.0


@pytest.mark.parametrize("kind, optimum", [("regression", lambda l: np.log(l / 2)), ("classification", np.log)])
def test_parameters_converge_to_the_per_example_optimum(kind, optimum):
    """With fixed losses, s_i -> argmin = log(l_i / 2) (regression) or log(l_i) (classification): a noisy example
    (large loss) ends with a much larger sigma than clean ones."""
    params = InstanceParameters(["t"], {"t": kind}, capacity=8, learning_rate=1.0, momentum=0.9)
    losses = np.float32([0.2, 0.3, 0.25, 20.0])  # the last example is noisy
    step = tf.function(lambda: _step(params, {"t": losses}, [10, 11, 12, 13]))
    for _ in range(150):
        step()
    values, _ = _rows(params, [10, 11, 12, 13])
    np.testing.assert_allclose(values[:, 0], optimum(losses), atol=0.02)
    ids, ranked = params.ranking("t")
    assert ids[0] == 13 and ranked[0] == pytest.approx(values[3, 0])


def test_absent_rows_do_not_move():
    """Sparse SGD: rows not in the batch keep their values and their momentum (no momentum drift)."""
    params = InstanceParameters(["a", "b"], capacity=16, learning_rate=0.5, momentum=0.9)
    all_ids = list(range(100, 108))
    _step(params, {"a": np.linspace(0.1, 5, 8), "b": np.linspace(3, 0.2, 8)}, all_ids)
    absent_before = _rows(params, all_ids[4:])
    present_before = _rows(params, all_ids[:4])
    assert np.all(absent_before[1] != 0)  # they carry momentum that dense SGD would keep applying
    for _ in range(5):
        _step(params, {"a": np.full(4, 2.0), "b": np.full(4, 0.1)}, all_ids[:4])
    absent_after = _rows(params, all_ids[4:])
    np.testing.assert_array_equal(absent_after[0], absent_before[0])
    np.testing.assert_array_equal(absent_after[1], absent_before[1])
    assert np.all(_rows(params, all_ids[:4])[0] != present_before[0])


def test_clamping_holds_at_the_bound():
    params = InstanceParameters(["t"], capacity=4, learning_rate=50.0, momentum=0.9)
    for _ in range(3):
        _step(params, {"t": [1e4, 0.0]}, [1, 2])
    values, _ = _rows(params, [1, 2])
    np.testing.assert_array_equal(values[:, 0], [4.0, -4.0])


def test_repeated_ids_in_a_batch_sum_their_gradients():
    """An example drawn twice in a batch gets one update with both gradients summed."""
    twice = InstanceParameters(["t"], capacity=4, learning_rate=0.1, momentum=0.0)
    _step(twice, {"t": [3.0, 3.0]}, [5, 5])
    once = InstanceParameters(["t"], capacity=4, learning_rate=0.1, momentum=0.0)
    once.apply_row_gradients(tf.constant([0], tf.int64), tf.constant([[2 * 0.5 * (1 - 0.5 * 3.0)]]))
    assert twice.size == 1
    np.testing.assert_allclose(_rows(twice, [5])[0], _rows(once, [0])[0], rtol=1e-6)


def test_table_is_on_the_host_and_keys_arbitrary_int64_ids():
    params = InstanceParameters(["t"], capacity=4)
    assert params.log_variances.device.endswith("CPU:0") and params.momentum.device.endswith("CPU:0")
    ids = [example_id(3, style="sim", seed=9), example_id(3, style="real", seed=9), -5]
    rows = params.rows(tf.constant(ids, tf.int64)).numpy()
    np.testing.assert_array_equal(rows, [0, 1, 2])
    np.testing.assert_array_equal(params.rows(tf.constant(ids[::-1], tf.int64)).numpy(), [2, 1, 0])
    np.testing.assert_array_equal(params.rows(tf.constant([-5], tf.int32)).numpy(), [2])  # any integer dtype
    assert params.size == 3


def test_capacity_and_id_errors():
    params = InstanceParameters(["t"], capacity=3)
    params.rows(tf.constant([1, 2], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more distinct example ids than capacity=3"):
        params.rows(tf.constant([1, 3, 4], tf.int64))
    with pytest.raises(ValueError, match="example ids must be integers"):
        params.rows(tf.constant([1.0]))
    with pytest.raises(ValueError, match="needs ids"):
        params.combine({"t": tf.constant([1.0])})
    with pytest.raises(ValueError, match="capacity must be positive"):
        InstanceParameters(["t"], capacity=0)
    with pytest.raises(ValueError, match="momentum"):
        InstanceParameters(["t"], momentum=1.0)


def test_checkpoint_round_trip(tmp_path):
    params = InstanceParameters(["a", "b"], {"b": "classification"}, capacity=32, learning_rate=0.3)
    for i in range(3):
        _step(params, {"a": [1.0 + i, 5.0, 0.1], "b": [0.5, 0.2, 3.0]}, [7 * i, 1 << 40, 3])
    ckpt = tf.train.Checkpoint(weighting=params)
    path = ckpt.write(str(tmp_path / "params"))
    fresh = InstanceParameters(["a", "b"], {"b": "classification"}, capacity=32, learning_rate=0.3)
    tf.train.Checkpoint(weighting=fresh).read(path).assert_consumed()
    before, after = params.snapshot(), fresh.snapshot()
    np.testing.assert_array_equal(after["id"], before["id"])
    np.testing.assert_array_equal(after["log_variance"], before["log_variance"])
    np.testing.assert_array_equal(fresh.momentum.numpy(), params.momentum.numpy())
    assert fresh.size == params.size == 5
    # The id mapping survives: known ids keep their rows, a new id takes the next free row.
    np.testing.assert_array_equal(fresh.rows(tf.constant([3, 1 << 40, 99], tf.int64)).numpy(),
                                  np.append(params.rows(tf.constant([3, 1 << 40], tf.int64)).numpy(), 5))


def test_snapshots_per_epoch(tmp_path):
    params = InstanceParameters(["t"], capacity=8, epoch_steps=2, snapshot_dir=str(tmp_path))
    for step in range(1, 5):
        _, weights = _step(params, {"t": [0.1, 4.0]}, [step % 2, 10])
        params.after_step(step, {"t": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1.npz", "epoch-2.npz"]
    with np.load(tmp_path / "epoch-2.npz") as snap:
        np.testing.assert_array_equal(snap["id"], [1, 10, 0])
        assert snap["log_variance"].shape == (3, 1) and list(snap["terms"]) == ["t"] and int(snap["epoch"]) == 2
        np.testing.assert_array_equal(snap["log_variance"], params.snapshot()["log_variance"])


def test_a_corrupted_label_is_ranked_first_by_a_trained_model():
    """Linear regression y = 2x + 1 with one corrupted label: training the model and the instance parameters
    together makes the corrupted example's sigma the largest (the paper's noise detection, Sec. 4.6)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 16).astype(np.float32)
    y = 2 * x + 1 + rng.normal(0, 0.2, 16).astype(np.float32)
    y[5] += 3.0
    ids = tf.constant(np.arange(16) * 1000 + 7, tf.int64)
    params = InstanceParameters(["y"], capacity=16, learning_rate=1.0, momentum=0.9)
    weights = tf.Variable([0.0, 0.0])

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            pred = weights[0] * tf.gather(x, batch) + weights[1]
            total, _ = params.combine({"y": tf.square(pred - tf.gather(y, batch))}, ids=tf.gather(ids, batch))
        grads = tape.gradient(total, [weights] + params.trainable_variables)
        weights.assign_sub(0.02 * grads[0])
        params.apply_gradients(grads[1:])

    for epoch in range(60):
        for batch in rng.permutation(16).reshape(4, 4):
            step(tf.constant(batch))
    ranked, values = params.ranking("y")
    assert ranked[0] == 5 * 1000 + 7
    assert values[0] > values[1] + 1.0
    np.testing.assert_allclose(weights.numpy(), [2.0, 1.0], atol=0.15)  # the fit ignores the outlier
