"""The cost of many tasks, on paper: bytes a trainer exchanges when peers share predictions (Taskology, as
`taskology launch` does) versus when they would synchronise weights or gradients, for 8 and 100 tasks.

    .venv/bin/python benchmarks/cost_model.py                  # the tables of benchmarks/README.md
    nice -n 19 .venv/bin/python benchmarks/cost_model.py --count_params   # build the paper-size networks first
                                                               # and count their parameters and output sizes

Per trainer and training step, with B mediator examples per step, p peers (tasks its relations read),
r readers (tasks that read it), a peer j's network input I_j and the outputs O_j its relations read
(bytes per example), P_j parameters (float32), N tasks in all (``benchmarks/README.md`` derives these):

    predictions (Taskology)   sent  sum_j B * I_j          received  sum_j B * O_j            (its peers' servers)
                              its server: received r * B * I_own, sent r * B * O_own
    weights, every k steps    received sum_j 4 P_j / k      sent  r * 4 P_own / k           (copies of the peers'
                              networks refreshed every k steps; the trainer runs their forward passes itself)
    gradients (all-reduce)    sent = received = 2 (N - 1) / N * 4 * sum_all P              (every network in one
                              synchronous data-parallel job over the N machines, ring all-reduce every step)

The task sizes are the repository's paper-size networks (``PAPER_TASKS``: 128x416 images as in the paper's
KITTI/Cityscapes runs); ``--count_params`` rebuilds them to check the recorded counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 128, 416  # the paper's image size for depth, motion and the Cityscapes mediator
BATCH = 8  # mediator examples per step (gin/experiments/staleness_gpu.gin)
FLOAT = 4  # bytes of a float32
GIGABIT = 1e9 / 8  # bytes per second of 1 Gb/s


@dataclasses.dataclass(frozen=True)
class TaskSize:
    """A paper-size task as its peers see it: parameters, and bytes per mediator example of the inputs its server is
    sent and of the outputs the relations read (float32)."""

    name: str
    network: str
    params: int
    input_bytes: int
    output_bytes: int

    @property
    def weight_bytes(self) -> int:
        return FLOAT * self.params


def _image(frames: int = 1) -> int:
    return frames * HEIGHT * WIDTH * 3  # uint8 RGB


def _dense(channels: int) -> int:
    return HEIGHT * WIDTH * channels * FLOAT


# Parameter counts from `--count_params` (2026-12-06, this repository's builders; outputs checked at 128x416 there).
PAPER_TASKS = {
    "depth": TaskSize("depth", "ResNet-18 U-Net (DepthTask preset 'resnet18')", 14_339_793, _image(), _dense(1)),
    "normals": TaskSize("normals", "ResNet-18 U-Net (NormalsTask preset 'resnet18')", 14_340_083, _image(), _dense(3)),
    "motion": TaskSize("motion", "depth-from-videos motion net (MotionTask preset 'paper', object motion)",
                       44_174_778, _image(2), 2 * _dense(3) + 4 * 3 * FLOAT),
    "segmentation": TaskSize("segmentation", "NAS-FPN, ResNet-50, 256 filters, 5 repeats, 8 classes", 44_008_328,
                             _image(), _dense(8)),
}


# -- per trainer and step ------------------------------------------------------------------------------


def prediction_bytes(peers: list[TaskSize], batch: int = BATCH, output_scale: float = 1.0) -> tuple[float, float]:
    """(sent, received) bytes per step of a trainer asking each peer's server for its predictions on the mediator
    batch; ``output_scale`` 0.5 for float16 outputs (``ServingPeer.float16_outputs``)."""
    return (float(sum(batch * p.input_bytes for p in peers)),
            float(sum(batch * p.output_bytes * output_scale for p in peers)))


def server_bytes(own: TaskSize, readers: int, batch: int = BATCH, output_scale: float = 1.0) -> tuple[float, float]:
    """(received, sent) bytes per reader step of the server of ``own`` answering ``readers`` trainers."""
    return float(readers * batch * own.input_bytes), float(readers * batch * own.output_bytes * output_scale)


def weight_bytes(peers: list[TaskSize], own: TaskSize, readers: int, every: int) -> tuple[float, float]:
    """(received, sent) bytes per step of a trainer that copies its peers' weights every ``every`` steps and sends
    its own to its ``readers`` as often."""
    if every < 1:
        raise ValueError(f"every must be >= 1 step, got {every}.")
    return sum(p.weight_bytes for p in peers) / every, readers * own.weight_bytes / every


def allreduce_bytes(all_tasks: list[TaskSize]) -> float:
    """Bytes a worker sends (and as many it receives) per step in a ring all-reduce of every task's gradients over
    ``len(all_tasks)`` workers."""
    n = len(all_tasks)
    return 2.0 * (n - 1) / n * sum(t.weight_bytes for t in all_tasks) if n > 1 else 0.0


def link_steps_per_second(bytes_per_step: float, gigabits: float) -> float:
    """Steps per second a link of ``gigabits`` Gb/s carries at ``bytes_per_step`` in its busier direction."""
    return gigabits * GIGABIT / bytes_per_step if bytes_per_step > 0 else float("inf")


# -- the tables --------------------------------------------------------------------------------------------


def densities(n: int) -> list[tuple[str, int, int]]:
    """(name, peers, readers) of a typical trainer under relation densities for ``n`` tasks; the star's hub and
    leaves separately."""
    rows = [("ring", 2, 2)]
    if n > 11:
        rows.append(("10 peers each", 10, 10))
    rows += [("star, hub", n - 1, n - 1), ("star, leaf", 1, 1), ("all pairs", n - 1, n - 1)]
    return rows


def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def _rate(x: float) -> str:
    if x == float("inf"):
        return "-"
    return f"{x:.2f}" if x < 1 else (f"{x:,.1f}" if x < 100 else f"{x:,.0f}")


def cost_table(task: TaskSize, counts=(8, 100), batch: int = BATCH, every: int = 100, links=(10.0, 25.0)) -> str:
    """Markdown: per trainer and step, MB exchanged under each scheme (for weights and gradients the busier
    direction), and the steps/s that links of ``links`` Gb/s carry, for experiments of ``counts`` tasks like ``task``
    under several relation densities. A trainer's server carries what the trainer does (every relation is read
    from both sides, so readers = peers)."""
    speeds = " / ".join(f"{g:g}" for g in links)
    lines = [f"| tasks | relations | peers | predictions MB/step, sent + received | same, float16 outputs "
             f"| weights copied every step | weights every {every} steps | gradient all-reduce "
             f"| steps/s a {speeds} Gb/s link carries: predictions | gradients |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in counts:
        grads = allreduce_bytes([task] * n)
        for name, peers, readers in densities(n):
            sent, received = prediction_bytes([task] * peers, batch)
            sent16, received16 = prediction_bytes([task] * peers, batch, output_scale=0.5)
            w1 = max(weight_bytes([task] * peers, task, readers, 1))
            wk = max(weight_bytes([task] * peers, task, readers, every))
            busier = max(sent, received)
            lines.append(
                f"| {n} | {name} | {peers} | {_mb(sent)} + {_mb(received)} | {_mb(sent16)} + {_mb(received16)} "
                f"| {_mb(w1)} | {_mb(wk)} | {_mb(grads)} "
                f"| {' / '.join(_rate(link_steps_per_second(busier, g)) for g in links)} "
                f"| {' / '.join(_rate(link_steps_per_second(grads, g)) for g in links)} |")
    return "\n".join(lines)


def sizes_table(tasks=None, batch: int = BATCH) -> str:
    """Markdown: each paper-size task's parameters and bytes per mediator batch."""
    tasks = tasks or PAPER_TASKS
    lines = ["| task | network | parameters | weights MB | inputs per batch MB | outputs per batch MB "
             "| weights / (inputs + outputs) |", "|---|---|---|---|---|---|---|"]
    for t in tasks.values():
        exchanged = batch * (t.input_bytes + t.output_bytes)
        lines.append(f"| {t.name} | {t.network} | {t.params:,} | {t.weight_bytes / 1e6:,.1f} | "
                     f"{batch * t.input_bytes / 1e6:.2f} | {batch * t.output_bytes / 1e6:.2f} | "
                     f"{t.weight_bytes / exchanged:.0f} |")
    return "\n".join(lines)


