"""An experiment: which tasks, which relations, which shared mediator data, how long.

Configured with gin (one file per paper table row under ``gin/experiments``). Each task's trainer is
built inside ``gin.config_scope(task_name)``, so ``depth/TaskTrainer.batch_size = 4`` or
``normals/NormalsTask.learning_rate = 1e-4`` set one task's hyper-parameters only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Mapping, Sequence

import gin

from taskology_tf.core.registry import relation_factory, task_factory
from taskology_tf.core.validation import check_gin_scopes, checked_task_copies, whole_number


@gin.configurable
class Experiment:
    """Args:
      tasks: task names (registered with ``register_task``).
      relations: relation names (registered with ``register_relation``).
      mediator: unbatched dataset shared by the relations (unlabelled), or None.
      mediator_batch_size: batch size of the shared mediator batches.
      train_steps: steps of every trainer.
      seed: seeds weight initialisation (``keras.utils.set_random_seed``) and mediator shuffling, so a run
        is repeatable and two runs that differ only in their relations start from the same weights.
      ground_truth: tasks (among ``tasks``) that are not trained but answer as ``GroundTruthPeer``s with
        their true predictions from the mediator's labels (e.g. ``['motion']`` trains depth against the
        true camera motion); the mediator must then carry those labels.
      task_copies: task name -> the registered task it is built as, for a second task of one kind under its own
        name, scope and trainer, e.g. ``{'segmentation_teacher': 'segmentation'}`` (a frozen copy whose
        ``init_checkpoint`` is another run's network, read by a relation as a teacher). Every key must be in ``tasks``.
    """

    def __init__(
        self,
        tasks: Sequence[str] = gin.REQUIRED,
        relations: Sequence[str] = (),
        mediator=None,
        mediator_batch_size: int = 8,
        train_steps: int = 1000,
        seed: int = 0,
        ground_truth: Sequence[str] = (),
        task_copies: Mapping[str, str] | None = None,
    ):
        if isinstance(tasks, str) or isinstance(relations, str):
            raise ValueError("Experiment.tasks and Experiment.relations are lists of names, e.g. "
                             f"Experiment.tasks = ['depth'], got tasks={tasks!r}, relations={relations!r}.")
        if not tasks:
            raise ValueError("Experiment.tasks is empty: name at least one task, e.g. Experiment.tasks = ['depth'].")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"Experiment.tasks has duplicates: {list(tasks)}.")
        self.train_steps = whole_number("Experiment.train_steps", train_steps)
        self.mediator_batch_size = whole_number("Experiment.mediator_batch_size", mediator_batch_size, 1)
        self.seed = whole_number("Experiment.seed", seed, None)
        self.task_names = list(tasks)
        if isinstance(ground_truth, str):
            raise ValueError(f"Experiment.ground_truth is a list of task names, e.g. ['motion'], got {ground_truth!r}.")
        self.ground_truth = list(ground_truth)
        unknown = [t for t in self.ground_truth if t not in self.task_names]
        if unknown:
            raise ValueError(f"Experiment.ground_truth names {unknown}, which are not in Experiment.tasks "
                             f"{self.task_names}.")
        if len(self.ground_truth) == len(self.task_names):
            raise ValueError("Every task is in Experiment.ground_truth: nothing to train.")
        self.task_copies = checked_task_copies(task_copies, self.task_names)
        self.relation_names = list(relations)
        check_gin_scopes(self.task_names, self.relation_names)
        self.mediator = mediator
        import keras

        keras.utils.set_random_seed(int(seed))
        self.tasks = {}
        for name in self.task_names:
            factory = task_factory(self.task_copies.get(name, name))
            with gin.config_scope(name):
                self.tasks[name] = factory(name=name)
        self.relations = []
        for name in self.relation_names:
            factory = relation_factory(name)
            with gin.config_scope(name):
                relation = factory()
            missing = [t for t in relation.tasks if t not in self.tasks]
            if missing:
                raise ValueError(
                    f"Relation {name!r} ties tasks {list(relation.tasks)} but the experiment has only "
                    f"{self.task_names}; add {missing} to Experiment.tasks or remove the relation."
                )
            self.relations.append(relation)
        if self.relations and mediator is None:
            raise ValueError(
                f"Relations {self.relation_names} need shared mediator data: set Experiment.mediator "
                "(e.g. Experiment.mediator = @real_train/synthetic())."
            )

    def build_trainer(self, name: str, workdir: str | None, **overrides):
        """The trainer of task ``name`` (its gin scope applies), writing to ``workdir/name``."""
        from taskology_tf.core.trainer import TaskTrainer

        relations = [r for r in self.relations if name in r.tasks]
        with gin.config_scope(name):
            return TaskTrainer(
                self.tasks[name], relations, workdir=workdir and os.path.join(workdir, name), **overrides
            )

    def build_collective(self, workdir: str | None):
        from taskology_tf.core.collective import Collective

        import keras

        trainers = []
        for i, name in enumerate(self.task_names):
            if name in self.ground_truth:
                continue
            keras.utils.set_random_seed(int(self.seed) * 1000 + i)  # a task's initial weights do not depend on its peers
            trainers.append(self.build_trainer(name, workdir))
            self._add_ground_truth_peers(trainers[-1])
        return Collective(
            trainers,
            mediator=self.mediator if self.relations else None,
            mediator_batch_size=self.mediator_batch_size,
            seed=self.seed,
        )

    @property
    def trained_tasks(self) -> list[str]:
        """The tasks that train (all but ``ground_truth``), in order."""
        return [t for t in self.task_names if t not in self.ground_truth]

    def _add_ground_truth_peers(self, trainer) -> None:
        from taskology_tf.core.peer import GroundTruthPeer

        for peer in self.peer_tasks(trainer.name):
            if peer in self.ground_truth:
                trainer.peers[peer] = GroundTruthPeer(self.tasks[peer])

    def peer_tasks(self, name: str) -> list[str]:
        """The other tasks whose predictions task ``name``'s relations read."""
        return sorted({t for r in self.relations if name in r.tasks for t in r.tasks if t != name})

    def build_standalone(self, name: str, workdir: str, peer_addresses: dict[str, str], **peer_kwargs):
        """Task ``name``'s trainer as its own job: its own mediator stream, peers served over gRPC.

        ``peer_addresses``: peer task -> ``host:port`` of a server (ours or ``tensorflow_model_server``)
        serving that task's exports under the task's name. The trainer's ``peer_refresh_*`` knobs apply.
        """
        import keras

        from taskology_tf.serving.peer import ServingPeer

        if name in self.ground_truth:
            raise ValueError(f"Task {name!r} is in Experiment.ground_truth: it is not trained.")
        missing = [t for t in self.peer_tasks(name) if t not in peer_addresses and t not in self.ground_truth]
        if missing:
            raise ValueError(
                f"Task {name!r} needs the predictions of {missing}; give their servers with --peer TASK=HOST:PORT."
            )
        from taskology_tf.core import workdir as workdir_lib

        keras.utils.set_random_seed(int(self.seed) * 1000 + self.task_names.index(name))
        with workdir_lib.lock(os.path.join(workdir, name)):  # before the data renders; the trainer keeps it
            trainer = self.build_trainer(name, workdir, mediator=self.mediator if self.relations else None)
        self._add_ground_truth_peers(trainer)
        for peer in self.peer_tasks(name):
            if peer in self.ground_truth:
                continue
            with gin.config_scope(name):  # e.g. depth/ServingPeer.timeout = 2.0
                trainer.peers[peer] = self._serving_peer(ServingPeer, peer, peer_addresses[peer], trainer, peer_kwargs)
        return trainer

    def _serving_peer(self, cls, peer, address, trainer, peer_kwargs):
        return cls(
            peer,
            address,
            input_keys=tuple(self.tasks[peer].input_keys),
            output_keys=tuple(self.tasks[peer].output_keys),
            refresh_steps=trainer.peer_refresh_steps,
            refresh_seconds=trainer.peer_refresh_seconds,
            **peer_kwargs,
        )

    def run(self, workdir: str, progress: bool = True, desc: str = "collective") -> dict:
        """Train all tasks collectively (resuming if ``workdir`` has checkpoints), evaluate, write metrics.json."""
        from taskology_tf.core import workdir as workdir_lib
        from taskology_tf.core.trainer import write_json_atomic, write_text_atomic

        # Every task's folder is locked before any data is rendered: a second run on this workdir stops at once.
        with contextlib.ExitStack() as locks:
            for name in self.trained_tasks:
                locks.enter_context(workdir_lib.lock(os.path.join(workdir, name)))
            collective = self.build_collective(workdir)
            try:
                collective.train(self.train_steps, progress=progress, desc=desc)
                metrics = collective.evaluate()
            finally:
                collective.close()
        # Only now does gin know every binding the run used (trainers, data sources, optimizers).
        write_text_atomic(os.path.join(workdir, "operative_config.gin"), gin.operative_config_str())
        result = {"step": self.train_steps, "metrics": metrics}
        write_json_atomic(os.path.join(workdir, "metrics.json"), result)
        return result


def run_length_bindings(steps: int) -> list[str]:
    """The gin bindings of a run of ``steps`` steps: ``Experiment.train_steps`` and the macro ``STEPS`` that the
    experiment files use to size their learning-rate schedules."""
    return [f"STEPS = {int(steps)}", f"Experiment.train_steps = {int(steps)}"]


def run_experiment_files(run_dir: str, gin_files: Sequence[str], gin_params: Sequence[str] = (),
                         steps: int | None = None, progress: bool = True, desc: str = "collective") -> dict:
    """One row of a paper table: parse ``gin_files`` + ``gin_params`` afresh (gin config and Keras session
    cleared first), run the ``Experiment`` in ``run_dir`` (resuming from its checkpoints), return its result.

    ``steps``: overrides ``Experiment.train_steps`` and binds the macro ``STEPS`` (None: the files' values), so
    files that write ``Experiment.train_steps = %STEPS`` and size learning-rate schedules with ``%STEPS`` follow
    the run length. Gin is left configured, so the caller can still query bindings of the row; callers running
    several rows clear it in the end.
    """
    import keras

    from taskology_tf.cli import parse_gin

    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    gin.clear_config()
    keras.backend.clear_session()
    params = list(gin_params) + (run_length_bindings(steps) if steps is not None else [])
    parse_gin(list(gin_files), params)
    return Experiment().run(run_dir, progress=progress, desc=desc)


def run_rows(workdir: str, rows, row_fn, steps: int | None = None, gin_params: Sequence[str] = (),
             progress: bool = True, desc: str = "") -> list:
    """Run the rows of a paper table in order, each in ``<workdir>/<key>`` (resuming), timing and logging them.

    ``rows``: (key, label, gin files, extra bindings) per row. ``row_fn(key, result)`` turns a row's result
    into its table entry while the row's gin configuration is still in place (e.g. to query a binding).
    Returns the entries; gin is cleared in the end.
    """
    import time

    if steps is not None and steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    os.makedirs(workdir, exist_ok=True)
    entries = []
    try:
        for key, label, gin_files, params in rows:
            run_dir = os.path.join(workdir, key)
            print(f"[{key}] {label} -> {run_dir}", flush=True)
            t0 = time.monotonic()
            result = run_experiment_files(run_dir, gin_files, [*gin_params, *params], steps, progress=progress,
                                          desc=f"{desc} {key}".strip())
            entries.append(row_fn(key, result))
            print(f"[{key}] done in {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        gin.clear_config()
    return entries


def publish_table(workdir: str, name: str, table, title: str, text: str, seconds: float) -> str:
    """Write ``table`` to ``<workdir>/<name>.json`` atomically and print the title, the formatted ``text``,
    the time taken and the json's path (last, for scripts). Returns the path."""
    from taskology_tf.core.trainer import write_json_atomic

    path = os.path.join(workdir, f"{name}.json")
    write_json_atomic(path, table)
    print()
    print(title)
    print(text)
    print(f"\n({seconds:.0f} s; TensorBoard: tensorboard --logdir {workdir})")
    print(path)
    return path
