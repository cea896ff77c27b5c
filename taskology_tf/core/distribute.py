"""``tf.distribute`` strategies for a trainer, chosen by name (and gin), plus the helpers a trainer needs.

A ``TaskTrainer`` trains one task's network; a strategy spreads that one network's step over the
devices of its job (data parallelism inside a task, not across tasks)::

    depth/TaskTrainer.strategy = "mirrored"            # all local GPUs (or all logical CPUs)
    depth/TaskTrainer.strategy = @make_strategy()      # or configure the factory itself:
    make_strategy.name = "tpu"
    make_strategy.tpu = "local"                       # a TPU VM

Names:
  ``"default"``      TensorFlow's default strategy: no distribution, the plain single-device loop.
  ``"mirrored"``     ``MirroredStrategy`` over every local GPU; on a machine without GPUs, over every
                     *logical* CPU device (one unless ``use_logical_cpus`` split the CPU first, which is
                     how the tests check that mirrored training equals single-device training).
  ``"multi_worker"`` ``MultiWorkerMirroredStrategy``, cluster and this worker's role from ``TF_CONFIG``.
                     Create it before anything else touches TensorFlow's devices (TensorFlow's rule).
  ``"tpu"``          ``TPUStrategy`` on the TPU named by ``tpu`` (or the ``TPU_NAME`` environment).

Batch sizes given to a trainer under a strategy are *global* (all replicas of all workers together);
losses are averaged with ``tf.nn.compute_average_loss`` over that global batch, so the gradient the
optimizer all-reduces is the gradient of the same mean loss the single-device loop minimises.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import gin
import tensorflow as tf

STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")

# Strategies are made once per process (and configuration): multi-worker and TPU strategies own
# process-wide state (collective ops, the TPU system), and mirrored ones must not mix their collectives.
_PROCESS_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


@gin.configurable
def make_strategy(
    name: str = "default",
    *,
    devices: Sequence[str] | None = None,
    tpu: str | None = None,
) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` called ``name`` (one of ``STRATEGY_NAMES``).

    Args:
      name: ``"default"``, ``"mirrored"``, ``"multi_worker"`` or ``"tpu"``.
      devices: ``"mirrored"`` only: explicit device names (default: all local GPUs, else all logical CPUs).
      tpu: ``"tpu"`` only: the TPU's name or ``grpc://`` address, ``"local"`` on a TPU VM; None reads
        ``TPU_NAME`` from the environment.

    Raises:
      ValueError: unknown ``name``; ``TF_CONFIG`` missing or invalid for ``"multi_worker"``.
      RuntimeError: ``"tpu"`` and no TPU can be reached.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in STRATEGY_NAMES:
        raise ValueError(
            f"Unknown strategy name={name!r}; use one of {list(STRATEGY_NAMES)} "
            "(e.g. TaskTrainer.strategy = 'mirrored')."
        )
    if devices is not None and key != "mirrored":
        raise ValueError(f"devices={list(devices)} only applies to the 'mirrored' strategy, not {key!r}.")
    if key == "default":
        if tf.distribute.has_strategy():
            raise ValueError(
                "make_strategy('default') was called inside another strategy's scope; call it outside any "
                "`strategy.scope()`."
            )
        return tf.distribute.get_strategy()
    if key == "mirrored":
        # One per device set and process: separate MirroredStrategy objects whose collectives interleave
        # (two trainers stepping in turn) can pair up each other's all-reduces.
        devices = tuple(devices) if devices else tuple(local_devices())
        if ("mirrored", devices) not in _PROCESS_STRATEGIES:
            _PROCESS_STRATEGIES[("mirrored", devices)] = tf.distribute.MirroredStrategy(devices=list(devices))
        return _PROCESS_STRATEGIES[("mirrored", devices)]
    if key == "multi_worker":
        cluster = tf_config()
        cache = ("multi_worker", json.dumps(cluster, sort_keys=True))
        if cache not in _PROCESS_STRATEGIES:
            _PROCESS_STRATEGIES[cache] = tf.distribute.MultiWorkerMirroredStrategy()
        return _PROCESS_STRATEGIES[cache]
    return _tpu_strategy(tpu)


def local_devices() -> list[str]:
    """Devices ``"mirrored"`` spreads over: every local GPU, or every logical CPU when there is no GPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def tf_config() -> dict[str, Any]:
    """The parsed and checked ``TF_CONFIG`` environment variable (cluster spec and this task's role).

    Raises ValueError naming what is missing, with an example of a valid value.
    """
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise ValueError(
            "The 'multi_worker' strategy reads the cluster from the TF_CONFIG environment variable, which is "
            f"not set. Set it on every worker, e.g. {example}, or use strategy 'mirrored' on one machine."
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {example}.") from e
    if not isinstance(config, Mapping):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {type(config).__name__}; expected e.g. {example}.")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, Mapping) or not any(cluster.get(k) for k in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG needs a 'cluster' with a 'worker' (or 'chief') address list; expected e.g. {example}.")
    if not isinstance(task, Mapping) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs 'task': {{'type': ..., 'index': ...}} for this process; expected e.g. {example}.")
    jobs = cluster.get(task["type"])
    if not isinstance(jobs, Sequence) or isinstance(jobs, str):
        raise ValueError(f"TF_CONFIG task type {task['type']!r} is not a job of the cluster {sorted(cluster)}.")
    if not isinstance(task["index"], int) or not 0 <= task["index"] < len(jobs):
        raise ValueError(
            f"TF_CONFIG task index {task['index']!r} is out of range for job {task['type']!r} with {len(jobs)} task(s)."
        )
    return dict(config)


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    cache = ("tpu", tpu)
    if cache in _PROCESS_STRATEGIES:
        return _PROCESS_STRATEGIES[cache]
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise RuntimeError(
            f"No TPU could be reached for the 'tpu' strategy (tpu={tpu!r}, TPU_NAME={os.environ.get('TPU_NAME')!r}): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Set make_strategy.tpu (e.g. 'local' on a TPU VM, "
            "or the TPU's name), or use strategy 'mirrored' / 'default'."
        ) from e
    _PROCESS_STRATEGIES[cache] = strategy
    return strategy


