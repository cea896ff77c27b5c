"""Training throughput of a collective (rounds/second; one round = one step of each task).

    .venv/bin/python benchmarks/train_step.py                       # 64x128, tiny nets (the demo's setting)
    .venv/bin/python benchmarks/train_step.py --preset resnet18 --height 128 --width 416 --batch 4 --steps 5
    .venv/bin/python benchmarks/train_step.py --experiment table1_e --steps 60 \
        --gin_param "video_train/synthetic.num_examples = 256"   # a paper experiment's collective

Reports the time of the first round (tracing) and the mean of the next ``--steps`` rounds: for the depth +
normals collective, the baseline (no relation), with consistency, and with consistency compiled by XLA; for
``--experiment NAME``, that gin experiment's collective (checkpoints and summaries off) without and with XLA.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(preset, height, width, batch, steps, relation, jit):
    import keras

    from taskology_tf.core.collective import Collective
    from taskology_tf.core.trainer import TaskTrainer
    from taskology_tf.data.synthetic.dataset import synthetic_dataset
    from taskology_tf.relations.depth_normals import depth_normals
    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.normals import NormalsTask

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keys = ("image", "intrinsics", "depth", "normals")
    data = synthetic_dataset("sim", num_examples=4 * batch, height=height, width=width, keys=keys).cache()
    med = synthetic_dataset("real", num_examples=4 * batch, seed=2, height=height, width=width, keys=("image", "intrinsics")).cache()
    rels = [depth_normals()] if relation else []
    trainers = [
        TaskTrainer(DepthTask(preset=preset), rels, dedicated=data, batch_size=batch, jit_compile=jit),
        TaskTrainer(NormalsTask(preset=preset), rels, dedicated=data, batch_size=batch, jit_compile=jit),
    ]
    coll = Collective(trainers, mediator=med if relation else None, mediator_batch_size=batch)
    return time_rounds(coll, steps)


def time_rounds(collective, steps):
    """(seconds of the first round, mean seconds of the next ``steps`` rounds, trainable parameters)."""
    t0 = time.perf_counter()
    collective.round()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        collective.round()
    per_round = (time.perf_counter() - t0) / steps
    params = sum(int(v.numpy().size) for t in collective.trainers.values() for v in t.model.trainable_variables)
    return first, per_round, params


def measure_experiment(name, gin_params, steps, jit):
    """First round and mean seconds per round of experiment ``name``'s collective; also its parameter count."""
    import tempfile

    import gin
    import keras

    from taskology_tf.cli import parse_gin
    from taskology_tf.experiment import Experiment

    gin.clear_config()
    keras.backend.clear_session()
    parse_gin([name], [*gin_params, "TaskTrainer.checkpoint_every = 0", "TaskTrainer.summary_every = 0",
                       f"TaskTrainer.jit_compile = {jit}"])
    with tempfile.TemporaryDirectory() as workdir:
        collective = Experiment().build_collective(workdir)
        try:
            return time_rounds(collective, steps)
        finally:
            collective.close()
            gin.clear_config()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--experiment", help="time this gin experiment's collective instead (e.g. table1_e)")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding (with --experiment)")
    args = p.parse_args()
    header = f"{'setting':<28}{'first round (s)':>16}{'rounds/s':>10}{'ms/round':>10}{'params':>12}"
    if args.experiment:
        from taskology_tf import runtime

        runtime.configure(False)
        print(f"experiment={args.experiment} {' '.join(args.gin_param)}")
        print(header)
        for name, jit in (("tf.function, no XLA", False), ("XLA (jit_compile)", True)):
            first, per_round, params = measure_experiment(args.experiment, args.gin_param, args.steps, jit)
            print(f"{name:<28}{first:>16.1f}{1 / per_round:>10.2f}{1000 * per_round:>10.0f}{params:>12,}", flush=True)
        return
    print(f"preset={args.preset} image={args.height}x{args.width} batch={args.batch}")
    print(header)
    for name, relation, jit in (("baseline", False, False), ("consistency", True, False), ("consistency + XLA", True, True)):
        first, per_round, params = measure(args.preset, args.height, args.width, args.batch, args.steps, relation, jit)
        print(f"{name:<28}{first:>16.1f}{1 / per_round:>10.2f}{1000 * per_round:>10.0f}{params:>12,}")


if __name__ == "__main__":
    main()
