"""TaskTrainer: trains one task on its dedicated data and on the relations it takes part in.

The objective seen from task i is Eq. (1) of the Taskology paper restricted to
the terms that depend on w_i:

    L_i = mean_B L_i^sup(y_i(w_i, x_ded), labels) + sum_{r ∋ i} lambda_r,i * mean_B L_r(x_med, {y_i(w_i, x_med), sg(y_j)})

where sg(y_j) are predictions of the peers (``stop_gradient``; live, stale, or
served). Gradients reach only the task's own weights. Steps are split into
``compute`` (forward, losses, gradients) and ``apply`` (optimizer update) so that
a ``Collective`` can compute every task's gradients at the same weights before
anyone updates: with staleness 0 this is exactly joint training. With a loss ``weighting``
(``taskology_tf/weighting``), mean_B L_i^sup is replaced by the strategy's combination of the task's
``loss_terms`` (per example for instance-level task parameters, keyed by the examples' ``id``).

Under a ``tf.distribute`` strategy (``strategy=``, see ``core/distribute.py``) the
network, optimizer and step counter live in the strategy's scope; every host batch
(mediator batches together with the peer predictions computed on them) is cut
across the replicas, each replica averages its per-example losses over the
*global* batch (``tf.nn.compute_average_loss``), and the Keras optimizer
all-reduces the gradients when ``apply`` runs it inside ``strategy.run``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import time
from typing import Any, Mapping, Sequence

import gin
import numpy as np
import tensorflow as tf

from taskology_tf.core import distribute, stopping, storage, workdir as workdir_lib
from taskology_tf.core.peer import Peer
from taskology_tf.core.relation import Relation
from taskology_tf.core.schedule import Schedule
from taskology_tf.core.task import Task
from taskology_tf.core.validation import whole_number
from taskology_tf.data import errors as data_errors
from taskology_tf.data.example import check_element_spec
from taskology_tf.weighting import InstanceParameters, Weighting, make_weighting  # also registers them with gin


log = logging.getLogger(__name__)

# Shown next to the progress bar while the first step runs: tracing (and compiling) the step takes seconds.
TRACING_NOTE = "first step: tracing the training graph (seconds to a minute on a CPU)"


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the update was not applied and no checkpoint was written."""


