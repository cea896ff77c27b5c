"""One jitted train step of each paper-size network through Keras 3's JAX backend: time, FLOPs, MFU (issue 15 part 2).

    KERAS_BACKEND=jax python benchmarks/gpu_step.py --out /tmp/gpu_step.json          # paper size
    KERAS_BACKEND=jax python benchmarks/gpu_step.py --size tiny --steps 2 --warmup 1  # seconds, for tests

Networks (the project's own Keras models and losses, ``taskology_tf.tasks``/``relations``; no TensorFlow):

* ``depth_motion``: DepthTask (ResNet-18 U-Net, two frames) and MotionTask ("paper" widths), 128x416, batch 4
  clips; loss = the depth task's supervised loss on both frames + the ``depth_motion`` photometric relation.
* ``segmentation``: SegmentationTask (NAS-FPN on keras.applications ResNet-50, 256 filters, 5 repeats,
  8 classes), a Cityscapes-sized crop of 512x1024, batch 4; per-pixel cross-entropy.
* ``pointpillars``: DetectionTask (PointPillars "paper": 468x468 cells of 0.32 m, 3 frames, detection and
  box-flow heads), batch 2 windows of 3 frames x 100,000 points, 16 labelled boxes per frame; focal,
  box, direction and flow losses (anchor matching inside the step).

Each step is ``jax.jit`` of: forward (``stateless_call``, training=True), the loss (``keras.ops``),
``jax.value_and_grad``, and each task's own optimizer (``stateless_apply``). It is compiled ahead of time
(``lower().compile()``, compile time reported), run ``--warmup`` times, then timed over ``--steps`` steps
(wall clock, ``block_until_ready`` after each). FLOPs per step come from XLA's cost analysis of the compiled
step (``compiled.cost_analysis()['flops']``: every HLO op, convolutions as 2 x multiply-adds); MFU =
FLOPs / step time / ``--peak_tflops`` (default 989: the H100/H200 SXM bf16 dense peak of the data sheet;
a 8192^3 bf16 matmul measured about 790 on the lent H200). Inputs are random arrays of the right shapes
made once on the device, so the figure is the step alone, never the input pipeline.

``--dtype auto`` (default) is ``mixed_bfloat16`` (keras.mixed_precision: bf16 compute, float32 weights and
losses) on a GPU and ``float32`` on a CPU; ``--dtype bfloat16`` / ``float32`` force one.

On the GPU machine (JAX, numpy, absl-py, rich, h5py, ml-dtypes there; no Keras, gin-config, namex, optree,
no network), here first:

    bash benchmarks/make_gpu_env.sh wheels     # keras, gin-config, namex, optree for CPython 3.12 -> benchmarks/.whl

then one device command (``carry: ["benchmarks/.whl"]``):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site benchmarks/.whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && KERAS_BACKEND=jax PYTHONUNBUFFERED=1 python3 benchmarks/gpu_step.py --out $OUT/gpu_step.json

Writes ``--out`` (JSON: one record per network, and the environment) and the same path with ``.md``
(the table); prints the table. A network that fails (e.g. an op JAX cannot run) is recorded with its
error and the others still run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import sys
import time
import traceback
import warnings
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0  # data-sheet dense bf16 peak of the H100/H200 SXM (no sparsity)
NETWORKS = ("depth_motion", "segmentation", "pointpillars")

# Per network and size: the configuration the step runs at.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "depth_motion": dict(batch=4, height=128, width=416, depth_preset="resnet18", motion_preset="paper"),
        "segmentation": dict(batch=4, height=512, width=1024, backbone="resnet50", num_filters=None, num_repeats=None),
        "pointpillars": dict(batch=2, preset="paper", points=100_000, boxes=16),
    },
    "tiny": {
        "depth_motion": dict(batch=2, height=64, width=128, depth_preset="tiny", motion_preset="tiny"),
        "segmentation": dict(batch=2, height=128, width=128, backbone="tiny", num_filters=8, num_repeats=1),
        "pointpillars": dict(batch=1, preset="tiny", points=512, boxes=4),
    },
}


@dataclasses.dataclass
class Workload:
    """What one train step does: models (task name -> keras.Model) with their optimizers, the model inputs
    taken from a batch, and the scalar loss of a batch and the predictions (task name -> dict of arrays)."""

    description: str
    models: dict[str, Any]
    optimizers: dict[str, Any]
    batch: dict[str, np.ndarray]
    examples: int
    inputs: Callable[[str, dict], dict]
    loss: Callable[[dict, dict], Any]


# --- synthetic batches ---------------------------------------------------------------------------------


def camera_intrinsics(batch: int, height: int, width: int) -> np.ndarray:
    """[B, 3, 3] float32 pinhole intrinsics (KITTI-like focal length 0.58 W, centred principal point)."""
    k = np.array([[0.58 * width, 0, width / 2], [0, 0.58 * width, height / 2], [0, 0, 1]], np.float32)
    return np.repeat(k[None], batch, axis=0)


def clip_batch(rng, batch: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Two frames with depth labels: image(_next) uint8 [B, H, W, 3], depth(_next) [B, H, W, 1] metres
    (5..50, a tenth unlabelled), intrinsics [B, 3, 3]."""
    out = {"intrinsics": camera_intrinsics(batch, height, width)}
    for suffix in ("", "_next"):
        out[f"image{suffix}"] = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        depth = rng.uniform(5.0, 50.0, (batch, height, width, 1)).astype(np.float32)
        out[f"depth{suffix}"] = np.where(rng.random(depth.shape) < 0.1, 0.0, depth).astype(np.float32)
    return out


