"""Tests of the field consistency relation and the ring / star / dense topologies of field tasks."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import relation_factory
from taskology_tf.relations.field_consistency import (
    affine_l1_loss,
    field_consistency,
    field_relations,
    peer_counts,
    topology_pairs,
)
from taskology_tf.tasks.field import field_target


def _fields(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 3, 4, 1)).astype(np.float32)


def test_affine_map_of_the_first_is_compared_with_the_second():
    a = _fields()
    preds = {"p": {"field": a}, "q": {"field": 2.0 * a - 1.0}}
    np.testing.assert_allclose(np.asarray(affine_l1_loss({}, preds, "p", "q", scale=2.0, offset=-1.0)), 0.0, atol=1e-6)
    shifted = {"p": {"field": a}, "q": {"field": a + 0.25}}
    np.testing.assert_allclose(np.asarray(affine_l1_loss({}, shifted, "p", "q")), [0.25, 0.25], atol=1e-6)


def test_holds_for_true_fields_of_affinely_related_tasks():
    depth = np.random.default_rng(1).uniform(1.0, 9.0, (2, 4, 6, 1)).astype(np.float32)
    batch = {"depth": depth}
    first = field_target(batch, "inverse_depth", scale=2.0, offset=0.5)[0]
    second = field_target(batch, "inverse_depth", scale=-1.0, offset=3.0)[0]
    scale = -1.0 / 2.0
    relation = field_consistency("a", "b", scale=scale, offset=3.0 - scale * 0.5)
    loss = relation.loss({}, {"a": {"field": first}, "b": {"field": second}})
    np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-5)


def test_both_live_sides_get_gradients_and_a_constant_peer_none():
    a, b = tf.Variable(_fields(2)), tf.Variable(_fields(3))
    relation = field_consistency("a", "b", weight=0.5, second_weight=2.0)
    with tf.GradientTape(persistent=True) as tape:
        both = tf.reduce_mean(relation.loss({}, {"a": {"field": a}, "b": {"field": b}}))
        one = tf.reduce_mean(relation.loss({}, {"a": {"field": a}, "b": {"field": tf.stop_gradient(b)}}))
    assert all(np.abs(g.numpy()).sum() > 0 for g in tape.gradient(both, [a, b]))
    assert tape.gradient(one, b) is None
    assert relation.tasks == ("a", "b") and relation.weight_for("a") == 0.5 and relation.weight_for("b") == 2.0
    with pytest.raises(ValueError, match="two separate tasks"):
        field_consistency("a", "a")


@pytest.mark.parametrize("count, topology, pairs, peers", [
    (2, "ring", [(0, 1)], [1, 1]),
    (4, "ring", [(0, 1), (1, 2), (2, 3), (3, 0)], [2, 2, 2, 2]),
    (4, "star", [(0, 1), (0, 2), (0, 3)], [3, 1, 1, 1]),
    (3, "dense", [(0, 1), (0, 2), (1, 2)], [2, 2, 2]),
])
def test_topologies(count, topology, pairs, peers):
    assert topology_pairs(count, topology) == pairs
    assert peer_counts(count, topology) == peers


@pytest.mark.parametrize("count, topology", [(1, "ring"), (3, "mesh")])
def test_bad_topologies_are_named(count, topology):
    with pytest.raises(ValueError, match="topology|at least 2"):
        topology_pairs(count, topology)


def test_field_relations_registers_one_relation_per_pair_configurable_per_scope():
    names = field_relations(["t_0", "t_1", "t_2"], "star")
    assert names == ["t_0_to_t_1", "t_0_to_t_2"]
    assert field_relations(["t_0", "t_1", "t_2"], "star") == names  # registering again is harmless
    gin.parse_config(["field_consistency.weight = 0.5", "t_0_to_t_2/field_consistency.weight = 3.0"])
    try:
        relations = {}
        for name in names:
            with gin.config_scope(name):
                relations[name] = relation_factory(name)()
    finally:
        gin.clear_config()
    assert relations["t_0_to_t_1"].tasks == ("t_0", "t_1") and relations["t_0_to_t_1"].weight == 0.5
    assert relations["t_0_to_t_2"].tasks == ("t_0", "t_2") and relations["t_0_to_t_2"].weight == 3.0
    assert relations["t_0_to_t_2"].name == "t_0_to_t_2"


def test_experiment_from_gin_trains_each_task_on_its_own_weights():
    """The scaling experiment file with 3 tasks in a star: the hub reads both leaves, a leaf only the hub,
    and a step of the hub leaves its peers' weights untouched."""
    from taskology_tf.cli import parse_gin
    from taskology_tf.experiment import Experiment

    gin.clear_config()
    parse_gin(["scaling_fields"], ["field_tasks.count = 3", "field_relations.topology = 'star'",
                                   "synthetic.height = 8", "synthetic.width = 16",
                                   "field_train/synthetic.num_examples = 8", "field_mediator/synthetic.num_examples = 8",
                                   "field_eval/synthetic.num_examples = 4", "field_1/FieldTask.source = 'gray'"])
    try:
        experiment = Experiment()
        collective = experiment.build_collective(None)
    finally:
        gin.clear_config()
    assert experiment.task_names == ["field_0", "field_1", "field_2"]
    assert experiment.peer_tasks("field_0") == ["field_1", "field_2"] and experiment.peer_tasks("field_2") == ["field_0"]
    assert experiment.tasks["field_1"].source == "gray" and experiment.tasks["field_2"].source == "inverse_depth"
    hub = collective.trainers["field_0"]
    before = {name: t.model.get_weights() for name, t in collective.trainers.items()}
    values = hub.train_step(mediator_batch=collective._next_mediator())
    assert sorted(values) == ["field_0_to_field_1", "field_0_to_field_2", "supervised", "total"]
    for name in ("field_1", "field_2"):
        for w0, w1 in zip(before[name], collective.trainers[name].model.get_weights()):
            np.testing.assert_array_equal(w0, w1)
    assert any(not np.allclose(w0, w1) for w0, w1 in zip(before["field_0"], hub.model.get_weights()))
    collective.close()
