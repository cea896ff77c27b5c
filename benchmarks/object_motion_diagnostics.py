"""Where does a Table 1 row's depth error on moving cars come from, and does its object-motion field learn?

    python benchmarks/object_motion_diagnostics.py RUN_DIR [RUN_DIR ...] [--clips 64] [--seed 99]

RUN_DIR is one row of `taskology experiment table1` (e.g. /tmp/t1x/seed_0/C): its ``depth/`` and ``motion/``
checkpoints are restored into Table 1's networks (table1_common.gin: two-frame tiny depth, 'small' motion net on
the frames and their difference, translation scale 0.1; object motion when the checkpoint has it). On dense-traffic
'city' clips of their own seed (99: neither training's 21 nor evaluation's 23) it splits the pixels with a true
depth in (0, 80) m into

- co-moving: a car or pedestrian whose point moves less than ``--co_moving`` metres relative to the camera between
  the frames (a lead car at the camera's speed: static in the image, its depth unobservable from two frames);
- other moving: every other pixel with a non-zero true object motion;
- static: the rest;

and prints per region the median of (median-scaled predicted depth / true depth) and the Abs Rel, and, for a row
with object motion, the median length of the predicted and the true residual translation on the moving regions.

A RUN_DIR with a ``segmentation/`` checkpoint (rows B, D, E) also gets the quality of its movable mask m of Eq. (2)
on the same clips: the share of the image it marks, its precision against the movable classes and against the
moving pixels, and its recall of both.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from taskology_tf import runtime  # noqa: E402

KEYS = ("image", "image_next", "intrinsics", "depth", "ego_motion", "object_motion", "segmentation")
MAX_DEPTH = 80.0


def relative_motion(depth, intrinsics, ego_motion, object_motion):
    """How far each pixel's 3D point moves relative to the camera between the frames, metres: [B, H, W].

    depth [B, H, W] (frame t, metres), intrinsics [B, 3, 3], ego_motion [B, 4, 4] (camera-t points -> camera-(t+1)),
    object_motion [B, H, W, 3] (the point's own translation, camera-(t+1) axes): ``|R X + T + dt - X|``.
    """
    b, h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3).astype(np.float64)
    out = np.zeros((b, h, w))
    for i in range(b):
        points = (pixels @ np.linalg.inv(intrinsics[i]).T) * depth[i].reshape(-1, 1)
        moved = points @ ego_motion[i, :3, :3].T + ego_motion[i, :3, 3] + object_motion[i].reshape(-1, 3)
        out[i] = np.linalg.norm(moved - points, axis=-1).reshape(h, w)
    return out


def regions(depth, intrinsics, ego_motion, object_motion, co_moving: float = 0.3):
    """{"co-moving", "other moving", "static"} -> [B, H, W] bool masks over the evaluation's valid pixels (true depth
    up to 80 m) and its moving pixels (``tasks.depth.moving_pixels``)."""
    from taskology_tf.metrics.depth import valid_depth_mask
    from taskology_tf.tasks.depth import moving_pixels

    valid = valid_depth_mask(depth, max_depth=MAX_DEPTH)
    moving = moving_pixels(object_motion)[..., 0]
    co = moving & valid & (relative_motion(depth, intrinsics, ego_motion, object_motion) < co_moving)
    return {"co-moving": co, "other moving": moving & valid & ~co, "static": valid & ~moving}


def median_scaled_ratio(pred, true):
    """pred / true per pixel [B, H, W] after scaling each image's prediction by median(true) / median(pred)
    over its pixels with a true depth in (0, 80) m (the evaluation's per-image median scaling)."""
    from taskology_tf.metrics.depth import valid_depth_mask

    out = np.zeros_like(pred, dtype=np.float64)
    for i, valid in enumerate(valid_depth_mask(true, max_depth=MAX_DEPTH)):
        scale = np.median(true[i][valid]) / np.median(pred[i][valid])
        out[i] = pred[i] * scale / np.maximum(true[i], 1e-3)
    return out


def region_report(ratio, masks, field=None, true_field=None):
    """One dict per region: fraction of pixels, median ratio, Abs Rel and (with fields) median |field| lengths."""
    rows = []
    for name, mask in masks.items():
        r = ratio[mask]
        row = {"region": name, "fraction": float(mask.mean()),
               "median_ratio": float(np.median(r)) if r.size else float("nan"),
               "abs_rel": float(np.mean(np.abs(r - 1.0))) if r.size else float("nan")}
        if field is not None and name != "static" and r.size:
            row["field"] = float(np.median(np.linalg.norm(field[mask], axis=-1)))
            row["true_field"] = float(np.median(np.linalg.norm(true_field[mask], axis=-1)))
        rows.append(row)
    return rows


def mask_report(mask, movable, moving):
    """Quality of a movable mask: all [B, H, W] bool (predicted mask, true movable classes, true moving pixels).

    Returns the share of pixels the mask marks and its precision / recall against both truths (nan when empty).
    """
    def ratio(a, b):
        return float(a.sum() / b.sum()) if b.sum() else float("nan")

    return {"marked": float(mask.mean()),
            "precision_movable": ratio(mask & movable, mask), "recall_movable": ratio(mask & movable, movable),
            "precision_moving": ratio(mask & moving, mask), "recall_moving": ratio(mask & moving, moving)}


def restored_model(task, run_dir: str, sub: str):
    """``task``'s network with the weights of ``run_dir/sub``'s latest checkpoint, or None when it has none."""
    tf = runtime.import_tensorflow()

    from taskology_tf.core.trainer import resolve_checkpoint

    path = resolve_checkpoint(os.path.join(run_dir, sub))
    if path is None:
        return None
    model = task.build_model()
    tf.train.Checkpoint(model=model).restore(path).assert_existing_objects_matched().expect_partial()
    return model


def predict_mask(run_dir: str, batch):
    """The movable mask [B, H, W] bool of a row's ``segmentation/`` checkpoint, or None when it has none."""
    from taskology_tf.tasks.segmentation import SegmentationTask

    task = SegmentationTask(frames=2, backbone="tiny")
    model = restored_model(task, run_dir, "segmentation")
    if model is None:
        return None
    return np.asarray(task.movable_mask(model(task.model_inputs(batch))))[..., 0] > 0.5


def predict(run_dir: str, batch):
    """(depth [B, H, W], residual translation [B, H, W, 3] or None) of a Table 1 row's checkpoints; None when the
    row has no depth checkpoint (row B, D's own result is segmentation)."""
    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.motion import MotionTask

    depth_task = DepthTask(frames=2, preset="tiny", max_depth=MAX_DEPTH, median_scaling=True)
    depth_model = restored_model(depth_task, run_dir, "depth")
    if depth_model is None:
        return None
    depth = np.asarray(depth_model(depth_task.model_inputs(batch))["depth"])[..., 0]
    for object_motion in (True, False):
        motion_task = MotionTask(preset="small", frame_difference=True, object_motion=object_motion,
                                 translation_scale=0.1)
        try:
            model = restored_model(motion_task, run_dir, "motion")
        except AssertionError:  # the checkpoint's network has (or lacks) the object-motion field
            continue
        if model is None:
            raise SystemExit(f"{run_dir}/motion: no checkpoint (is this a Table 1 row's folder?)")
        out = model(motion_task.model_inputs(batch))
        return depth, (np.asarray(out["residual_translation"]) if object_motion else None)
    raise SystemExit(f"{run_dir}/motion: the checkpoint fits neither motion network of Table 1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="Table 1 row folders (with depth/ and motion/)")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--co_moving", type=float, default=0.3, help="metres of motion relative to the camera")
    args = p.parse_args(argv)
    runtime.configure(False)
    runtime.import_tensorflow()
    from taskology_tf.data.synthetic.dataset import synthetic_dataset

    data = synthetic_dataset(style="city", traffic="dense", with_next=True, keys=list(KEYS),
                             num_examples=args.clips, seed=args.seed, height=64, width=128)
    batch = next(iter(data.batch(args.clips)))
    true = np.asarray(batch["depth"])[..., 0]
    true_field = np.asarray(batch["object_motion"])
    masks = regions(true, np.asarray(batch["intrinsics"]), np.asarray(batch["ego_motion"]), true_field, args.co_moving)
    from taskology_tf.tasks.depth import moving_pixels
    from taskology_tf.tasks.segmentation import movable_class_ids

    movable = np.isin(np.asarray(batch["segmentation"])[..., 0], movable_class_ids())
    moving = moving_pixels(true_field)[..., 0]
    masks_of = {}
    print(f"{'run':40s} {'region':13s} {'pixels':>7s} {'median ratio':>12s} {'Abs Rel':>8s} {'|field|':>8s} {'|true|':>7s}")
    for run in args.runs:
        mask = predict_mask(run, batch)
        if mask is not None:
            masks_of[run] = mask_report(mask, movable, moving)
        predicted = predict(run, batch)
        if predicted is None:
            continue
        depth, field = predicted
        for row in region_report(median_scaled_ratio(depth, true), masks, field, true_field):
            print(f"{run[-40:]:40s} {row['region']:13s} {row['fraction']:7.4f} {row['median_ratio']:12.2f} "
                  f"{row['abs_rel']:8.3f} {row.get('field', float('nan')):8.3f} {row.get('true_field', float('nan')):7.3f}")
    if masks_of:
        print(f"\nmovable mask m (truth: movable classes {movable.mean():.3f} of the pixels, moving {moving.mean():.3f})")
        print(f"{'run':40s} {'marked':>7s} {'prec. movable':>13s} {'rec. movable':>12s} {'prec. moving':>12s} "
              f"{'rec. moving':>11s}")
        for run, r in masks_of.items():
            print(f"{run[-40:]:40s} {r['marked']:7.3f} {r['precision_movable']:13.3f} {r['recall_movable']:12.3f} "
                  f"{r['precision_moving']:12.3f} {r['recall_moving']:11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