def batched(dataset: tf.data.Dataset, batch_size: int, *, repeat: bool, shuffle: int = 0, seed: int = 0,
            skip: int = 0) -> tf.data.Dataset:
    """Shuffle (optional), repeat (optional), batch with a static batch size, skip ``skip`` batches, prefetch.

    With a seed the order is a function of the seed alone, so skipping the batches a run already drew
    continues its stream exactly where it stopped (resuming from a checkpoint).
    """
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=repeat)
    if skip:
        dataset = dataset.skip(int(skip))
    return dataset.prefetch(tf.data.AUTOTUNE)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from: it belongs to another network, or its files are damaged."""


class CheckpointDamagedError(CheckpointError):
    """Every checkpoint of a trainer is unreadable (truncated or corrupt files)."""


def _describe(value: Any) -> str:
    return f"{type(value).__name__}"


def _average_loss(per_example, global_batch_size=None):
    """This replica's share of the mean of a per-example loss over the global batch.

    per_example: [B] (or [B, ...], averaged over the trailing axes first) this replica's examples;
    global_batch_size: examples over all replicas (None: B x replicas; B under the default strategy,
    where this is the plain mean). A scalar is taken as already averaged and shared among the replicas.
    Summed over the replicas this is the mean over the global batch.
    """
    x = tf.cast(per_example, tf.float32)
    rank = x.shape.rank
    if rank == 0:
        return tf.nn.scale_regularization_loss(x)
    if rank is not None and rank > 1:
        x = tf.reduce_mean(x, axis=list(range(1, rank)))
    return tf.nn.compute_average_loss(x, global_batch_size=global_batch_size)


@gin.configurable(denylist=["task", "relations", "peers", "workdir", "lock_workdir"])
class TaskTrainer:
    """Trains one task.

    Args:
      task: the task.
      relations: relations this task takes part in.
      peers: task name -> Peer for every other task those relations read.
      workdir: folder for checkpoints (``ckpt/``), summaries (``logs/``) and exports.
      dedicated: unbatched ``tf.data.Dataset`` of labelled examples, or None (unsupervised task).
      mediator: unbatched dataset of shared (unlabelled) examples for the relations; only used when the
        trainer runs on its own (a ``Collective`` feeds one shared mediator batch to all its trainers).
      eval_data: unbatched dataset for periodic evaluation, or None.
      batch_size: dedicated batch size (mediator batch size defaults to the same).
      schedule: ``'both'``, ``'alternate'``, ``'ratio:D:M'`` or a ``Schedule``.
      optimizer: a Keras optimizer; default: the task's own (its published hyper-parameters).
      peer_refresh_steps / peer_refresh_seconds: staleness knob for this trainer's peers
        (0 / None = always current). Read by whoever builds the peers.
      checkpoint_every, summary_every, eval_every: cadences in steps (0 = never, except a final checkpoint).
      max_to_keep: checkpoints kept.
      export_every: publish the network as SavedModel version ``<workdir>/export/<step>`` every this many
        steps (0 = never), written atomically, for model servers; ``export_keep`` versions are kept.
      shuffle_buffer, seed: dedicated-data shuffling.
      jit_compile: compile the step with XLA (default strategy only; ignored, with a warning, under a strategy);
        in a ``Collective`` the in-process peers this trainer reads compile their forward passes alike.
      strategy: a ``tf.distribute.Strategy``, a name for ``make_strategy`` (``'default'``, ``'mirrored'``,
        ``'multi_worker'``, ``'tpu'``), or None: the strategy whose scope the trainer is built in (TF's
        default strategy, i.e. no distribution, unless the caller entered a scope). Under a strategy,
        ``batch_size`` and ``mediator_batch_size`` are global (all replicas) and must be multiples of the
        number of replicas; a multi-worker job reads a per-worker shard of each dataset.
      frozen: the task never trains: ``compute`` returns None and ``apply`` refuses, its step stays where it
        is; its network still answers as a peer of the other tasks and is still evaluated and checkpointed
        (a ``Collective`` leaves frozen trainers out of its rounds). E.g. row C of the paper's Table 1: a
        segmentation network trained before, supervising depth and motion.
      init_checkpoint: network weights to start from when the trainer has no checkpoint of its own
        (``<workdir>/ckpt`` empty, or no workdir): a checkpoint prefix (``.../ckpt-1000``), or a folder whose
        latest checkpoint is used (the folder itself or its ``ckpt/`` subfolder, e.g. another run's
        ``<workdir>/<task>``). Only the network is restored, not the optimizer or the step. The network must
        have the same structure (same task configuration) as the one that wrote it.
      weighting: None (the supervised loss is the task's ``loss``), or a loss weighting strategy of the task's
        ``loss_terms`` (see ``taskology_tf/weighting``): a name for ``make_weighting`` (``'equal'``,
        ``'uncertainty'``, ``'dwa'``, ``'gls'``, ``'gradnorm'``, ``'instance'``; its class takes its other
        arguments from gin, e.g. ``InstanceParameters.learning_rate``) or a ``Weighting`` built with the task's
        term names. The strategy's state is updated in ``apply`` and saved in the trainer's checkpoints;
        ``'instance'`` keys its table on the dedicated data's ``id``. Default strategy only.
      lock_workdir: hold the lock of ``workdir`` (``core/workdir.py``) while the trainer lives, so that a second
        trainer on the same folder stops at once; False for read-only uses (evaluation, export).
      mediator_inputs: None, or the task's input key -> the mediator key its own network reads instead on the
        mediator batch (e.g. ``{'image': 'image_jittered'}``, a colour-jittered copy that ``color_jitter(copy_suffix=
        '_jittered')`` adds): the network answers the relations on augmented frames while the relations' inputs and
        the peers keep the originals (self-training with a strong augmentation of the student's view).

    Checkpoints hold the network, the optimizer, the step and how many batches each data stream has
    given, so a resumed run continues every stream where it stopped (the same batches as a run that was
    never interrupted). When the newest checkpoint is unreadable (truncated or corrupt ``.index`` or
    ``.data`` files), the trainer logs which file is damaged, moves that checkpoint's files to
    ``ckpt/damaged/`` and resumes from the newest intact one.
    """

    def __init__(
        self,
        task: Task,
        relations: Sequence[Relation] = (),
        peers: Mapping[str, Peer] | None = None,
        workdir: str | None = None,
        *,
        dedicated: tf.data.Dataset | None = None,
        mediator: tf.data.Dataset | None = None,
        eval_data: tf.data.Dataset | None = None,
        batch_size: int = 8,
        mediator_batch_size: int | None = None,
        schedule: str | Schedule = "both",
        optimizer: Any = None,
        peer_refresh_steps: int = 0,
        peer_refresh_seconds: float | None = None,
        checkpoint_every: int = 500,
        summary_every: int = 25,
        eval_every: int = 0,
        image_summaries: int = 4,
        max_to_keep: int = 3,
        export_every: int = 0,
        export_keep: int = 3,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        jit_compile: bool = False,
        strategy: str | tf.distribute.Strategy | None = None,
        frozen: bool = False,
        init_checkpoint: str | None = None,
        weighting: Any = None,
        lock_workdir: bool = True,
        mediator_inputs: Mapping[str, str] | None = None,
    ):
        self.task = task
        self.name = task.name
        self.mediator_inputs = dict(mediator_inputs or {})
        unknown = sorted(set(self.mediator_inputs) - set(task.input_keys))
        if unknown:
            raise ValueError(f"{task.name}/TaskTrainer.mediator_inputs maps {unknown}, which are not inputs of task "
                             f"{task.name!r} (its inputs: {list(task.input_keys)}).")
        self.relations = tuple(relations)
        for rel in self.relations:
            if self.name not in rel.tasks:
                raise ValueError(f"Relation {rel.name!r} ties {list(rel.tasks)}; it does not involve task {self.name!r}.")
        self.peers: dict[str, Peer] = dict(peers or {})
        self.workdir = workdir
        where = f"{task.name}/TaskTrainer"
        self.batch_size = whole_number(f"{where}.batch_size", batch_size, 1)
        self.mediator_batch_size = whole_number(f"{where}.mediator_batch_size", mediator_batch_size or batch_size, 1)
        self.schedule = Schedule.parse(schedule)
        self.peer_refresh_steps = whole_number(f"{where}.peer_refresh_steps", peer_refresh_steps)
        self.peer_refresh_seconds = peer_refresh_seconds
        self.checkpoint_every = whole_number(f"{where}.checkpoint_every", checkpoint_every)
        self.summary_every = whole_number(f"{where}.summary_every", summary_every)
        self.eval_every = whole_number(f"{where}.eval_every", eval_every)
        self.image_summaries = whole_number(f"{where}.image_summaries", image_summaries)
        self.export_every = whole_number(f"{where}.export_every", export_every)
        self.export_keep = whole_number(f"{where}.export_keep", export_keep)
        self.seed = whole_number(f"{where}.seed", seed, None)
        self.shuffle_buffer = whole_number(f"{where}.shuffle_buffer", shuffle_buffer)
        max_to_keep = whole_number(f"{where}.max_to_keep", max_to_keep, 1)
        self.frozen = bool(frozen)
        self.init_checkpoint = init_checkpoint
        self.strategy = distribute.resolve_strategy(strategy)
        self.distributed = not distribute.is_default(self.strategy)
        replicas = self.strategy.num_replicas_in_sync
        if self.distributed:
            for arg, size in (("batch_size", self.batch_size), ("mediator_batch_size", self.mediator_batch_size)):
                if size % replicas:
                    raise ValueError(
                        f"Task {self.name!r}: {arg}={size} is the global batch under a strategy with {replicas} "
                        f"replicas and must be a multiple of {replicas}; set {self.name}/TaskTrainer.{arg}."
                    )
        self._input_shard = distribute.input_shard(self.strategy) if self.distributed else (1, 0)
        self._local_replicas = distribute.local_replica_ids(self.strategy) if self.distributed else [0]

        for data, what, keys in (
            (dedicated, "dedicated data", task.labelled_keys()),
            (eval_data, "evaluation data", task.labelled_keys()),
            (mediator, "mediator data", self.mediator_keys()),
        ):
            if data is not None:
                if not isinstance(data, tf.data.Dataset):
                    raise TypeError(
                        f"Task {self.name!r} {what}: expected an unbatched tf.data.Dataset of example dicts, got "
                        f"{_describe(data)}."
                    )
                check_element_spec(data.element_spec, keys, f"Task {self.name!r} ({what})")
                task.validate_spec(data.element_spec)
        self.dedicated = dedicated
        self.mediator = mediator
        self.eval_data = eval_data

        with self.strategy.scope():
            self.model = task.build_model()
            self.optimizer = self._optimizer_in_scope(optimizer) if optimizer is not None else task.make_optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{self.name}_step")
            # Batches drawn so far from the dedicated and the mediator stream (checkpointed: exact resume).
            self.data_drawn = tf.Variable([0, 0], dtype=tf.int64, trainable=False, name=f"{self.name}_data_drawn")

        self._dedicated_iter = None
        self._mediator_iter = None
        self._mediator_lookahead = None
        self.peer_unavailable_steps: dict[str, int] = {}
        self.throughput: dict[str, float] = {}  # of the last ``train`` call, see ``throughput_record``
        self._compute_fn = tf.function(self._compute, jit_compile=jit_compile, reduce_retracing=True)
        self.jit_compile = bool(jit_compile) and not self.distributed  # XLA step; in-process peers follow it
        self._apply_fn = tf.function(self._apply, reduce_retracing=True)
        if self.distributed:
            if jit_compile:  # XLA per replica fails on multi-device hosts (variables on other devices); TPUs compile anyway
                log.warning("Task %r: jit_compile is ignored under %s.", self.name, type(self.strategy).__name__)
            self._replica_compute = self._compute
            self._distributed_compute_fn = tf.function(self._distributed_compute, reduce_retracing=True)
            self._distributed_apply_fn = tf.function(self._distributed_apply, reduce_retracing=True)
        self._predict_fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

        self.weighting = self._make_weighting(weighting, jit_compile) if weighting is not None else None
        extra = {"weighting": self.weighting} if self.weighting is not None else {}
        self._ckpt_objects = dict(model=self.model, optimizer=self.optimizer, step=self.step_var, **extra)
        self._ckpt = tf.train.Checkpoint(data=self.data_drawn, **self._ckpt_objects)
        self._manager = None
        self._max_to_keep = max_to_keep
        self._writers: dict[str, Any] = {}
        self._last_time = None
        self._last_step = None
        self._lock = None
        self.restored_from: str | None = None  # the checkpoint (own or init_checkpoint) the weights came from
        if workdir:
            if lock_workdir:
                self._lock = workdir_lib.lock(workdir)
            else:
                workdir_lib.prepare(workdir)
            try:
                self._manager = self._make_manager()
                self.restore()
            except BaseException:
                if self._lock is not None:  # this trainer will not exist: do not keep its folder locked
                    self._lock.release()
                raise
        if self._manager is None or self._manager.latest_checkpoint is None:
            if init_checkpoint:
                self.restored_from = self.restore_model(init_checkpoint)
            elif self.frozen:
                log.warning("Task %r is frozen but starts from random weights (no checkpoint of its own and no "
                            "init_checkpoint); set %s/TaskTrainer.init_checkpoint.", self.name, self.name)

    def _optimizer_in_scope(self, optimizer):
        """The given optimizer, re-created from its config inside the strategy's scope when it was made outside.

        A Keras optimizer binds to the strategy current when it is constructed (gin builds
        ``@keras.optimizers.Adam()`` before the trainer enters its scope); its variables must be the
        strategy's too.
        """
        if not self.distributed or getattr(optimizer, "_distribution_strategy", None) is self.strategy:
            return optimizer
        if getattr(optimizer, "built", False):
            raise ValueError(
                f"Task {self.name!r}: the optimizer was built (has variables) outside the scope of the trainer's "
                f"{type(self.strategy).__name__}; pass an unbuilt optimizer (the trainer re-creates it in the scope) "
                "or build it inside `strategy.scope()`."
            )
        return type(optimizer).from_config(optimizer.get_config())

    def _make_weighting(self, weighting, jit_compile: bool):
        """The ``weighting`` argument as a ``Weighting`` of the task's loss terms, checked against the data."""
        if self.distributed:
            raise NotImplementedError(
                f"Task {self.name!r}: loss weighting ({weighting!r}) is implemented for the default strategy only; "
                f"train on one device or set {self.name}/TaskTrainer.weighting = None."
            )
        if isinstance(weighting, str):
            terms = self._loss_term_names()
            weighting = make_weighting(weighting, terms, {t: self.task.loss_kind(t) for t in terms})
        elif not isinstance(weighting, Weighting):
            raise TypeError(f"Task {self.name!r}: weighting must be a name or a Weighting, got {_describe(weighting)}.")
        if weighting.uses_ids:
            if jit_compile:
                raise ValueError(f"Task {self.name!r}: {type(weighting).__name__} uses a hash table, which XLA cannot "
                                 "compile; set TaskTrainer.jit_compile = False.")
            if self.dedicated is not None and "id" not in self.dedicated.element_spec:
                raise ValueError(f"Task {self.name!r}: {type(weighting).__name__} keys on the example 'id', which the "
                                 "dedicated data lacks; give every example a stable int64 'id'.")
        if weighting.epoch_steps is None and self.dedicated is not None:
            size = int(self.dedicated.cardinality())
            if size > 0:
                weighting.epoch_steps = max(1, math.ceil(size / self.batch_size))
        if isinstance(weighting, InstanceParameters) and weighting.snapshot_dir is None and self.workdir:
            weighting.snapshot_dir = storage.join(self.workdir, "instance_parameters")  # one snapshot per epoch
        return weighting

    def _loss_term_names(self) -> tuple[str, ...]:
        """Names of ``task.loss_terms``: the task's name, or (when the task splits its loss) traced on the data."""
        if type(self.task).loss_terms is Task.loss_terms:
            return (self.name,)
        if self.dedicated is None:
            raise ValueError(f"Task {self.name!r}: a weighting by name needs dedicated data to find the loss terms; "
                             "pass a Weighting built with the term names instead.")
        spec = self.dedicated.batch(2).element_spec

        def terms(batch):
            return self.task.loss_terms(batch, self.model(self.task.model_inputs(batch), training=False))

        return tuple(tf.function(terms).get_concrete_function(spec).structured_outputs)

    # --- data ----------------------------------------------------------------------------------
    def _host_stream(self, dataset: tf.data.Dataset, global_batch: int, seed: int, skip: int = 0):
        """Iterator over this process's batches: all of ``global_batch``, or a worker's share of it in a
        multi-worker job (each worker reading its own shard of the data); the first ``skip`` batches left out."""
        shards, index = self._input_shard
        if shards > 1:
            dataset = dataset.shard(shards, index)
        if skip:
            log.info("Task %r: skipping the %d batch(es) drawn before the checkpoint, to continue the data stream "
                     "where it stopped.", self.name, skip)
        return iter(batched(dataset, global_batch // shards, repeat=True, shuffle=self.shuffle_buffer, seed=seed,
                            skip=skip))

    def mediator_keys(self) -> tuple[str, ...]:
        """Example keys a mediator batch must have for this trainer (own inputs, relation and peer inputs)."""
        keys = list(self.task.input_keys) + list(self.mediator_inputs.values())
        for rel in self.relations:
            keys += list(rel.input_keys)
        for peer in self.peers.values():
            keys += list(getattr(peer, "input_keys", ()))
        return tuple(dict.fromkeys(keys))

    def _count_drawn(self, stream: int) -> None:
        self.data_drawn.assign_add(tf.one_hot(stream, 2, dtype=tf.int64))

    def next_dedicated(self):
        if self.dedicated is None:
            return None
        if self._dedicated_iter is None:
            skip = int(self.data_drawn[0].numpy())  # continue where the checkpointed run stopped
            self._dedicated_iter = self._host_stream(self.dedicated, self.batch_size, self.seed, skip)
        batch = data_errors.next_batch(self._dedicated_iter, f"Task {self.name!r} (dedicated data)", self.dedicated)
        self._count_drawn(0)
        return batch

    def next_mediator(self):
        """The next mediator batch of the trainer's own stream (one batch of look-ahead for prefetching peers)."""
        if self.mediator is None:
            return None
        if self._mediator_iter is None:
            skip = int(self.data_drawn[1].numpy())
            self._mediator_iter = self._host_stream(self.mediator, self.mediator_batch_size, self.seed + 1, skip)
        what = f"Task {self.name!r} (mediator data)"
        batch = (self._mediator_lookahead if self._mediator_lookahead is not None
                 else data_errors.next_batch(self._mediator_iter, what, self.mediator))
        has_prefetchers = any(hasattr(p, "prefetch_next") for p in self.peers.values())
        self._mediator_lookahead = data_errors.next_batch(self._mediator_iter, what, self.mediator) if has_prefetchers else None
        self._count_drawn(1)  # the look-ahead counts when it is used
        return batch

    def _prefetch_peers(self) -> None:
        """Send the look-ahead batch to peers that prefetch, so their round trip overlaps this step's compute.

        Called after this step's predictions were collected (a prefetch replaces the peer's pending request).
        """
        if self._mediator_lookahead is None:
            return
        for peer in self.peers.values():
            if hasattr(peer, "prefetch_next"):
                keys = getattr(peer, "input_keys", None) or tuple(self._mediator_lookahead)
                peer.prefetch_next({k: self._mediator_lookahead[k] for k in keys})

    @property
    def has_relations(self) -> bool:
        return bool(self.relations)

    @property
    def step(self) -> int:
        return int(self.step_var.numpy())

    # --- the step -------------------------------------------------------------------------------
    def peer_predictions(self, mediator_batch, relations=None) -> dict[str, dict[str, tf.Tensor]]:
        """Predictions of every peer that ``relations`` (default: all of the task's) read, on the mediator batch."""
        relations = self.relations if relations is None else relations
        needed = {t for rel in relations for t in rel.tasks if t != self.name}
        out = {}
        for name in sorted(needed):
            if name not in self.peers:
                raise KeyError(
                    f"Task {self.name!r} has no peer for task {name!r}, which relation(s) "
                    f"{[r.name for r in self.relations if name in r.tasks]} read."
                )
            peer = self.peers[name]
            keys = getattr(peer, "input_keys", None) or tuple(mediator_batch)
            try:
                out[name] = peer.predict({k: mediator_batch[k] for k in keys})
            except ConnectionError as e:  # a served peer that is down: train on what we have
                count = self.peer_unavailable_steps[name] = self.peer_unavailable_steps.get(name, 0) + 1
                if getattr(e, "before_first_answer", False) and count < 100:
                    continue  # start-up (no version published yet): the peer logged it once; not worth a warning
                if count in (1, 10, 100) or count % 1000 == 0:
                    log.warning("Task %r: peer %r unavailable (%s); relation terms that need it are skipped "
                                "(%d steps so far).", self.name, name, e, self.peer_unavailable_steps[name])
        return out

    def _compute(self, dedicated, mediator, peer_predictions, relation_weights, dedicated_size=None, mediator_size=None):
        """Loss terms and gradients on (this replica's part of) the batches.

        ``*_size``: global batch sizes (None: this replica's batch times the replicas, i.e. the batch itself
        under the default strategy, where every term is a plain mean).
        """
        terms = {}
        term_means = None
        with tf.GradientTape(persistent=self.weighting is not None and self.weighting.persistent_tape) as tape:
            total = tf.constant(0.0, tf.float32)
            if dedicated is not None:
                preds = self.model(self.task.model_inputs(dedicated), training=True)
                if self.weighting is None:
                    sup = _average_loss(self.task.loss(dedicated, preds), dedicated_size)
                else:
                    sup, term_means = self._weighted_supervised(dedicated, preds, terms)
                terms["supervised"] = sup
                total += sup
            if mediator is not None and self.relations:
                view = dict(mediator, **{key: mediator[source] for key, source in self.mediator_inputs.items()})
                own = self.model(self.task.model_inputs(view), training=True)
                for rel in self.relations:
                    if rel.name not in relation_weights:
                        continue
                    by_task = {t: peer_predictions[t] for t in rel.tasks if t != self.name}
                    by_task[self.name] = own
                    value = _average_loss(rel.loss(mediator, by_task), mediator_size)
                    terms[rel.name] = value
                    total += relation_weights[rel.name] * value
            if self.model.losses:
                reg = tf.nn.scale_regularization_loss(tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses]))
                terms["regularization"] = reg
                total += reg
        if self.weighting is None:
            grads = tape.gradient(total, self.model.trainable_variables)
        else:
            grads = self._weighting_gradients(tape, total, term_means)
        terms["total"] = total
        return terms, grads

    def _weighted_supervised(self, dedicated, preds, terms):
        """The weighting's combination of the task's loss terms; logs each term's mean and weight in ``terms``."""
        losses = self.task.loss_terms(dedicated, preds)
        means = {t: _average_loss(v) for t, v in losses.items()}
        sup, weights = self.weighting.combine(losses, ids=dedicated.get("id"))
        for t in losses:
            terms[f"supervised/{t}"] = means[t]
            terms[f"weight/{t}"] = tf.cast(weights[t], tf.float32)
        return sup, means

    def _weighting_gradients(self, tape, total, term_means):
        """(model gradients, gradients of the weighting's variables, the weighting's extra update inputs)."""
        variables = self.model.trainable_variables
        grads = tape.gradient(total, variables + self.weighting.trainable_variables)
        extra = None if term_means is None else self.weighting.update_inputs(tape, term_means, self.model)
        return grads[:len(variables)], grads[len(variables):], extra

    def _apply(self, grads):
        if self.weighting is not None:
            grads, weighting_grads, extra = grads
            self.weighting.apply_gradients(weighting_grads, extra)
        self.optimizer.apply(grads, self.model.trainable_variables)
        self.step_var.assign_add(1)

    def _distributed_compute(self, dedicated, mediator, peer_predictions, relation_weights, dedicated_size, mediator_size):
        """``_compute`` on every replica: loss terms summed over the replicas, gradients per replica."""
        terms, grads = self.strategy.run(
            self._replica_compute,
            args=(dedicated, mediator, peer_predictions, relation_weights, dedicated_size, mediator_size),
        )
        terms = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in terms.items()}
        return terms, grads

    def _distributed_apply(self, grads):
        """The optimizer on every replica (it all-reduces the per-replica gradients), then the step."""
        def replica_apply(grads):
            # Re-create the gradients on this replica's device: the all-reduce places its result by the
            # device of its inputs, and the function's arguments carry none.
            grads = [None if g is None else tf.identity(g) for g in grads]
            self.optimizer.apply(grads, self.model.trainable_variables)

        self.strategy.run(replica_apply, args=(grads,))
        self.step_var.assign_add(1)

    def _compute_distributed(self, ded, med, peer_preds, active):
        """Cut the host batches across the replicas (a mediator batch and its peer predictions alike) and compute."""
        workers = self._input_shard[0]

        def global_size(batch):
            if batch is None:
                return None
            return tf.constant(int(tf.nest.flatten(batch)[0].shape[0]) * workers, tf.int32)

        ded_size, med_size = global_size(ded), global_size(med)
        if ded is not None:
            ded = distribute.split_batch(self.strategy, ded, self._local_replicas)
        if med is not None:
            med, peer_preds = distribute.split_batch(self.strategy, (med, peer_preds), self._local_replicas)
        return self._distributed_compute_fn(ded, med, peer_preds, active, ded_size, med_size)

    def compute(self, mediator_batch=None, dedicated_batch=None) -> tuple[dict[str, float], list] | None:
        """Draw data per the schedule, compute losses and gradients at the current weights.

        Returns (loss terms as floats, gradients), or None if the schedule has nothing to do or the task is frozen.
        With a ``weighting`` the gradients are (the model's, the weighting's variables', its extra update inputs),
        and the terms include each loss term's mean and weight (``supervised/<term>``, ``weight/<term>``).
        Raises NonFiniteLossError (nothing applied) when a loss is NaN/Inf.
        """
        if self.frozen:
            return None
        if mediator_batch is not None:
            self._count_drawn(1)  # a collective's shared stream: its position is checkpointed by every trainer
        step = self.step
        for peer in self.peers.values():
            peer.on_step(step)
        weights = {r.name: r.weight_for(self.name) * r.scale_at(step) for r in self.relations}
        weights = {k: v for k, v in weights.items() if v != 0.0}  # relations still warming up cost nothing
        has_med = bool(weights) and (mediator_batch is not None or self.mediator is not None)
        use_ded, use_med = self.schedule.draws(step, self.dedicated is not None or dedicated_batch is not None, has_med)
        if not (use_ded or use_med):
            return None
        ded = (dedicated_batch if dedicated_batch is not None else self.next_dedicated()) if use_ded else None
        med = None
        peer_preds = {}
        if use_med:
            med = mediator_batch if mediator_batch is not None else self.next_mediator()
            med = {k: med[k] for k in self.mediator_keys()}
            peer_preds = self.peer_predictions(med, [r for r in self.relations if r.name in weights])
            if mediator_batch is None:
                self._prefetch_peers()
            weights = {r.name: w for r in self.relations if (w := weights.get(r.name)) is not None
                       and all(t == self.name or t in peer_preds for t in r.tasks)}
            if not weights:  # every peer this step needs is down
                use_med, med, peer_preds = False, None, {}
                if not use_ded:
                    return None
        if ded is not None:
            keep = tuple(self.task.input_keys) + tuple(self.task.label_keys)
            if self.weighting is not None and self.weighting.uses_ids:
                if "id" not in ded:
                    raise ValueError(f"Task {self.name!r}: {type(self.weighting).__name__} needs the dedicated batch's "
                                     f"example 'id'; the batch has keys {sorted(ded)}.")
                keep += ("id",)
            ded = {k: ded[k] for k in keep if k in ded}
        active = {k: tf.constant(v, tf.float32) for k, v in weights.items()} if use_med else {}
        if self.distributed:
            terms, grads = self._compute_distributed(ded, med, peer_preds, active)
        else:
            terms, grads = self._compute_fn(ded, med, peer_preds, active)
        values = {k: float(v) for k, v in terms.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            last = self._manager.latest_checkpoint if self._manager else None
            raise NonFiniteLossError(
                f"Task {self.name!r}, step {step}: non-finite loss {bad}. The update was not applied"
                + (f"; the last checkpoint {last} is intact and a restart resumes from it" if last else "")
                + ". Lower the learning rate (e.g. --gin_param='"
                + f"{self.name}/TaskTrainer.optimizer=...') or the relation weights, and check the inputs for NaN/Inf."
            )
        return values, grads

    def apply(self, grads) -> None:
        """Apply gradients from ``compute`` (per replica under a strategy) to the task's weights; advance the step."""
        if self.frozen:
            raise RuntimeError(f"Task {self.name!r} is frozen (TaskTrainer.frozen = True); it takes no updates.")
        if self.distributed:
            self._distributed_apply_fn(grads)
        else:
            self._apply_fn(grads)

    def train_step(self, mediator_batch=None, dedicated_batch=None) -> dict[str, float] | None:
        """compute + apply + bookkeeping (summaries, checkpoints, evaluation)."""
        result = self.compute(mediator_batch, dedicated_batch)
        if result is None:
            return None
        values, grads = result
        self.apply(grads)
        self.after_step(values)
        return values

    def train(self, num_steps: int, progress: bool = False) -> dict[str, float]:
        """Train on its own (own dedicated and mediator iterators) up to ``num_steps`` total steps."""
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=self.step, desc=self.name, disable=not progress, dynamic_ncols=True)
        first = True
        started = (time.monotonic(), time.process_time(), self.step)
        timed_from = None  # (time, CPU time, step) after the first step: its tracing stays out of the rate
        try:
            with stopping.training_loop():
                while self.step < num_steps:
                    if first:
                        bar.set_postfix_str(TRACING_NOTE)
                    down_before = sum(self.peer_unavailable_steps.values())
                    values = self.train_step()
                    stopping.check(lambda: [self.save()], self.step)
                    if values is None:
                        if sum(self.peer_unavailable_steps.values()) > down_before:
                            time.sleep(0.5)  # only peer-dependent work this step and the peers are down: wait for them
                            continue
                        break
                    if first:
                        timed_from = (time.monotonic(), time.process_time(), self.step)
                    first = False
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['total']:.4f}")
        finally:
            bar.close()
            self.throughput = throughput_record(started, timed_from, (time.monotonic(), time.process_time(), self.step))
        self.save()
        return self.evaluate() if self.eval_data is not None else {}

    # --- bookkeeping ----------------------------------------------------------------------------
    def _writer(self, kind: str):
        if not self.workdir:
            return None
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(storage.join(self.workdir, "logs", kind))
        return self._writers[kind]

    def after_step(self, values: Mapping[str, float]) -> None:
        step = self.step
        if self.weighting is not None:
            prefix = "supervised/"
            self.weighting.after_step(step, {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)})
        if self.summary_every and step % self.summary_every == 0 and self._writer("train") is not None:
            now = time.monotonic()
            with self._writer("train").as_default(step=step):
                for k, v in values.items():
                    tf.summary.scalar(f"loss/{k}", v)
                tf.summary.scalar("learning_rate", float(self.optimizer.learning_rate))
                for name, peer in self.peers.items():
                    for k, v in peer.staleness().items():
                        tf.summary.scalar(f"staleness/{name}/{k}", v)
                if self._last_time is not None and step > self._last_step:
                    tf.summary.scalar("steps_per_second", (step - self._last_step) / max(now - self._last_time, 1e-9))
            self._last_time, self._last_step = now, step
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save()
        if self.eval_every and step % self.eval_every == 0 and self.eval_data is not None:
            self.evaluate()
        if self.export_every and step % self.export_every == 0:
            self.export()

    def save(self) -> str | None:
        """Write a checkpoint atomically (the index file is updated last); returns its path."""
        if self._manager is None:
            return None
        latest = self._manager.latest_checkpoint
        if latest and latest.endswith(f"-{self.step}"):
            return latest  # this step is already saved
        return self._manager.save(checkpoint_number=self.step_var)

    def export(self) -> str | None:
        """Publish the current network as version ``<workdir>/export/<step>`` (atomic); returns its folder."""
        if not self.workdir:
            return None
        from taskology_tf.serving.export import export_model

        return export_model(self.model, storage.join(self.workdir, "export"), self.step, keep=self.export_keep or None,
                            image_size_multiple=self.task.image_size_multiple)

    def _make_manager(self):
        return tf.train.CheckpointManager(
            self._ckpt, storage.join(self.workdir, "ckpt"), max_to_keep=self._max_to_keep, step_counter=self.step_var
        )

    def listed_checkpoints(self) -> list[str]:
        """The checkpoint prefixes the ``ckpt/checkpoint`` state lists, oldest first, the latest last (also
        those the manager does not track: kept by an older run's policy, or listed without timestamps)."""
        if self._manager is None:
            return []
        # Absolute: get_checkpoint_state joins the listed names to the folder as given, and a relative one
        # (--workdir runs/x) would be joined twice below.
        ckpt_dir = storage.absolute(storage.join(self.workdir, "ckpt"))
        state = tf.train.get_checkpoint_state(ckpt_dir)
        if state is None:
            return []
        full = lambda p: p if os.path.isabs(p) or storage.is_url(p) else storage.join(ckpt_dir, p)  # noqa: E731
        listed = [full(p) for p in state.all_model_checkpoint_paths]
        latest = full(state.model_checkpoint_path) if state.model_checkpoint_path else None
        if latest and latest not in listed:
            listed.append(latest)
        elif latest:
            listed.remove(latest)
            listed.append(latest)
        return listed

    def _restore_from(self, path: str) -> None:
        """Restore everything from ``path``; a checkpoint written before data positions were saved restores
        the rest (its data streams then start from their beginning)."""
        try:
            self._ckpt.restore(path).assert_existing_objects_matched().expect_partial()
            return
        except AssertionError:
            try:
                tf.train.Checkpoint(**self._ckpt_objects).restore(path).assert_existing_objects_matched().expect_partial()
            except (AssertionError, ValueError, tf.errors.OpError):
                raise
            self.data_drawn.assign([0, 0])
            log.info("Task %r: %s predates saved data positions; the data streams start from their beginning.",
                     self.name, path)

    def restore(self, path: str | None = None) -> int:
        """Restore the latest (or given) checkpoint; returns the restored step (0 when none).

        Without ``path``, a damaged newest checkpoint (unreadable ``.index`` or ``.data`` files) is moved to
        ``ckpt/damaged/`` with one warning naming the bad file, and the next newest is tried, down to the
        oldest kept; intact files that do not fit the network are a configuration error (nothing is moved).
        """
        if path is None and self._manager is not None:
            candidates = list(reversed(self.listed_checkpoints()))
        else:
            candidates = [path] if path else []
        damaged = []
        for candidate in candidates:
            try:
                self._restore_from(candidate)
            except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:
                problem = checkpoint_damage(candidate)
                if problem is None or path is not None:
                    hint = ("" if self.weighting is None else
                            f" The trainer has weighting {self.weighting!r}: resume with the weighting that wrote the run.")
                    what = f"is damaged ({problem})" if problem else f"does not match the task's network ({e})"
                    raise CheckpointError(
                        f"Task {self.name!r}: checkpoint {candidate} {what}. "
                        + ("Restore it from a backup, or pass another checkpoint." if problem else
                           "Use a fresh --workdir, or the same task configuration that wrote it." + hint)
                    ) from e
                damaged.append((candidate, problem))
                continue
            self.restored_from = candidate
            break
        if damaged:
            self._set_aside(damaged)
            if self.restored_from is None:
                raise CheckpointDamagedError(
                    f"Task {self.name!r}: every checkpoint under {os.path.join(self.workdir, 'ckpt')} is damaged "
                    f"({'; '.join(p for _, p in damaged)}); they were moved to its damaged/ folder. Restore them "
                    "from a backup, or rerun to start the task from scratch."
                )
        return self.step

    def _set_aside(self, damaged) -> None:
        """Move the files of damaged checkpoints to ``ckpt/damaged/``, log each with the checkpoint resumed
        from, and rewrite the checkpoint list so that saving continues past them."""
        from tensorflow.python.checkpoint import checkpoint_management

        ckpt_dir = storage.absolute(storage.join(self.workdir, "ckpt"))  # as in listed_checkpoints
        aside = storage.join(ckpt_dir, "damaged")
        storage.makedirs(aside)
        bad = {prefix for prefix, _ in damaged}
        for prefix, problem in damaged:
            for f in tf.io.gfile.glob(f"{prefix}.*"):
                storage.rename(f, storage.join(aside, posixpath.basename(f)))
            resumed = (f"resuming from {os.path.basename(self.restored_from)} (step {self.step}) instead"
                       if self.restored_from else "no older intact checkpoint")
            log.warning("Task %r: %s; %s. Its files were moved to %s.", self.name, problem, resumed, aside)
        state = tf.train.get_checkpoint_state(ckpt_dir)
        listed = list(state.all_model_checkpoint_paths) if state else []
        stamps = list(state.all_model_checkpoint_timestamps) if state else []
        if len(stamps) != len(listed):
            stamps = [time.time()] * len(listed)
        full = [p if os.path.isabs(p) or storage.is_url(p) else storage.join(ckpt_dir, p) for p in listed]
        kept = [(p, t) for p, t in zip(full, stamps) if p not in bad]
        if kept:
            # With their timestamps, or the manager would stop tracking (and never delete) the kept ones.
            checkpoint_management.update_checkpoint_state_internal(
                save_dir=ckpt_dir, model_checkpoint_path=kept[-1][0], all_model_checkpoint_paths=[p for p, _ in kept],
                all_model_checkpoint_timestamps=[t for _, t in kept],
                last_preserved_timestamp=state.last_preserved_timestamp, save_relative_paths=True,
            )
        else:
            storage.remove(storage.join(ckpt_dir, "checkpoint"))
        self._manager = self._make_manager()

    def restore_model(self, checkpoint: str) -> str:
        """Load only the network's weights from ``checkpoint`` (a prefix, or a folder holding checkpoints
        directly or in ``ckpt/``); the optimizer and the step are left as they are. Returns the prefix used."""
        path = resolve_checkpoint(checkpoint)
        if path is None:
            raise FileNotFoundError(
                f"Task {self.name!r}: no checkpoint at init_checkpoint={checkpoint!r} (expected a checkpoint prefix "
                "such as <run>/<task>/ckpt/ckpt-1000, or a folder with checkpoints in it or in its ckpt/). Train "
                f"the source run first, or fix {self.name}/TaskTrainer.init_checkpoint."
            )
        try:
            tf.train.Checkpoint(model=self.model).restore(path).assert_existing_objects_matched().expect_partial()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise ValueError(
                f"Task {self.name!r}: init_checkpoint {path} does not match the task's network ({e}). Configure the "
                "task as in the run that wrote it (same preset, frames, object_motion, classes, ...)."
            ) from e
        log.info("Task %r: network initialised from %s.", self.name, path)
        return path

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        return self._predict_fn(self.task.model_inputs(inputs))

    def evaluate(self, data: tf.data.Dataset | None = None, batch_size: int | None = None, write: bool = True) -> dict[str, float]:
        """Metrics of the task on ``data`` (default: its eval data); writes scalar and image summaries."""
        data = data if data is not None else self.eval_data
        if data is None:
            raise ValueError(f"Task {self.name!r} has no evaluation data; set {self.name}/TaskTrainer.eval_data.")
        check_element_spec(data.element_spec, self.task.labelled_keys(), f"Task {self.name!r} (evaluation data)")
        metrics = self.task.make_metrics()
        first = None
        batches = iter(batched(data, batch_size or self.batch_size, repeat=False))
        while True:
            try:
                batch = data_errors.next_batch(batches, f"Task {self.name!r} (evaluation data)", data)
            except StopIteration:
                break
            preds = self.predict(batch)
            batch_np = {k: v.numpy() for k, v in batch.items()}
            preds_np = {k: v.numpy() for k, v in preds.items()}
            metrics.update(batch_np, preds_np)
            if first is None:
                first = (batch_np, preds_np)
        result = {k: float(v) for k, v in metrics.result().items()}
        if write and self._writer("eval") is not None:
            with self._writer("eval").as_default(step=self.step):
                for k, v in result.items():
                    tf.summary.scalar(f"metrics/{k}", v)
                if first is not None and self.image_summaries:
                    for name, images in self.task.summary_images(*first).items():
                        tf.summary.image(name, np.clip(images, 0.0, 1.0).astype(np.float32), max_outputs=self.image_summaries)
            for w in self._writers.values():
                w.flush()
        return result

    def close(self) -> None:
        """Flush the summaries and release the workdir's lock."""
        for w in self._writers.values():
            w.flush()
            w.close()
        self._writers.clear()
        if self._lock is not None:
            self._lock.release()


