"""Collective semantics: staleness 0 equals joint training; gradients stay local."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.collective import Collective
from taskology_tf.core.trainer import TaskTrainer


def _trainers(toy, workdir=None, dedicated=True, refresh=0, schedule="both"):
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], workdir=workdir and f"{workdir}/a", dedicated=toy.dataset(16, 1) if dedicated else None,
                     batch_size=4, shuffle_buffer=0, peer_refresh_steps=refresh, schedule=schedule)
    tb = TaskTrainer(toy.task_b, [rel], workdir=workdir and f"{workdir}/b", dedicated=toy.dataset(16, 2) if dedicated else None,
                     batch_size=4, shuffle_buffer=0, peer_refresh_steps=refresh, schedule=schedule)
    return ta, tb


def test_staleness_zero_equals_joint_training(toy):
    """Three collective rounds (refresh 0) give the same weights as three SGD steps on one joint tape."""
    ta, tb = _trainers(toy)
    mediator = toy.dataset(12, 7, keys=("id", "image"))
    coll = Collective([ta, tb], mediator=mediator, mediator_batch_size=4, shuffle_buffer=0)

    # The joint reference: separate copies of both networks with the same initial weights.
    ja, jb = toy.task_a.build_model(), toy.task_b.build_model()
    ja.set_weights(ta.model.get_weights())
    jb.set_weights(tb.model.get_weights())
    rel = toy.relation()
    ded_a = iter(toy.dataset(16, 1).batch(4))
    ded_b = iter(toy.dataset(16, 2).batch(4))
    med = iter(mediator.batch(4))
    for _ in range(3):
        da, db, m = next(ded_a), next(ded_b), next(med)
        with tf.GradientTape() as tape:
            pa, pb = ja({"image": da["image"]}, training=True), jb({"image": db["image"]}, training=True)
            ma, mb = ja({"image": m["image"]}, training=True), jb({"image": m["image"]}, training=True)
            joint = (tf.reduce_mean(toy.task_a.loss(da, pa)) + tf.reduce_mean(toy.task_b.loss(db, pb))
                     + tf.reduce_mean(rel.loss(m, {"a": ma, "b": mb})))
        variables = ja.trainable_variables + jb.trainable_variables
        grads = tape.gradient(joint, variables)
        n = len(ja.trainable_variables)
        for v, g in zip(variables[:n], grads[:n]):
            v.assign_sub(toy.task_a.lr * g)
        for v, g in zip(variables[n:], grads[n:]):
            v.assign_sub(toy.task_b.lr * g)
        coll.round()
    for got, want in zip(ta.model.get_weights() + tb.model.get_weights(), ja.get_weights() + jb.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ta.step == tb.step == 3


def test_gradients_reach_only_own_weights(toy):
    """A relation step of task a changes a's weights and leaves b's untouched."""
    ta, tb = _trainers(toy, dedicated=False)
    Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)
    before_b = tb.model.get_weights()
    before_a = ta.model.get_weights()
    med = next(iter(toy.dataset(8, 5, keys=("id", "image")).batch(4)))
    values = ta.train_step(mediator_batch=med)
    assert set(values) == {"agree", "total"}
    for w0, w1 in zip(before_b, tb.model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert any(not np.allclose(w0, w1) for w0, w1 in zip(before_a, ta.model.get_weights()))
    # The peer's predictions enter with stop_gradient: the relation loss has no gradient into b.
    with tf.GradientTape() as tape:
        preds_b = ta.peers["b"].predict({"image": med["image"]})
        loss = tf.reduce_mean(toy.relation().loss(med, {"a": ta.model({"image": med["image"]}), "b": preds_b}))
    assert all(g is None for g in tape.gradient(loss, tb.model.trainable_variables, unconnected_gradients="none"))


def test_stale_peer_refreshes_every_k_steps(toy):
    ta, tb = _trainers(toy, refresh=3)
    coll = Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)
    peer_b = ta.peers["b"]
    seen = []
    for _ in range(7):
        coll.round()
        seen.append((peer_b.version, int(peer_b.staleness()["steps"])))
    # Snapshots taken at b's step 0, then refreshed at consumer steps 3 and 6.
    assert [v for v, _ in seen] == [0, 0, 0, 3, 3, 3, 6]
    assert [s for _, s in seen] == [1, 2, 3, 1, 2, 3, 1]


def test_stale_peer_predictions_differ_from_live(toy):
    ta, tb = _trainers(toy, refresh=100)
    coll = Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)
    x = {"image": toy.examples(4, 9)["image"]}
    first = ta.peers["b"].predict(x)["normals"].numpy()
    for _ in range(3):
        coll.round()
    np.testing.assert_array_equal(ta.peers["b"].predict(x)["normals"].numpy(), first)
    assert not np.allclose(tb.predict(x)["normals"].numpy(), first)


def test_relation_tasks_must_be_in_the_experiment(toy):
    ta = TaskTrainer(toy.task_a, [toy.relation()], dedicated=toy.dataset(8, 1), batch_size=4)
    with pytest.raises(ValueError, match="add 'b' to the experiment's tasks"):
        Collective([ta], mediator=toy.dataset(8, 5, keys=("id", "image")))


def test_no_data_at_all_is_an_error(toy):
    ta = TaskTrainer(toy.task_a, [], batch_size=4)
    with pytest.raises(RuntimeError, match="No trainer has data"):
        Collective([ta]).round()


def test_in_process_peers_compile_like_their_consumer(toy):
    """With ``jit_compile`` the peers' forward passes are XLA-compiled too, and answer what the peer's model does."""
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], dedicated=toy.dataset(16, 1), batch_size=4, shuffle_buffer=0, jit_compile=True)
    tb = TaskTrainer(toy.task_b, [rel], dedicated=toy.dataset(16, 2), batch_size=4, shuffle_buffer=0)
    Collective([ta, tb], mediator=toy.dataset(8, 5, keys=("id", "image")), mediator_batch_size=4, shuffle_buffer=0)
    assert ta.jit_compile and not tb.jit_compile
    assert ta.peers["b"]._forward._jit_compile and not tb.peers["a"]._forward._jit_compile  # (tf.function's flag)
    med = next(iter(toy.dataset(8, 5, keys=("id", "image")).batch(4)))
    got = ta.peers["b"].predict({"image": med["image"]})
    want = tb.model({"image": med["image"]}, training=False)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=1e-5, atol=1e-6)


def _agree_cb(inputs, predictions):
    return tf.reduce_mean(tf.square(predictions["c"]["depth"] - predictions["b"]["normals"][..., 1:2]), axis=[1, 2, 3])


def _three_trainers(toy, seed=0):
    """a and c both read b (two relations); b reads both."""
    from taskology_tf.core.relation import Relation

    from tests.core.conftest import ToyTask

    rel_ab = toy.relation()
    rel_cb = Relation("agree_cb", reads={"c": ("depth",), "b": ("normals",)}, loss_fn=_agree_cb)
    task_c = ToyTask("c", "depth", 1, seed=5)
    make = lambda task, rels, s: TaskTrainer(task, rels, dedicated=toy.dataset(16, s), batch_size=4, shuffle_buffer=0)
    return [make(toy.task_a, [rel_ab], 1), make(toy.task_b, [rel_ab, rel_cb], 2), make(task_c, [rel_cb], 3)]


def _count_forwards(peer):
    calls = []
    forward = peer._forward

    def counted(x):
        calls.append(1)
        return forward(x)

    peer._forward = counted
    return calls


def test_a_task_read_by_two_runs_its_network_once_a_round_with_the_same_result(toy):
    from taskology_tf.core.collective import _peer_of

    mediator = toy.dataset(12, 7, keys=("id", "image"))
    shared = _three_trainers(toy)
    coll = Collective(shared, mediator=mediator, mediator_batch_size=4, shuffle_buffer=0)
    ta, tb, tc = shared
    assert ta.peers["b"] is tc.peers["b"] and tb.peers["a"] is not tb.peers["c"]
    calls = _count_forwards(ta.peers["b"])
    # the same experiment with a peer of b for each reader (what every collective did before)
    own = _three_trainers(toy)
    for mine, theirs in zip(own, shared):
        mine.model.set_weights(theirs.model.get_weights())
    own[0].peers["b"] = _peer_of(own[1], own[0])
    own[2].peers["b"] = _peer_of(own[1], own[2])
    reference = Collective(own, mediator=mediator, mediator_batch_size=4, shuffle_buffer=0)
    assert own[0].peers["b"] is not own[2].peers["b"]
    for _ in range(3):
        got, want = coll.round(), reference.round()
        assert got == want
    assert len(calls) == 3  # one forward of b per round, for both readers
    for mine, theirs in zip(own, shared):
        for w0, w1 in zip(mine.model.get_weights(), theirs.model.get_weights()):
            np.testing.assert_array_equal(w0, w1)
    # outside a round nothing is held: the weights may have changed
    med = next(iter(mediator.batch(4)))
    ta.peers["b"].predict({"image": med["image"]})
    ta.peers["b"].predict({"image": med["image"]})
    assert len(calls) == 5
