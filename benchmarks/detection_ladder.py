"""The detector ladder of issue 12: where the PointPillars detector of Table 2 stops learning.

    python benchmarks/detection_ladder.py a   # overfit ONE synthetic sweep (window of n_f frames)
    python benchmarks/detection_ladder.py b   # overfit the six real KITTI object frames (../shared/data)
    python benchmarks/detection_ladder.py c   # train on synthetic sweeps, evaluate on held-out ones

Each step trains ``tasks.detection.DetectionTask``'s own network and loss with a plain ``tf.function`` step
(``taskology_tf.detection_ladder.fit``; Adam, optionally cosine-decayed) and evaluates with the task's own
metrics (Waymo AP/APH, IoU 0.7, inference mode). Targets: (a) 3D AP ~ 1 on the sweep it trained on;
(b) BEV AP >= 0.9 on the frames it trained on; (c) 3D AP (LEVEL_1) >= 0.50 on held-out sweeps.

Options (all steps): --steps, --lr, --final_lr (fraction of --lr reached by a cosine decay; 1 = constant),
--batch, --seed, --task KEY=VALUE (a ``DetectionTask`` argument as a Python literal, repeatable, e.g.
--task bn_momentum=0.99 --task "grid={'cell_size': 0.4, 'width': 40, 'height': 40, 'x_min': -8, 'y_min': -8}").
Synthetic data (a, c): --beams, --azimuths, --range, --train (sequences), --eval (held-out sequences),
--index (a: the sequence to overfit; default the one with most boxes among the first 32); (c): --eval_train
also evaluates the first --eval training sequences (fit vs generalisation), --save writes the weights.
Defaults: the chosen CPU-scale detector (bn_momentum 0.9, 4x the tiny widths; regress_ignored on KITTI only); e.g.
--task "network={}" --task bn_momentum=0.99 gives back the tiny preset as it was (on KITTI add --task regress_ignored=False).
Prints the metrics and one JSON line (``RESULT {...}``) with the settings, the timings and the metrics.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskology_tf import runtime  # noqa: E402

KITTI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "kitti_object")
# Step defaults: the task's settings per step (before --task overrides) and the training schedule.
# The tiny preset's widths (8 pillar channels) cannot fit the KITTI frames reliably; these (4x) can.
WIDE = {"pillar_channels": 32, "block_channels": (32, 64, 64), "up_channels": (32, 32, 32), "flow_fusion_channels": 32}
SYNTHETIC_TASK = dict(preset="tiny", heads=("detection", "flow"), frames=3, max_pillars=768, max_points_per_pillar=8,
                      bn_momentum=0.9, regress_ignored=False, network=WIDE)
# KITTI (b): one frame, a 64 m x 40 m grid ahead of the car (0.64 m cells), anchors at the KITTI car centre
# height (the Velodyne is 1.73 m above the road; a 1.5 m car's centre is at about -1.0 m).
KITTI_GRID = dict(x_min=0.0, y_min=-20.48, cell_size=0.64, width=100, height=64, z_min=-3.0, z_max=1.0)
KITTI_TASK = dict(preset="tiny", heads=("detection",), frames=1, grid=KITTI_GRID, max_pillars=2048,
                  max_points_per_pillar=8, bn_momentum=0.9, anchor_z=-1.0, regress_ignored=True, network=WIDE)
DEFAULTS = {
    "a": dict(steps=300, lr=2e-3, final_lr=1.0, batch=1),
    "b": dict(steps=300, lr=4e-3, final_lr=0.0, batch=6),
    "c": dict(steps=4000, lr=2e-3, final_lr=0.0, batch=4),
}


def parse_task_overrides(items) -> dict:
    """['key=literal', ...] -> {key: value} (values parsed as Python literals, else kept as strings)."""
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = text.strip()
    return out


def synthetic(num: int, seed: int, args) -> dict:
    """``num`` synthetic LiDAR windows (3 frames, 0.5 s apart) of stream ``seed``, every label kept."""
    from taskology_tf.data.synthetic.lidar import LidarConfig, lidar_arrays

    config = LidarConfig(beams=args.beams, azimuths=args.azimuths, max_range=args.range)
    return lidar_arrays(num, seed=seed, n_f=3, frame_interval=0.5, config=config,
                        max_points=args.beams * args.azimuths, max_boxes=16, min_points=5, label_fraction=1.0,
                        label_seed=7)


def in_grid_count(arrays, grid, frame: int = -1):
    """[E] number of labelled boxes whose centre lies in ``grid`` in frame ``frame`` of each example."""
    import numpy as np

    b, m = arrays["boxes"][:, frame], arrays["box_mask"][:, frame] > 0.5
    inside = (b[..., 0] >= grid.x_min) & (b[..., 0] < grid.x_max) & (b[..., 1] >= grid.y_min) & (b[..., 1] < grid.y_max)
    return np.sum(inside & m, axis=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=sorted(DEFAULTS))
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--final_lr", type=float, help="fraction of --lr at the last step (cosine); 1 = constant")
    p.add_argument("--batch", type=int)
    p.add_argument("--seed", type=int, default=0, help="weights and batch order")
    p.add_argument("--task", action="append", default=[], help="DetectionTask argument KEY=VALUE (repeatable)")
    p.add_argument("--beams", type=int, default=16)
    p.add_argument("--azimuths", type=int, default=256)
    p.add_argument("--range", type=float, default=12.0)
    p.add_argument("--train", type=int, default=2048, help="(c) training sequences (seed 31)")
    p.add_argument("--eval", type=int, default=128, help="(c) held-out sequences (seed 33)")
    p.add_argument("--index", type=int, default=None, help="(a) the sequence to overfit")
    p.add_argument("--kitti", default=KITTI, help="(b) KITTI object folder")
    p.add_argument("--eval_train", action="store_true", help="(c) also evaluate on the first --eval training sequences")
    p.add_argument("--save", default=None, help="write the trained weights to this .weights.h5 file")
    p.add_argument("--log_every", type=int, default=100)
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.step].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    runtime.configure(False)
    runtime.import_tensorflow()
    import keras
    import numpy as np

    from taskology_tf import detection_ladder as dl
    from taskology_tf.tasks.detection import DetectionTask

    keras.utils.set_random_seed(args.seed)
    task_args = dict(KITTI_TASK if args.step == "b" else SYNTHETIC_TASK)
    task_args.update(parse_task_overrides(args.task))
    task = DetectionTask(**task_args)
    start = time.monotonic()
    if args.step == "a":
        pool = synthetic(32, 31, args)
        counts = in_grid_count(pool, task.config.grid)
        index = int(np.argmax(counts)) if args.index is None else args.index
        train = eval_ = {k: v[index:index + 1] for k, v in pool.items()}
        print(f"(a) sequence {index} of stream 31: {int(counts[index])} boxes in the grid in its current frame")
    elif args.step == "b":
        train = eval_ = dl.kitti_arrays(args.kitti, task.config.grid)
        print(f"(b) {len(train['points'])} KITTI frames, {int(train['box_mask'].sum())} vehicles in the grid")
    else:
        train, eval_ = synthetic(args.train, 31, args), synthetic(args.eval, 33, args)
        print(f"(c) {args.train} training / {args.eval} held-out sequences; "
              f"{int(in_grid_count(eval_, task.config.grid).sum())} held-out vehicles in the grid (current frames)")
    data_s = time.monotonic() - start
    model = task.build_model()
    optimizer = dl.make_optimizer(args.lr, args.steps, args.final_lr)
    start = time.monotonic()
    dl.fit(task, model, dl.batches(train, args.batch, args.seed), args.steps, optimizer, log_every=args.log_every)
    train_s = time.monotonic() - start
    if args.save:
        model.save_weights(args.save)
    start = time.monotonic()
    metrics = dl.evaluate(task, model, eval_)
    eval_s = time.monotonic() - start
    shown = ("ap_3d_l1", "aph_3d_l1", "ap_bev_l1", "aph_bev_l1", "num_gt_l1", "num_predictions", "flow_epe")
    print("  ".join(f"{k} {metrics[k]:.3f}" for k in shown if k in metrics))
    if args.step == "c" and args.eval_train:
        seen = dl.evaluate(task, model, {k: v[:args.eval] for k, v in train.items()})
        print("training sequences: " + "  ".join(f"{k} {seen[k]:.3f}" for k in shown if k in seen))
        metrics.update({f"train_{k}": v for k, v in seen.items()})
    print(f"data {data_s:.0f} s, train {train_s:.0f} s ({1000 * train_s / max(1, args.steps):.0f} ms/step), "
          f"eval {eval_s:.0f} s")
    settings = {k: v for k, v in vars(args).items() if k not in ("log_every", "kitti")}
    print("RESULT " + json.dumps({"settings": settings, "task": {k: str(v) for k, v in task_args.items()},
                                  "data_s": data_s, "train_s": train_s, "eval_s": eval_s,
                                  "metrics": {k: float(v) for k, v in metrics.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
