"""Can the motion network read the camera's speed from two frames? (depth ladder step (b), isolated)

    python benchmarks/motion_speed.py --steps 3000 [--preset small] [--frame_difference] [--clips 4096]
        [--cosine] [--supervised] [--seed 0]

Trains only ``build_motion_model`` (no framework around it, so that variants are quick to compare) on
synthetic "sim" clips (64x128, seed 21), either through the photometric loss of ``depth_motion`` warping
with the TRUE depth of both frames (the default) or supervised on the true translation (``--supervised``,
an upper bound of what the network can read). Every ``--every`` steps it prints, on 128 held-out clips
(seed 23): the relative translation error |t_pred - t_true| / |t_true| (mean), the correlation between
predicted and true |t| across clips (0 = one speed for every clip), and the mean ± std of predicted |t|.
At the end it splits the error into magnitude and direction.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskology_tf import runtime  # noqa: E402

KEYS = ("image", "image_next", "intrinsics", "depth", "depth_next", "ego_motion")


def speed_stats(pred_t, true_t):
    """(mean relative error, correlation of |t|, mean |t_pred|, std |t_pred|) over clips with |t_true| >= 0.1 m."""
    import numpy as np

    tn, pn = np.linalg.norm(true_t, axis=1), np.linalg.norm(pred_t, axis=1)
    ok = tn >= 0.1
    rel = np.linalg.norm(pred_t - true_t, axis=1)[ok] / tn[ok]
    return float(rel.mean()), float(np.corrcoef(pn[ok], tn[ok])[0, 1]), float(pn[ok].mean()), float(pn[ok].std())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--preset", default="tiny", help="motion encoder widths preset")
    p.add_argument("--frame_difference", action="store_true", help="the network also sees frame t+1 - frame t")
    p.add_argument("--clips", type=int, default=1024, help="training clips")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cosine", action="store_true", help="cosine-decay the learning rate to 0 over --steps")
    p.add_argument("--supervised", action="store_true", help="squared error to the true translation instead")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    runtime.configure(False)
    tf = runtime.import_tensorflow()
    import keras
    import numpy as np

    from taskology_tf.data.synthetic.dataset import synthetic_arrays
    from taskology_tf.models.motion import build_motion_model
    from taskology_tf.relations.depth_motion import depth_motion_terms

    keras.utils.set_random_seed(args.seed)
    common = dict(height=64, width=128, with_next=True, next_labels=True)
    train = synthetic_arrays("sim", args.clips, seed=21, **common)
    held_out = synthetic_arrays("sim", 128, seed=23, **common)
    model = build_motion_model(preset=args.preset, translation_scale=0.1, frame_difference=args.frame_difference)
    lr = keras.optimizers.schedules.CosineDecay(args.lr, args.steps) if args.cosine else args.lr
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            motion = model({"image": batch["image"], "image_next": batch["image_next"]}, training=True)
            if args.supervised:
                loss = tf.reduce_mean(tf.square(motion["translation"] - batch["ego_motion"][:, :3, 3]))
            else:
                depths = {"depth": batch["depth"], "depth_next": batch["depth_next"]}
                terms = depth_motion_terms(batch, {"depth": depths, "motion": motion}, blur_sizes=(1, 5, 9),
                                           backward="inverse")
                loss = tf.reduce_mean(terms["photometric"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def predict():
        out = model.predict({"image": held_out["image"], "image_next": held_out["image_next"]}, verbose=0,
                            batch_size=32)
        return out["translation"]

    rng = np.random.default_rng(args.seed)
    start, losses = time.time(), []
    for s in range(1, args.steps + 1):
        idx = rng.choice(args.clips, args.batch, replace=False)
        batch = {k: train[k][idx] for k in KEYS}
        for k in ("depth", "depth_next"):  # sky (0) is far away
            batch[k] = np.where(batch[k] > 0, batch[k], 1000.0).astype(np.float32)
        losses.append(float(step(batch)))
        if s % args.every == 0:
            rel, corr, mean, std = speed_stats(predict(), held_out["ego_motion"][:, :3, 3])
            print(f"step {s} loss {np.mean(losses[-args.every:]):.4f} rel {rel:.3f} corr {corr:.2f} "
                  f"|t| {mean:.2f}±{std:.2f} m  {time.time() - start:.0f} s", flush=True)
    pred, true = predict(), held_out["ego_motion"][:, :3, 3]
    tn, pn = np.linalg.norm(true, axis=1), np.linalg.norm(pred, axis=1)
    ok = tn >= 0.1
    cos = np.sum(pred * true, axis=1)[ok] / np.maximum(pn[ok] * tn[ok], 1e-9)
    print(f"magnitude error {np.mean(np.abs(pn - tn)[ok] / tn[ok]):.3f} of |t|, direction error "
          f"{np.degrees(np.arccos(np.clip(cos, -1, 1))).mean():.2f} deg, true |t| {tn[ok].mean():.2f}±{tn[ok].std():.2f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