def segmentation_batch(rng, batch: int, height: int, width: int, num_classes: int) -> dict[str, np.ndarray]:
    """image uint8 [B, H, W, 3] and segmentation int32 [B, H, W, 1] labels in [0, num_classes)."""
    return {
        "image": rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8),
        "segmentation": rng.integers(0, num_classes, (batch, height, width, 1), dtype=np.int32),
    }


def lidar_batch(rng, grid, batch: int, frames: int, points: int, boxes: int) -> dict[str, np.ndarray]:
    """Point-cloud windows over the grid's extent with tracked vehicle boxes moving 1 m a frame along x.

    points [B, n_f, P, 4] (x, y, z metres, intensity), points_mask [B, n_f, P], boxes [B, n_f, N, 7],
    box_mask / labelled (all 1), track_ids [B, n_f, N] int64.
    """
    x = rng.uniform(grid.x_min, grid.x_max, (batch, frames, points))
    y = rng.uniform(grid.y_min, grid.y_max, (batch, frames, points))
    z = rng.uniform(grid.z_min, grid.z_max, (batch, frames, points))
    pts = np.stack([x, y, z, rng.random((batch, frames, points))], axis=-1).astype(np.float32)
    margin = 0.1 * (grid.x_max - grid.x_min)
    centre = rng.uniform(grid.x_min + margin, grid.x_max - margin, (batch, 1, boxes, 2))
    shift = np.arange(frames, dtype=np.float64)[None, :, None, None] * np.array([1.0, 0.0])
    xy = centre + shift
    rest = np.broadcast_to(np.array([0.9, 4.5, 1.9, 1.6, 0.0]), (batch, frames, boxes, 5))
    return {
        "points": pts,
        "points_mask": np.ones((batch, frames, points), np.float32),
        "boxes": np.concatenate([xy, rest], axis=-1).astype(np.float32),
        "box_mask": np.ones((batch, frames, boxes), np.float32),
        "track_ids": np.broadcast_to(np.arange(boxes, dtype=np.int64), (batch, frames, boxes)).copy(),
        "labelled": np.ones((batch, frames), np.float32),
    }


# --- the three workloads -------------------------------------------------------------------------------


def as_float32(predictions: dict) -> dict:
    """Predictions of every task cast to float32 (losses run in float32 under mixed precision)."""
    from keras import ops

    return {task: {k: ops.cast(v, "float32") for k, v in out.items()} for task, out in predictions.items()}


def mean_of(per_example):
    from keras import ops

    return ops.mean(ops.cast(per_example, "float32"))


def depth_motion_workload(rng, batch, height, width, depth_preset, motion_preset) -> Workload:
    """Depth (two frames) + motion, supervised depth loss on both frames + the depth_motion relation."""
    from taskology_tf.relations.depth_motion import depth_motion
    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.motion import MotionTask

    depth = DepthTask(preset=depth_preset, frames=2)
    motion = MotionTask(preset=motion_preset)
    relation = depth_motion()
    tasks = {"depth": depth, "motion": motion}

    def loss(data, predictions):
        predictions = as_float32(predictions)
        supervised = depth.loss(data, predictions["depth"])
        supervised_next = depth.loss({"depth": data["depth_next"]}, {"depth": predictions["depth"]["depth_next"]})
        consistency = relation.loss_fn(data, predictions)
        return mean_of(supervised) + mean_of(supervised_next) + relation.weight * mean_of(consistency)

    return Workload(
        description=f"depth {depth_preset} U-Net (2 frames) + motion {motion_preset}, {height}x{width}, "
                    f"depth loss + depth_motion relation",
        models={name: task.build_model() for name, task in tasks.items()},
        optimizers={name: task.make_optimizer() for name, task in tasks.items()},
        batch=clip_batch(rng, batch, height, width),
        examples=batch,
        inputs=lambda name, data: tasks[name].model_inputs(data),
        loss=loss,
    )


