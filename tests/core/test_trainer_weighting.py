"""TaskTrainer with a loss weighting: the default is unchanged, strategies train, instance tables resume."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.trainer import TaskTrainer
from taskology_tf.weighting import DynamicWeightAverage, GradNorm, InstanceParameters, UncertaintyWeighting, make_weighting


def _two_term_task(toy):
    """The toy normals task with its loss split into an 'xy' (regression) and a 'z' ('classification') term."""

    class TwoTermTask(type(toy.task_b)):
        loss_kinds = {"z": "classification"}

        def loss_terms(self, batch, predictions):
            err = tf.square(predictions["normals"] - batch["normals"])
            return {"xy": tf.reduce_mean(err[..., :2], axis=[1, 2, 3]), "z": tf.reduce_mean(err[..., 2:], axis=[1, 2, 3])}

        def loss(self, batch, predictions):
            return tf.add_n(list(self.loss_terms(batch, predictions).values()))

    return TwoTermTask("b", "normals", 3, seed=3)


def _trainer(task, data, **kwargs):
    return TaskTrainer(task, [], dedicated=data, batch_size=4, shuffle_buffer=0, **kwargs)


def test_no_weighting_keeps_the_plain_supervised_loss(toy, tmp_path):
    trainer = _trainer(toy.task_a, toy.dataset(8, 1), workdir=str(tmp_path))
    assert trainer.weighting is None
    assert set(trainer.train_step()) == {"supervised", "total"}
    trainer.save()
    names = [name for name, _ in tf.train.list_variables(str(tmp_path / "ckpt"))]
    assert not any(name.startswith("weighting") for name in names)


def test_equal_weighting_of_one_term_is_plain_training(toy):
    plain = _trainer(toy.task_a, toy.dataset(8, 1))
    equal = _trainer(toy.task_a, toy.dataset(8, 1), weighting="equal")
    for _ in range(3):
        a, b = plain.train_step(), equal.train_step()
        assert b["supervised"] == pytest.approx(a["supervised"], rel=1e-6)
        assert b["supervised/a"] == pytest.approx(a["supervised"], rel=1e-6) and b["weight/a"] == 1.0
    for x, y in zip(plain.model.get_weights(), equal.model.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_instance_weighting_trains_and_resumes_with_its_table(toy, tmp_path):
    data = toy.dataset(8, 1)  # ids 1000..1007
    trainer = _trainer(toy.task_a, data, workdir=str(tmp_path), weighting="instance", checkpoint_every=0)
    assert isinstance(trainer.weighting, InstanceParameters) and trainer.weighting.terms == ("a",)
    assert trainer.weighting.epoch_steps == 2  # 8 examples / batch 4
    first = trainer.train_step()
    assert {"supervised", "supervised/a", "weight/a", "total"} == set(first)
    assert first["supervised"] == pytest.approx(0.5 * first["supervised/a"], rel=1e-5)  # l / (2 sigma^2) at s = 0
    trainer.train(4)
    snap = trainer.weighting.snapshot()
    assert sorted(snap["id"]) == list(range(1000, 1008))
    assert np.all(snap["log_variance"] != 0)
    momentum = trainer.weighting.momentum.numpy()
    weights = trainer.model.get_weights()
    # one snapshot per epoch (2 steps) under <workdir>/instance_parameters
    assert sorted(p.name for p in (tmp_path / "instance_parameters").iterdir()) == ["epoch-1.npz", "epoch-2.npz"]

    again = _trainer(toy.task_a, data, workdir=str(tmp_path), weighting="instance")
    assert again.step == 4
    resumed = again.weighting.snapshot()
    np.testing.assert_array_equal(resumed["id"], snap["id"])
    np.testing.assert_array_equal(resumed["log_variance"], snap["log_variance"])
    np.testing.assert_array_equal(again.weighting.momentum.numpy(), momentum)
    assert int(again.weighting.epoch.numpy()) == 2
    for x, y in zip(weights, again.model.get_weights()):
        np.testing.assert_array_equal(x, y)
    again.train(6)
    assert again.step == 6 and again.weighting.size == 8


def test_instance_weighting_needs_example_ids(toy):
    with pytest.raises(ValueError, match="keys on the example 'id', which the dedicated data lacks"):
        _trainer(toy.task_a, toy.dataset(8, 1, keys=("image", "depth")), weighting="instance")
    trainer = _trainer(toy.task_a, toy.dataset(8, 1), weighting="instance")
    batch = {k: tf.constant(v) for k, v in toy.examples(4, 2).items() if k != "id"}
    with pytest.raises(ValueError, match="needs the dedicated batch's example 'id'"):
        trainer.train_step(dedicated_batch=batch)
    with pytest.raises(ValueError, match="XLA cannot compile"):
        _trainer(toy.task_a, toy.dataset(8, 1), weighting="instance", jit_compile=True)


@pytest.mark.parametrize("name", ["uncertainty", "gradnorm", "dwa", "gls", "instance"])
def test_strategies_weigh_a_tasks_loss_terms(toy, name):
    trainer = _trainer(_two_term_task(toy), toy.dataset(8, 2), weighting=name)
    w = trainer.weighting
    assert w.terms == ("xy", "z") and w.kinds == ("regression", "classification")
    for _ in range(6):
        values = trainer.train_step()
    assert {"supervised/xy", "supervised/z", "weight/xy", "weight/z"} <= set(values)
    if isinstance(w, UncertaintyWeighting):
        assert np.all(w.log_variances.numpy() != 0)
    elif isinstance(w, GradNorm):
        assert float(np.sum(w.weights.numpy())) == pytest.approx(2.0, rel=1e-5)
        assert not np.allclose(w.weights.numpy(), 1.0)
    elif isinstance(w, DynamicWeightAverage):
        assert int(w.epoch.numpy()) == 3 and not np.allclose(w.weights.numpy(), 1.0)
    elif isinstance(w, InstanceParameters):
        assert w.size == 8


def test_a_weighting_object_for_other_terms_is_a_clear_error(toy):
    trainer = _trainer(toy.task_a, toy.dataset(8, 1), weighting=make_weighting("equal", terms=["depth"]))
    with pytest.raises(ValueError, match=r"built for loss terms \['depth'\] but got terms \['a'\]"):
        trainer.train_step()
    with pytest.raises(TypeError, match="weighting must be a name or a Weighting"):
        _trainer(toy.task_a, toy.dataset(8, 1), weighting=3)


def test_weighting_under_a_strategy_is_not_implemented(toy):
    with pytest.raises(NotImplementedError, match="default strategy only"):
        _trainer(toy.task_a, toy.dataset(8, 1), weighting="instance", strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_resuming_a_run_with_another_weighting_says_so(toy, tmp_path):
    _trainer(toy.task_a, toy.dataset(8, 1), workdir=str(tmp_path)).train(1)
    with pytest.raises(RuntimeError, match="resume with the weighting that wrote the run"):
        _trainer(toy.task_a, toy.dataset(8, 1), workdir=str(tmp_path), weighting="instance")


def test_gin_chooses_and_configures_the_weighting(toy):
    import gin

    with gin.unlock_config():
        gin.parse_config(["TaskTrainer.weighting = 'instance'", "InstanceParameters.learning_rate = 4.0",
                          "InstanceParameters.capacity = 64"])
    try:
        trainer = _trainer(toy.task_a, toy.dataset(8, 1))
    finally:
        gin.clear_config()
    assert isinstance(trainer.weighting, InstanceParameters)
    assert trainer.weighting.learning_rate == 4.0 and trainer.weighting.capacity == 64
