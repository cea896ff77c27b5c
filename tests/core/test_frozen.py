"""Frozen trainers and initial weights from another run's checkpoint (TaskTrainer.frozen / init_checkpoint)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.collective import Collective
from taskology_tf.core.trainer import TaskTrainer, resolve_checkpoint


def _weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _trained_source(toy, workdir, steps=2):
    """Task a trained supervised for ``steps`` steps, checkpointed under ``workdir``; its final weights."""
    src = TaskTrainer(toy.task_a, workdir=workdir, dedicated=toy.dataset(8, 1), batch_size=4, shuffle_buffer=0)
    src.train(steps)
    return src.model.get_weights()


def test_init_checkpoint_restores_the_network_only(toy, tmp_path):
    source = _trained_source(toy, str(tmp_path / "src"))
    fresh = TaskTrainer(toy.task_a, dedicated=toy.dataset(8, 1), batch_size=4).model.get_weights()
    assert not _weights_equal(source, fresh)  # training moved the weights: the comparison below means something
    for given in (tmp_path / "src", tmp_path / "src" / "ckpt", resolve_checkpoint(str(tmp_path / "src"))):
        t = TaskTrainer(toy.task_a, workdir=str(tmp_path / f"dst{len(str(given))}"), dedicated=toy.dataset(8, 1),
                        batch_size=4, init_checkpoint=str(given))
        assert _weights_equal(t.model.get_weights(), source)
        assert t.step == 0 and int(t.optimizer.iterations.numpy()) == 0  # neither step nor optimizer restored


def test_own_checkpoint_wins_over_init_checkpoint(toy, tmp_path):
    _trained_source(toy, str(tmp_path / "src"))
    own = _trained_source(toy, str(tmp_path / "own"), steps=3)
    t = TaskTrainer(toy.task_a, workdir=str(tmp_path / "own"), dedicated=toy.dataset(8, 1), batch_size=4,
                    init_checkpoint=str(tmp_path / "src"))
    assert t.step == 3 and _weights_equal(t.model.get_weights(), own)


def test_init_checkpoint_errors(toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        TaskTrainer(toy.task_a, init_checkpoint=str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        TaskTrainer(toy.task_a, init_checkpoint=str(tmp_path / "empty"))
    # Task b's network (3 output channels) cannot initialise task a's (1 channel).
    TaskTrainer(toy.task_b, workdir=str(tmp_path / "b"), dedicated=toy.dataset(8, 2), batch_size=4).train(1)
    with pytest.raises(ValueError, match="does not match"):
        TaskTrainer(toy.task_a, init_checkpoint=str(tmp_path / "b"))


def test_frozen_trainer_computes_nothing_but_evaluates(toy, tmp_path):
    t = TaskTrainer(toy.task_a, workdir=str(tmp_path / "a"), dedicated=toy.dataset(8, 1), eval_data=toy.dataset(4, 3),
                    batch_size=4, frozen=True)
    before = t.model.get_weights()
    assert t.compute() is None and t.train_step() is None
    with pytest.raises(RuntimeError, match="frozen"):
        t.apply([tf.zeros_like(v) for v in t.model.trainable_variables])
    metrics = t.train(5)  # returns at once, saves and evaluates
    assert t.step == 0 and _weights_equal(t.model.get_weights(), before)
    assert metrics["mse"] > 0 and t._manager.latest_checkpoint.endswith("ckpt-0")


def test_collective_trains_around_a_frozen_peer(toy, tmp_path):
    """Row-C style: a frozen a (initialised from a trained run) supervises b through the relation."""
    source = _trained_source(toy, str(tmp_path / "src"))
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], workdir=str(tmp_path / "run" / "a"), dedicated=toy.dataset(8, 1),
                     eval_data=toy.dataset(4, 3), batch_size=4, frozen=True, init_checkpoint=str(tmp_path / "src"))
    tb = TaskTrainer(toy.task_b, [rel], workdir=str(tmp_path / "run" / "b"), eval_data=toy.dataset(4, 4),
                     batch_size=4, shuffle_buffer=0)
    coll = Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4,
                      shuffle_buffer=0)
    assert ta.peers == {} and "a" in tb.peers
    b_before = tb.model.get_weights()
    losses = coll.round()
    assert list(losses) == ["b"] and "agree" in losses["b"]
    coll.train(3, progress=False)
    assert coll.step == 3 and tb.step == 3 and ta.step == 0
    assert _weights_equal(ta.model.get_weights(), source)
    assert not _weights_equal(tb.model.get_weights(), b_before)
    # b learned from the frozen a: the relation pulls b's first channel towards a's (constant) prediction.
    med = next(iter(toy.dataset(8, 5, keys=("id", "image")).batch(8)))
    a_pred = ta.predict(med)["depth"]
    gap = lambda model_b: float(tf.reduce_mean(tf.square(a_pred - model_b({"image": med["image"]})["normals"][..., :1])))
    fresh_b = toy.task_b.build_model()
    fresh_b.set_weights(b_before)
    assert gap(tb.model) < gap(fresh_b)
    metrics = coll.evaluate()
    assert set(metrics) == {"a", "b"}
    # A restarted collective resumes: the frozen trainer restores its own step-0 checkpoint (the init weights).
    ta2 = TaskTrainer(toy.task_a, [rel], workdir=str(tmp_path / "run" / "a"), frozen=True, batch_size=4,
                      init_checkpoint=str(tmp_path / "nowhere-needed-now"))
    assert _weights_equal(ta2.model.get_weights(), source)


def test_all_frozen_collective_is_an_error(toy):
    ta = TaskTrainer(toy.task_a, dedicated=toy.dataset(8, 1), batch_size=4, frozen=True)
    coll = Collective([ta])
    with pytest.raises(RuntimeError, match="frozen"):
        coll.round()