def segmentation_workload(rng, batch, height, width, backbone, num_filters, num_repeats) -> Workload:
    """NAS-FPN segmentation with its per-pixel cross-entropy."""
    from taskology_tf.tasks.segmentation import SegmentationTask

    task = SegmentationTask(backbone=backbone, num_filters=num_filters, num_repeats=num_repeats)
    return Workload(
        description=f"NAS-FPN on {backbone} ({num_filters or 256} filters, {num_repeats or 5} repeats), "
                    f"{height}x{width}, {task.num_classes} classes, cross-entropy",
        models={"segmentation": task.build_model()},
        optimizers={"segmentation": task.make_optimizer()},
        batch=segmentation_batch(rng, batch, height, width, task.num_classes),
        examples=batch,
        inputs=lambda name, data: task.model_inputs(data),
        loss=lambda data, predictions: mean_of(task.loss(data, as_float32(predictions)["segmentation"])),
    )


def pointpillars_workload(rng, batch, preset, points, boxes) -> Workload:
    """PointPillars with detection and box-flow heads, its focal/box/direction/flow losses."""
    from taskology_tf.tasks.detection import DetectionTask

    task = DetectionTask(preset=preset, heads=("detection", "flow"))
    config = task.config
    grid = config.grid
    return Workload(
        description=f"PointPillars {preset} {grid.height}x{grid.width} cells, {config.frames} frames x "
                    f"{points} points, detection + flow heads",
        models={"detection": task.build_model()},
        optimizers={"detection": task.make_optimizer()},
        batch=lidar_batch(rng, grid, batch, config.frames, points, boxes),
        examples=batch,
        inputs=lambda name, data: task.model_inputs(data),
        loss=lambda data, predictions: mean_of(task.loss(data, as_float32(predictions)["detection"])),
    )


BUILDERS = {"depth_motion": depth_motion_workload, "segmentation": segmentation_workload,
            "pointpillars": pointpillars_workload}


# --- the jitted step -----------------------------------------------------------------------------------


def initial_state(work: Workload):
    """(trainable, non_trainable, optimizer) variable values: dicts task name -> list of arrays."""
    trainable, non_trainable, optimizer = {}, {}, {}
    for name, model in work.models.items():
        work.optimizers[name].build(model.trainable_variables)
        trainable[name] = [v.value for v in model.trainable_variables]
        non_trainable[name] = [v.value for v in model.non_trainable_variables]
        optimizer[name] = [v.value for v in work.optimizers[name].variables]
    return trainable, non_trainable, optimizer


def make_train_step(work: Workload):
    """step(state, batch) -> (state, loss): forward of every model, loss, gradients, each optimizer's update."""
    import jax

    def loss_of(trainable, non_trainable, data):
        predictions, updated = {}, {}
        for name, model in work.models.items():
            predictions[name], updated[name] = model.stateless_call(
                trainable[name], non_trainable[name], work.inputs(name, data), training=True)
        return work.loss(data, predictions), updated

    def step(state, data):
        trainable, non_trainable, optimizer = state
        (loss, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable, non_trainable, data)
        new_trainable, new_optimizer = {}, {}
        for name in work.models:
            new_trainable[name], new_optimizer[name] = work.optimizers[name].stateless_apply(
                optimizer[name], grads[name], trainable[name])
        return (new_trainable, non_trainable, new_optimizer), loss

    return step