def resolve_strategy(strategy: str | tf.distribute.Strategy | None) -> tf.distribute.Strategy:
    """A strategy from a trainer argument: a name (``make_strategy``), a strategy, or None (the current one).

    None means the strategy in whose scope the trainer is built: TensorFlow's default strategy unless
    the caller entered ``some_strategy.scope()``.
    """
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, str):
        return make_strategy(strategy)
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise TypeError(
        f"strategy must be a name {list(STRATEGY_NAMES)}, a tf.distribute.Strategy or None, got {type(strategy).__name__}."
    )


def is_default(strategy: tf.distribute.Strategy) -> bool:
    """True for TensorFlow's default (no-op) strategy."""
    with strategy.scope():
        return not tf.distribute.has_strategy()


def input_shard(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(number of input pipelines, this process's index): how many workers feed the strategy and which one this is.

    One pipeline for single-host strategies (default, mirrored, TPU); one per worker for multi-worker mirrored,
    so that each worker reads its own shard of the data.
    """
    local = len(strategy.extended.worker_devices)
    workers = max(1, strategy.num_replicas_in_sync // max(local, 1))
    if workers == 1:
        return 1, 0
    return workers, local_replica_ids(strategy)[0] // local


def local_replica_ids(strategy: tf.distribute.Strategy) -> list[int]:
    """Global ids (``replica_id_in_sync_group``) of the replicas that run in this process, ascending."""
    ids = strategy.experimental_distribute_values_from_function(lambda ctx: ctx.replica_id_in_sync_group)
    return sorted(int(i) for i in strategy.experimental_local_results(ids))


def split_batch(strategy: tf.distribute.Strategy, batch: Any, local_ids: Sequence[int] | None = None) -> Any:
    """Spread a host batch (nested structure of [B, ...] tensors) over the strategy's local replicas.

    Every leaf is cut along its first axis into contiguous, nearly equal parts, local replica ``k`` getting
    rows ``[k*B//n, (k+1)*B//n)`` of an ``n``-replica host; leaves with the same ``B`` (a mediator batch and
    the peer predictions computed on it) are therefore cut identically. Returns the structure with
    per-replica values, for ``strategy.run``. ``local_ids``: ``local_replica_ids(strategy)``, if known.
    """
    batch = tf.nest.map_structure(tf.convert_to_tensor, batch)
    ids = list(local_ids) if local_ids is not None else local_replica_ids(strategy)
    first, n = ids[0], len(ids)

    def part(ctx):
        k = ctx.replica_id_in_sync_group - first

        def rows(t):
            size = int(t.shape[0])
            return t[k * size // n:(k + 1) * size // n]

        return tf.nest.map_structure(rows, batch)

    return strategy.experimental_distribute_values_from_function(part)


def use_logical_cpus(count: int) -> list[str]:
    """Split the host CPU into ``count`` logical devices (for testing multi-device code without GPUs).

    TensorFlow fixes its devices the first time anything needs them (an op, a tensor, a model, a
    ``tf.data`` pipeline, ``list_logical_devices``), so call this first thing in a fresh process, e.g. in a
    ``python -c`` subprocess of a test. Calling it again with the count already in effect is fine.
    Returns the logical CPU device names.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1 logical CPU devices, got {count}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        have = tf.config.list_logical_devices("CPU")
        if len(have) == count:
            return [d.name for d in have]
        raise RuntimeError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow already initialised its {len(have)} "
            "CPU device(s) in this process. Call use_logical_cpus before anything else touches TensorFlow "
            "(run it first in a fresh process, e.g. a test's subprocess)."
        ) from e
    return [d.name for d in tf.config.list_logical_devices("CPU")]