def throughput_record(started, timed_from, ended) -> dict[str, float]:
    """Steps, seconds and CPU of a training loop, each argument a (monotonic time s, process CPU time s, step).

    ``timed_from`` is taken after the first step (None: the loop made none), so ``steps_per_second`` and
    ``cpu_cores`` (CPU seconds per second, all the process's threads) leave the first step's tracing out;
    ``steps`` and ``first_step_seconds`` count it.
    """
    record = {"steps": ended[2] - started[2]}
    if timed_from is None:
        return record
    seconds, timed = ended[0] - timed_from[0], ended[2] - timed_from[2]
    cpu = ended[1] - timed_from[1]
    record.update(first_step_seconds=round(timed_from[0] - started[0], 3), timed_steps=timed,
                  seconds=round(seconds, 3), cpu_seconds=round(cpu, 3))
    if timed > 0 and seconds > 0:
        record.update(steps_per_second=round(timed / seconds, 3), cpu_cores=round(cpu / seconds, 3))
    return record


def checkpoint_damage(prefix: str) -> str | None:
    """Why the files of checkpoint ``prefix`` cannot be read (naming the bad file), or None when they read fine.

    Reads the index and every tensor (TensorFlow checks each tensor's checksum), so it costs a full read;
    called only after a restore failed, to tell damaged files from a checkpoint of another network.
    """
    index = f"{prefix}.index"
    if not storage.exists(index):
        return f"checkpoint file {index} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        return f"checkpoint file {index} is damaged ({_first_line(e)})"
    shards = sorted(tf.io.gfile.glob(f"{prefix}.data-*"))
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        message = _first_line(e)
        shard = re.search(r"shard (\d+)", message)
        if shard and len(shards) > int(shard.group(1)):
            files = shards[int(shard.group(1))]
        else:
            files = shards[0] if len(shards) == 1 else f"{prefix}.data-*"
        return f"checkpoint file {files} is damaged ({message})"
    return None


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0][:300]


def resolve_checkpoint(path: str) -> str | None:
    """A checkpoint prefix from a prefix or a folder (its latest checkpoint, or that of its ``ckpt/``); None if none."""
    path = os.fspath(path)
    if storage.isdir(path):
        return tf.train.latest_checkpoint(path) or tf.train.latest_checkpoint(storage.join(path, "ckpt"))
    return path if storage.exists(f"{path}.index") else None


def write_json_atomic(path: str, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (readers never see half a file)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False))


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see half of it: a temporary file, fsync and a rename on
    a local path; one object write on a filesystem URL (``gs://``, ``ram://``; ``core/storage.py``)."""
    storage.write_text_atomic(path, text)