def cost_of(compiled) -> dict[str, float | None]:
    """XLA's estimate for one call: flops and bytes accessed (None where the backend gives none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  (some backends do not implement it)
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = cost or {}
    flops, accessed = cost.get("flops"), cost.get("bytes accessed")
    return {"flops": float(flops) if flops and flops > 0 else None,
            "bytes_accessed": float(accessed) if accessed and accessed > 0 else None}


def compiled_bytes(compiled) -> int | None:
    """Bytes the compiled step holds while it runs (arguments + outputs + temporaries - donated aliases)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001  (some backends do not implement it)
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None off Linux)."""
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_host_memory(needed: int | None, fraction: float) -> None:
    """On a CPU, refuse to run a step that would take more than ``fraction`` of the available memory
    (the benchmark shares its machine with training runs)."""
    import jax

    available = available_host_bytes()
    if jax.default_backend() != "cpu" or needed is None or available is None or fraction <= 0:
        return
    if needed > fraction * available:
        raise MemoryError(f"the compiled step needs {needed / 2**30:.1f} GiB, more than {fraction:g} of the "
                          f"{available / 2**30:.1f} GiB available here (--host_memory_fraction; or a smaller --batch)")


def device_peak_bytes() -> int | None:
    """Peak device memory in use so far (GPU allocators report it; CPU gives None)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def log(message: str) -> None:
    print(f"[gpu_step] {message}", flush=True)


def time_steps(compiled, state, batch, warmup: int, steps: int):
    """Run ``warmup`` then ``steps`` calls; (state, seconds per timed step list, last loss)."""
    import jax

    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, loss = compiled(state, batch)
        jax.block_until_ready((state, loss))
        seconds = time.perf_counter() - start
        log(f"  {'warm-up' if i < warmup else 'timed'} step {i + 1}: {seconds:.3f} s, loss {float(loss):.4g}")
        if i >= warmup:
            times.append(seconds)
    return state, times, float(loss)


def parameter_count(work: Workload) -> int:
    return int(sum(math.prod(v.shape) for m in work.models.values() for v in m.trainable_variables))


def measure(work: Workload, record: dict, warmup: int, steps: int, peak_tflops: float, donate: bool,
            host_memory_fraction: float = 0.5) -> None:
    """Compile the step ahead of time, then time it; the figures go into ``record`` as they come (so a step
    too large to run still leaves its compile time, FLOPs and memory)."""
    import jax

    state = initial_state(work)
    batch = jax.device_put(work.batch)
    step = jax.jit(make_train_step(work), donate_argnums=(0,) if donate else ())
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    cost = cost_of(compiled)
    record.update(description=work.description, examples_per_step=work.examples, parameters=parameter_count(work),
                  compile_s=time.perf_counter() - start, flops_per_step=cost["flops"],
                  bytes_accessed_per_step=cost["bytes_accessed"], compiled_bytes=compiled_bytes(compiled))
    log(f"  compiled in {record['compile_s']:.1f} s: {_fmt(cost['flops'], '.4g', 1e-9)} GFLOP per step, "
        f"{_fmt(record['compiled_bytes'], '.3g', 2**-30)} GiB held, {record['parameters']:,} parameters")
    check_host_memory(record["compiled_bytes"], host_memory_fraction)
    state, times, loss = time_steps(compiled, state, batch, warmup, steps)
    step_s = float(np.median(times))
    achieved = cost["flops"] / step_s if cost["flops"] else None
    record.update(step_s=step_s, step_s_all=times, examples_per_s=work.examples / step_s,
                  achieved_tflops=achieved / 1e12 if achieved else None,
                  mfu=achieved / (peak_tflops * 1e12) if achieved else None,
                  loss=loss, peak_device_bytes=device_peak_bytes())


def run_network(name: str, args, dtype: str, seed: int = 0) -> dict[str, Any]:
    """Build one network at ``args.size`` under the dtype policy and measure it; errors become a record."""
    import jax
    import keras

    config = dict(SIZES[args.size][name])
    config["batch"] = args.batch.get(name, config["batch"])
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    record: dict[str, Any] = {"network": name, "config": config}
    try:
        work = BUILDERS[name](np.random.default_rng(seed), **config)
        record["compute_dtype"] = sorted({m.compute_dtype for m in work.models.values()})
        measure(work, record, args.warmup, args.steps, args.peak_tflops, donate=jax.default_backend() != "cpu",
                host_memory_fraction=args.host_memory_fraction)
    except Exception as error:  # noqa: BLE001  (recorded; the other networks still run)
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=8)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return record


# --- report --------------------------------------------------------------------------------------------


def resolve_dtype(dtype: str) -> str:
    """'auto' -> bfloat16 on an accelerator, float32 on a CPU."""
    import jax

    if dtype != "auto":
        return dtype
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def environment(args, dtype: str) -> dict[str, Any]:
    import jax
    import keras

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
        "devices": jax.device_count(), "cpu_count": os.cpu_count(), "host": platform.node(),
        "jax": jax.__version__, "keras": keras.__version__, "python": platform.python_version(),
        "dtype": dtype, "size": args.size, "warmup": args.warmup, "steps": args.steps,
        "peak_tflops": args.peak_tflops,
    }