# -- counting the paper-size networks ------------------------------------------------------------------------


def count_params() -> dict[str, tuple[int, dict]]:
    """Build the paper-size networks (no data, no training) -> name -> (parameters, output shapes at 128x416, B=1)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.path.insert(0, REPO)
    import keras

    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.motion import MotionTask
    from taskology_tf.tasks.normals import NormalsTask
    from taskology_tf.tasks.segmentation import SegmentationTask

    tasks = {
        "depth": DepthTask(preset="resnet18"),
        "normals": NormalsTask(preset="resnet18"),
        "motion": MotionTask(preset="paper", object_motion=True),
        "segmentation": SegmentationTask(backbone="resnet50", num_filters=256, num_repeats=5),
    }
    out = {}
    for name, task in tasks.items():
        model = task.build_model()
        inputs = {k: keras.KerasTensor((1, HEIGHT, WIDTH, 3), dtype="uint8") for k in task.input_keys}
        try:
            shapes = {k: tuple(v.shape) for k, v in model.compute_output_spec(inputs).items()}
        except Exception as e:  # noqa: BLE001 - a network that needs another size: say so, keep the count
            shapes = {"(not at 128x416)": str(e).splitlines()[0][:80]}
        out[name] = (model.count_params(), shapes)
        keras.backend.clear_session()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count_params", action="store_true", help="build the paper-size networks and count them first")
    p.add_argument("--batch", type=int, default=BATCH, help="mediator examples per step")
    p.add_argument("--every", type=int, default=100, help="steps between weight copies in the weights column")
    p.add_argument("--links", default="10,25", help="link speeds (Gb/s) for the steps/s columns, comma-separated")
    args = p.parse_args(argv)
    tasks = dict(PAPER_TASKS)
    if args.count_params:
        for name, (params, shapes) in count_params().items():
            print(f"{name}: {params:,} parameters; outputs at {HEIGHT}x{WIDTH}: {shapes}")
            tasks[name] = dataclasses.replace(tasks[name], params=params)
        print()
    print(sizes_table(tasks, args.batch))
    for name in ("depth", "segmentation"):
        print(f"\nAll tasks like {name} ({tasks[name].network}), batch {args.batch}:\n")
        links = tuple(float(x) for x in args.links.split(",") if x.strip())
        print(cost_table(tasks[name], batch=args.batch, every=args.every, links=links))
    return 0


if __name__ == "__main__":
    sys.exit(main())
