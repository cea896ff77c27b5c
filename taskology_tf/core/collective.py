"""Collective: the trainers of an experiment in one process, with in-process peers.

Each round draws one shared mediator batch, lets every trainer compute its
gradients at the current weights (peers answer from snapshots, refreshed every
``peer_refresh_steps``; 0 = the live model), and only then applies every
update. With staleness 0 a round is therefore exactly one step of joint
training on Eq. (1): each task's gradient of the joint loss only involves its
own supervised term and the relations it takes part in, and peers enter those
only through their (constant) predictions. Frozen trainers (``TaskTrainer.frozen``) take no part in
the rounds; their networks only answer as peers.
"""

from __future__ import annotations

from typing import Sequence

import logging

import tensorflow as tf

from taskology_tf.core import stopping
from taskology_tf.core.peer import InProcessPeer
from taskology_tf.core.trainer import TRACING_NOTE, TaskTrainer, batched
from taskology_tf.data import errors as data_errors

log = logging.getLogger(__name__)


class Collective:
    """Runs several ``TaskTrainer``s round-robin in one process.

    Args:
      trainers: the trainers; their ``peers`` are filled here with ``InProcessPeer``s (one per task read and
        staleness setting, shared by its readers, which get one forward pass of it per round).
      mediator: unbatched shared dataset for the relations (None: no relation terms).
      mediator_batch_size: batch size of the shared mediator batches.
      seed: mediator shuffling seed.
    """

    def __init__(
        self,
        trainers: Sequence[TaskTrainer],
        mediator: tf.data.Dataset | None = None,
        mediator_batch_size: int = 8,
        seed: int = 0,
        shuffle_buffer: int = 1024,
    ):
        names = [t.name for t in trainers]
        if len(set(names)) != len(names):
            raise ValueError(f"Task names must be unique in a collective, got {names}.")
        self.trainers: dict[str, TaskTrainer] = {t.name: t for t in trainers}
        # One in-process peer per task and staleness setting, shared by the tasks that read it: in a round they
        # all ask it about the same mediator batch at the same weights, so it runs its network once a round.
        self._shared_peers: dict[tuple, InProcessPeer] = {}
        for trainer in trainers:
            if trainer.frozen:
                continue  # never computes: needs no peers
            for rel in trainer.relations:
                for other in rel.tasks:
                    if other not in self.trainers and other not in trainer.peers:
                        raise ValueError(
                            f"Relation {rel.name!r} ties tasks {list(rel.tasks)} but the experiment has only "
                            f"{names}; add {other!r} to the experiment's tasks or remove the relation."
                        )
                    if other != trainer.name and other not in trainer.peers:
                        peer_trainer = self.trainers[other]
                        key = (other, trainer.peer_refresh_steps, trainer.peer_refresh_seconds, trainer.jit_compile)
                        if key not in self._shared_peers:
                            self._shared_peers[key] = _peer_of(peer_trainer, trainer)
                        trainer.peers[other] = self._shared_peers[key]
        self.mediator = mediator
        self.mediator_batch_size = int(mediator_batch_size)
        if mediator is not None:
            from taskology_tf.data.example import check_element_spec

            for trainer in trainers:
                if trainer.relations and not trainer.frozen:
                    check_element_spec(mediator.element_spec, trainer.mediator_keys(), f"Task {trainer.name!r} (mediator data)")
        self._mediator_iter = None
        self._seed = seed
        self._shuffle_buffer = shuffle_buffer
        self._align_resumed_steps()
        # Every trainer counts the shared mediator batches it was given (and checkpoints the count): the
        # stream resumes where the interrupted run left it.
        training = [t for t in trainers if not t.frozen]
        self._mediator_skip = max((int(t.data_drawn[1].numpy()) for t in training), default=0)

    def _align_resumed_steps(self) -> None:
        """After an interruption between the trainers' saves (one at step 14, another still at 12), bring the
        ones ahead back to the common step when they still have its checkpoint, so the resumed rounds are the
        rounds of an uninterrupted run (peers at the same step)."""
        training = [t for t in self.trainers.values() if not t.frozen and t._manager is not None]
        steps = {t.step for t in training}
        if len(steps) <= 1:
            return
        common = min(steps)
        for trainer in training:
            if trainer.step == common:
                continue
            prefix = next((p for p in trainer.listed_checkpoints() if p.endswith(f"-{common}")), None)
            if prefix is None:
                log.warning("Task %r is at step %d, its peers at %d, and its checkpoint of step %d is gone: the "
                            "others catch up against its newer weights.", trainer.name, trainer.step, common, common)
                continue
            log.info("Task %r: back to step %d (%s), the step its peers' checkpoints reached.", trainer.name, common,
                     prefix)
            trainer.restore(prefix)

    @property
    def step(self) -> int:
        """The collective's round: the smallest step of its trainers that train (frozen ones stay put)."""
        training = [t for t in self.trainers.values() if not t.frozen] or list(self.trainers.values())
        return min(t.step for t in training)

    def _next_mediator(self):
        if self.mediator is None:
            return None
        if self._mediator_iter is None:
            ds = batched(self.mediator, self.mediator_batch_size, repeat=True, shuffle=self._shuffle_buffer, seed=self._seed,
                         skip=self._mediator_skip)
            self._mediator_iter = iter(ds)
        return data_errors.next_batch(self._mediator_iter, "the collective's mediator data", self.mediator)

    def round(self) -> dict[str, dict[str, float]]:
        """One step of every trainer that is at the collective's step; returns loss terms by task."""
        if all(t.frozen for t in self.trainers.values()):
            raise RuntimeError(
                f"Every task of the collective ({list(self.trainers)}) is frozen: nothing to train. "
                "Set TaskTrainer.frozen = False for at least one task."
            )
        step = self.step
        active = [t for t in self.trainers.values() if not t.frozen and t.step == step]
        needs_mediator = any(t.has_relations for t in active)
        mediator = self._next_mediator() if needs_mediator else None
        computed = []
        for peer in self._shared_peers.values():
            peer.hold_answers()  # no weights change until every trainer has computed
        try:
            for trainer in active:
                result = trainer.compute(mediator_batch=mediator)
                if result is not None:
                    computed.append((trainer, result))
        finally:
            for peer in self._shared_peers.values():
                peer.drop_answers()
        for trainer, (_, grads) in computed:
            trainer.apply(grads)
        for trainer, (values, _) in computed:
            trainer.after_step(values)
        if not computed:
            raise RuntimeError("No trainer has data to train on: give each task dedicated data or a relation with mediator data.")
        return {t.name: values for t, (values, _) in computed}

    def train(self, num_steps: int, progress: bool = True, desc: str = "collective") -> None:
        """Run rounds until every trainer reached ``num_steps``; a restarted run continues where it stopped."""
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=self.step, desc=desc, disable=not progress, dynamic_ncols=True)
        if self.step < num_steps:
            bar.set_postfix_str(TRACING_NOTE)
        try:
            with stopping.training_loop():
                while self.step < num_steps:
                    losses = self.round()
                    stopping.check(self.save, self.step)
                    bar.update(1)
                    bar.set_postfix({name: f"{v['total']:.3f}" for name, v in losses.items()})
        finally:
            bar.close()
        self.save()

    def save(self) -> list[str]:
        """A checkpoint of every trainer at its current step; returns their paths."""
        return [p for p in (t.save() for t in self.trainers.values()) if p]

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Each trainer's metrics on its evaluation data."""
        return {name: t.evaluate() for name, t in self.trainers.items() if t.eval_data is not None}

    def close(self) -> None:
        for t in self.trainers.values():
            t.close()


def _peer_of(peer_trainer: TaskTrainer, consumer: TaskTrainer) -> InProcessPeer:
    """An in-process peer of ``peer_trainer`` with the consumer's staleness settings."""
    peer = InProcessPeer(
        peer_trainer.task,
        peer_trainer.model,
        live_step=lambda: peer_trainer.step,
        refresh_steps=consumer.peer_refresh_steps,
        refresh_seconds=consumer.peer_refresh_seconds,
        jit_compile=consumer.jit_compile,
    )
    return peer