def intensity(record: dict) -> float | None:
    """FLOPs per byte accessed of one step (None without both estimates)."""
    flops, accessed = record.get("flops_per_step"), record.get("bytes_accessed_per_step")
    return flops / accessed if flops and accessed else None


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def markdown_table(records: list[dict], env: dict) -> str:
    """One row per network: step time, examples/s, GFLOP per step, achieved TFLOP/s, MFU, FLOP per byte
    accessed (XLA's estimate; below the device's ridge, e.g. ~200 on an H200, the step is memory-bound), compile time."""
    lines = [
        f"{env['device']} ({env['backend']}), {env['dtype']}, size {env['size']}, median of {env['steps']} steps "
        f"after {env['warmup']} warm-up; MFU against {env['peak_tflops']:g} TFLOP/s; jax {env['jax']}, "
        f"keras {env['keras']}, {env['date']}",
        "",
        "| network | batch | params | step (ms) | examples/s | GFLOP/step | TFLOP/s | MFU (%) | FLOP/B | compile (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        params = r.get("parameters")
        step = r.get("step_s")
        lines.append(
            f"| {r['network']} | {r['config']['batch']} | {'n/a' if params is None else f'{params / 1e6:.2f}M'} | "
            f"{'skipped' if step is None else format(step * 1e3, '.1f')} | {_fmt(r.get('examples_per_s'), '.3g')} | "
            f"{_fmt(r.get('flops_per_step'), '.4g', 1e-9)} | {_fmt(r.get('achieved_tflops'), '.3g')} | "
            f"{_fmt(r.get('mfu'), '.3g', 100)} | {_fmt(intensity(r), '.3g')} | {_fmt(r.get('compile_s'), '.1f')} |")
    skipped = [f"- {r['network']} skipped: {r['error']}" for r in records if "error" in r]
    return "\n".join(lines + ([""] + skipped if skipped else [])) + "\n"


def parse_batches(text: str) -> dict[str, int]:
    """'8' -> every network 8; 'pointpillars=1,segmentation=2' -> those networks only."""
    if "=" not in text:
        return {name: int(text) for name in NETWORKS}
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    unknown = {name for name, _ in pairs} - set(NETWORKS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown networks {sorted(unknown)}; choose from {NETWORKS}")
    return {name: int(value) for name, value in pairs}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="paper")
    p.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated subset of {NETWORKS}")
    p.add_argument("--batch", type=parse_batches, default={},
                   help="batch size of every network (e.g. 8) or of some (e.g. pointpillars=1,segmentation=2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    p.add_argument("--peak_tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                   help="peak FLOP/s of the device for MFU, in TFLOP/s (default: H200 bf16 dense)")
    p.add_argument("--host_memory_fraction", type=float, default=0.5,
                   help="on a CPU, skip a network whose compiled step needs more than this fraction of the "
                        "available memory (0: no check)")
    p.add_argument("--out", default=None, help="JSON path (the table goes next to it as .md)")
    p.add_argument("--table", default=None, help="only print the table of a JSON this script wrote")
    args = p.parse_args(argv)
    unknown = set(args.networks.split(",")) - set(NETWORKS)
    if unknown:
        p.error(f"unknown networks {sorted(unknown)}; choose from {NETWORKS}")
    return args


def use_jax_backend() -> None:
    """Select Keras's JAX backend (before Keras is imported) and quiet JAX's int64 -> int32 notice."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    warnings.filterwarnings("ignore", message="Explicitly requested dtype int64")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        saved = json.loads(pathlib.Path(args.table).read_text())
        print(markdown_table(saved["networks"], saved["environment"]))
        return 0
    use_jax_backend()
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"gpu_step.py needs KERAS_BACKEND=jax, got {keras.backend.backend()!r}.")
    dtype = resolve_dtype(args.dtype)
    env = environment(args, dtype)
    records = []
    for name in args.networks.split(","):
        log(f"{name} at size {args.size} ({dtype}) ...")
        records.append(run_network(name, args, dtype))
        if "error" in records[-1]:
            log(f"{name} skipped: {records[-1]['error']}")
    table = markdown_table(records, env)
    print(table)
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"environment": env, "networks": records}, indent=2))
        out.with_suffix(".md").write_text(table)
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
