"""Real-data check of the depth + motion photometric relation (issue 4) on the KITTI clips sample.

Trains the CPU-scale depth and motion tasks of ``gin/experiments/staleness_common.gin`` (no labels,
photometric consistency only) on the consecutive frame pairs of ``../shared/data/kitti_clips``
(4 clips x 4 pairs), and reports, on all pairs, the photometric loss (Eq. 3, unblurred) and the
direction of the predicted camera translation before and after training. KITTI's camera drives
forward in every pair, so a working motion network should predict forward translation for all.

    .venv/bin/python benchmarks/kitti_clips_check.py --steps 300 --workdir /tmp/kitti_clips_check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "kitti_clips"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=544)
    parser.add_argument("--workdir", default="/tmp/kitti_clips_check")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        raise SystemExit(f"KITTI clips not found at {args.root}; pass --root (see ../shared/data/README.md).")

    import numpy as np
    from keras import ops

    from taskology_tf.cli import parse_gin
    from taskology_tf.experiment import Experiment
    from taskology_tf.metrics.motion import camera_displacement
    from taskology_tf.relations.depth_motion import depth_motion_terms
    from taskology_tf.relations.photometric import transform_from_motion

    parse_gin(["staleness_common"], [
        "Experiment.mediator = @kitti_clips()",
        f"kitti_clips.root = '{args.root}'",
        f"kitti_clips.height = {args.height}",
        f"kitti_clips.width = {args.width}",
        "depth/TaskTrainer.eval_data = None",
        "motion/TaskTrainer.eval_data = None",
        "TaskTrainer.checkpoint_every = 0",
        "TaskTrainer.summary_every = 25",
        f"Experiment.train_steps = {args.steps}",
    ])
    experiment = Experiment()
    collective = experiment.build_collective(args.workdir)
    batch = next(iter(experiment.mediator.batch(64)))
    batch = {k: batch[k] for k in ("image", "image_next", "intrinsics")}

    def measure() -> dict:
        depth = collective.trainers["depth"].predict(batch)
        motion = collective.trainers["motion"].predict(batch)
        terms = depth_motion_terms(batch, {"depth": depth, "motion": motion}, backward="inverse")
        moved = camera_displacement(ops.convert_to_numpy(transform_from_motion(motion["rotation"], motion["translation"])))
        return {
            "pairs": int(moved.shape[0]),
            "photometric": float(np.mean(ops.convert_to_numpy(terms["photometric"]))),
            "forward_fraction": float(np.mean(moved[:, 2] > 0)),
            "mean_forward_m": float(np.mean(moved[:, 2])),
            "mean_sideways_m": float(np.mean(np.abs(moved[:, 0]))),
        }

    before = measure()
    start = time.monotonic()
    collective.train(args.steps, progress=True, desc="kitti clips")
    seconds = time.monotonic() - start
    after = measure()
    collective.close()
    result = {"steps": args.steps, "size": [args.height, args.width], "seconds": seconds, "before": before, "after": after}
    print(json.dumps(result, indent=2))
    with open(os.path.join(args.workdir, "kitti_clips_check.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
