"""Consistency between two field tasks, and the topologies that tie many of them (scaling studies).

    L = mean over pixels of | scale * f_first + offset - f_second |        per example [B]

f_first and f_second are the ``field`` predictions [B, H, W, 1] of two tasks (``tasks/field.py``). When the
two tasks predict affine maps of the same source field (``FieldTask.scale``/``offset``), the relation
with scale = s_second / s_first and offset = o_second - scale * o_first holds exactly for their true
fields; with the defaults (1, 0) it ties two tasks that predict the same field. Each task's trainer
gets the gradient through its own live prediction only (the peer's is a constant).

``topology_pairs(count, topology)`` says which of ``count`` tasks are tied (``TOPOLOGIES``):

    'ring'   task i with task i+1 (and the last with the first): 2 peers per task (1 when count = 2)
    'star'   task 0 with every other: task 0 has count - 1 peers, the others 1
    'dense'  every pair: count - 1 peers per task

``field_relations(tasks, topology)`` names one relation per pair (``<first>_to_<second>``) and registers
each name, for ``Experiment.relations = @field_relations()`` next to ``Experiment.tasks = @field_tasks()``;
``field_consistency.weight`` configures all of them, ``field_0_to_field_1/field_consistency.weight`` one.
"""

from __future__ import annotations

import functools
from typing import Sequence

import gin
from keras import ops

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation, weight_overrides

TOPOLOGIES = ("ring", "star", "dense")


def affine_l1_loss(inputs, predictions, first: str, second: str, key: str = "field", scale: float = 1.0,
                   offset: float = 0.0):
    """Per-example mean over pixels of |scale * f_first + offset - f_second|; [B] float32.

    predictions: ``{first: {key: [B, H, W, C]}, second: {key: [B, H, W, C]}}``; ``inputs`` is not read.
    """
    a = ops.cast(predictions[first][key], "float32")
    b = ops.cast(predictions[second][key], "float32")
    return ops.mean(ops.abs(scale * a + offset - b), axis=(1, 2, 3))


@register_relation("field_consistency")
@gin.configurable
def field_consistency(
    first: str = "field_0",
    second: str = "field_1",
    key: str = "field",
    scale: float = 1.0,
    offset: float = 0.0,
    weight: float = 1.0,
    first_weight: float | None = None,
    second_weight: float | None = None,
    start_step: int = 0,
    ramp_steps: int = 0,
    name: str = "field_consistency",
) -> Relation:
    """The affine L1 consistency between the ``key`` predictions of tasks ``first`` and ``second``.

    Args:
      first, second: the two task names (``scale * first + offset`` is compared with ``second``).
      key: the prediction key read from both.
      scale, offset: the fixed affine map applied to ``first``'s prediction.
      weight: loss weight for both tasks; ``first_weight``/``second_weight`` override it per task.
      start_step, ramp_steps: warm-up of the relation's weight (see ``Relation``).
      name: relation name (summaries, trainer terms).
    """
    if first == second:
        raise ValueError(f"field_consistency ties two separate tasks; got first = second = {first!r}.")
    return Relation(
        name=name,
        reads={first: (key,), second: (key,)},
        loss_fn=functools.partial(affine_l1_loss, first=first, second=second, key=key, scale=scale, offset=offset),
        weight=weight,
        task_weights=weight_overrides({first: first_weight, second: second_weight}),
        start_step=start_step,
        ramp_steps=ramp_steps,
    )


def topology_pairs(count: int, topology: str) -> list[tuple[int, int]]:
    """The (i, j) index pairs, i != j, of ``count`` tasks tied by ``topology`` (see the module doc)."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}.")
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ValueError(f"a {topology} of tasks needs at least 2 tasks, got {count!r}.")
    if topology == "ring":
        return [(i, (i + 1) % count) for i in range(count if count > 2 else 1)]
    if topology == "star":
        return [(0, j) for j in range(1, count)]
    return [(i, j) for i in range(count) for j in range(i + 1, count)]


def peer_counts(count: int, topology: str) -> list[int]:
    """How many peers each of ``count`` tasks reads under ``topology``."""
    peers = [0] * count
    for i, j in topology_pairs(count, topology):
        peers[i] += 1
        peers[j] += 1
    return peers


def relation_name(first: str, second: str) -> str:
    return f"{first}_to_{second}"


_PAIR_FACTORIES: dict[tuple[str, str], functools.partial] = {}  # one factory per name: registration is idempotent


@gin.configurable
def field_relations(tasks: Sequence[str] = gin.REQUIRED, topology: str = "ring") -> list[str]:
    """Names of the ``field_consistency`` relations tying ``tasks`` in ``topology``, each registered.

    For ``Experiment.relations = @field_relations()`` with ``field_relations.tasks = @field_tasks()``. Every
    relation is built in its own gin scope (its name), so ``field_consistency.*`` bindings apply to all of
    them and ``field_0_to_field_1/field_consistency.*`` to one.
    """
    if isinstance(tasks, str):
        raise ValueError(f"field_relations.tasks is a list of task names, got {tasks!r}.")
    tasks = [str(t) for t in tasks]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"field_relations.tasks has duplicates: {tasks}.")
    names = []
    for i, j in topology_pairs(len(tasks), topology):
        first, second = tasks[i], tasks[j]
        name = relation_name(first, second)
        factory = _PAIR_FACTORIES.setdefault(
            (first, second), functools.partial(field_consistency, first=first, second=second, name=name))
        register_relation(name)(factory)
        names.append(name)
    return names
