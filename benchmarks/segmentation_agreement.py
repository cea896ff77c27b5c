"""How many of Eq. (4)'s targets are wrong even when every prediction is true? (Table 1, issue 11)

    python benchmarks/segmentation_agreement.py [--clips 64] [--seed 99] [--traffic dense]
        [--tolerances 0.02,0.05,0.1,0.2,none]

Feeds the relation ``depth_motion_segmentation`` the synthetic world's TRUE depth, camera and object motion
and segmentation (the ground-truth answers of ``Task.ground_truth``) on "city" clips at Table 1's size and
settings (64x128, no occlusion test, inverse backward motion) and reports, per ``agreement_tolerance``: the
fraction of pixels Eq. (4) compares, and how many of those get a wrong label from the other frame (the warp is
exact, so every wrong label comes from disocclusions, pixels leaving the view or sampling across boundaries).
Clips use their own seed (99), neither the training (21) nor the evaluation (23, 24) seeds of Table 1.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskology_tf import runtime  # noqa: E402

KEYS = ("image", "image_next", "intrinsics", "depth", "depth_next", "ego_motion", "object_motion",
        "object_motion_backward", "segmentation", "segmentation_next")


def parse_tolerances(text: str):
    """'0.05,none' -> [0.05, None]."""
    return [None if t.strip().lower() == "none" else float(t) for t in text.split(",") if t.strip()]


def agreement_table(clips: int = 64, seed: int = 99, traffic: str = "dense", tolerances=(0.05, None)):
    """[(tolerance, fraction of pixels compared, fraction of compared pixels with a wrong target)] per tolerance."""
    runtime.import_tensorflow()
    from keras import ops

    from taskology_tf.data.synthetic.dataset import synthetic_dataset
    from taskology_tf.relations.depth_motion_segmentation import video_consistency_terms
    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.motion import MotionTask
    from taskology_tf.tasks.segmentation import SegmentationTask

    data = synthetic_dataset(style="city", traffic=traffic, with_next=True, keys=list(KEYS),
                             num_examples=clips, seed=seed, height=64, width=128)
    batch = next(iter(data.batch(clips)))
    segmentation = SegmentationTask(frames=2, backbone="tiny")
    predictions = {"depth": DepthTask(frames=2, preset="tiny").ground_truth(batch),
                   "motion": MotionTask(object_motion=True).ground_truth(batch),
                   "segmentation": segmentation.ground_truth(batch)}
    # true logits are ``ground_truth_logit`` on the labelled class and 0 elsewhere: a wrong target costs about
    # that logit in cross-entropy, a right one almost nothing; the term sums the two directions
    per_wrong_label = 2.0 * segmentation.ground_truth_logit
    rows = []
    for tolerance in tolerances:
        terms = video_consistency_terms(batch, predictions, backward="inverse", occlusion_tolerance=None,
                                        segmentation_form="confident_cross_entropy", agreement_tolerance=tolerance)
        rows.append((tolerance, float(ops.mean(terms["agreement_fraction"])),
                     float(ops.mean(terms["segmentation"])) / per_wrong_label))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--traffic", default="dense")
    p.add_argument("--tolerances", default="0.02,0.05,0.1,0.2,none")
    args = p.parse_args(argv)
    runtime.configure(False)
    print(f"{'tolerance':>10} {'compared':>9} {'wrong labels':>13}")
    for tolerance, compared, wrong in agreement_table(args.clips, args.seed, args.traffic,
                                                      parse_tolerances(args.tolerances)):
        print(f"{str(tolerance):>10} {compared:9.3f} {wrong:13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
