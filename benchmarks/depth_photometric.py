"""Ladder step (a) in isolation: the depth network alone, trained by the photometric loss of Eq. (2)-(3)
against the synthetic world's TRUE camera and object motion, in a plain training loop (no Collective).

    python benchmarks/depth_photometric.py --steps 1500 [--occlusion_tolerance none] [--seed 0] ...

Quick to vary one thing at a time (about 0.1 s a step of batch 4 at 64x128 on the 2-core VM) and to see
*where* the error lies: besides held-out Abs Rel (median-scaled, <= 80 m, 128 held-out frames of seed 23) it
prints the error on moving-object and static pixels, per true-depth band and per semantic class
(``--style city``: the driving video of Table 1, aperiodic textures and ground patches; ``--style sim``: checkers).
Variants (measured in benchmarks/README.md, "Depth ladder"): ``--occlusion_tolerance``, ``--no_inside_mask``
(border samples count too), ``--automask`` (monodepth2's: drop pixels the unwarped frame explains better),
``--directions backward`` (only frame t+1 reconstructed from t), ``--disparity`` (sigmoid disparity head in
[1/100, 2] 1/m instead of softplus depth), ``--supervised`` (log-depth regression on the labels: the bound),
``--learn_motion`` (ladder (c), row A, in isolation: the motion network learned alongside, objects assumed static),
with ``--speed_weight`` (a scale anchor: the true speed as odometry gives it), ``--true_part`` (the true rotation,
translation, translation direction or norm in the warp instead of the learned one), ``--norm_noise`` and
``--direction_noise`` (random errors of the true translation) and ``--alternate`` (the networks in turns).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TRAIN_SEED, EVAL_SEED = 21, 23  # the mediator and held-out streams of gin/experiments/table1_common.gin
KEYS = ("image", "image_next", "intrinsics", "depth", "depth_next", "ego_motion", "object_motion",
        "object_motion_backward")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--cosine", action="store_true", help="cosine decay to 10 %% over --steps")
    p.add_argument("--preset", default="tiny", help="depth network preset (tiny, small, resnet18, ...)")
    p.add_argument("--clips", type=int, default=4096, help="training clips of the mediator stream")
    p.add_argument("--style", default="sim", help="synthetic world style of the training and held-out clips "
                   "('sim': checker textures; 'real': value noise, sensor noise)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--blur_sizes", default="1,5,9")
    p.add_argument("--smoothness", type=float, default=1e-3)
    p.add_argument("--occlusion_tolerance", default="0.05", help="relative margin, or 'none' for no test")
    p.add_argument("--no_inside_mask", action="store_true")
    p.add_argument("--automask", action="store_true")
    p.add_argument("--directions", choices=("both", "forward", "backward"), default="both")
    p.add_argument("--disparity", action="store_true")
    p.add_argument("--supervised", action="store_true")
    p.add_argument("--learn_motion", action="store_true",
                   help="ladder (c) in isolation: the camera motion is learned too (Table 1's motion network: "
                        "'small', frame difference, translation scale 0.1, cosine 1e-3 to 10 %%) and objects are "
                        "assumed static (row A); prints the translation error too")
    p.add_argument("--speed_weight", type=float, default=0.0,
                   help="with --learn_motion: weight of an L1 between the predicted and the true translation's "
                        "norm (the vehicle's speed x 0.1 s, as odometry gives it), a scale anchor")
    p.add_argument("--true_part", choices=("none", "rotation", "translation", "direction", "magnitude"), default="none",
                   help="with --learn_motion: use the true rotation (or translation; or the true "
                        "translation's direction with the learned norm, or the true norm with the learned direction) in "
                        "the warp instead of the learned one, to see which part of the learned motion holds depth back")
    p.add_argument("--norm_noise", type=float, default=0.0,
                   help="with --true_part translation: scale each clip's true translation by 1 + this x N(0, 1), "
                        "per step (how accurate must the learned speed be?)")
    p.add_argument("--direction_noise", type=float, default=0.0,
                   help="with --true_part translation: tilt each clip's true translation by a random angle of this "
                        "many degrees' standard deviation per axis (how accurate must the learned direction be?)")
    p.add_argument("--alternate", type=int, default=0,
                   help="with --learn_motion: train the networks in turns of this many steps (motion first, against "
                        "the other network frozen) instead of both every step, to test co-adaptation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=500, help="evaluate every this many steps")
    return p.parse_args(argv)


def build_depth_model(preset: str, disparity: bool):
    """The two-frame depth network of DepthTask (softplus depth head), or a sigmoid-disparity variant."""
    import keras
    from keras import layers

    from taskology_tf.models.unet import build_dense_model, build_frame_pair_model, conv_head

    if disparity:
        class DisparityToDepth(layers.Layer):
            def call(self, s):
                lo, hi = 1.0 / 100.0, 1.0 / 0.5
                return 1.0 / (lo + (hi - lo) * s)

        inner = conv_head(1, "sigmoid", name="disparity")
        head = lambda x: DisparityToDepth(dtype="float32")(inner(x))  # noqa: E731
    else:
        bias = math.log(math.expm1(10.0))
        head = conv_head(1, "softplus", name="depth", bias_initializer=keras.initializers.Constant(bias))
    return build_frame_pair_model(build_dense_model("depth", {"depth": head}, preset=preset))


def region_report(pred, data) -> dict:
    """Abs Rel overall, on moving/static pixels, per true-depth band and per class (whole-image median scale)."""
    import numpy as np

    from taskology_tf.metrics.depth import depth_errors
    from taskology_tf.tasks.depth import moving_pixels

    gt = data["depth"]
    def abs_rel(region=None):
        return round(float(np.nanmean(depth_errors(pred, gt, None, 1e-3, 80.0, True, region)["abs_rel"])), 3)
    moving = moving_pixels(data["object_motion"])
    out = {"abs_rel": abs_rel(), "moving": abs_rel(moving), "static": abs_rel(~moving)}
    bands = (0, 5, 10, 20, 40, 80)
    out["bands"] = {f"{lo}-{hi} m": abs_rel((gt > lo) & (gt <= hi)) for lo, hi in zip(bands[:-1], bands[1:])}
    from taskology_tf.data.example import CLASS_NAMES
    seg = data["segmentation"]
    out["classes"] = {CLASS_NAMES[c]: abs_rel(seg == c) for c in np.unique(seg) if np.any((seg == c) & (gt > 0))}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from taskology_tf import runtime

    runtime.configure(False)
    tf = runtime.import_tensorflow()
    import keras
    import numpy as np

    from taskology_tf.data.synthetic.dataset import synthetic_arrays
    from taskology_tf.geometry.transforms import euler_angles, invert
    from taskology_tf.relations import photometric as ph
    from taskology_tf.relations.depth_motion import camera_transforms

    keras.utils.set_random_seed(args.seed)
    size = dict(height=args.height, width=args.width, with_next=True, next_labels=True)
    train = synthetic_arrays(args.style, args.clips, seed=TRAIN_SEED, **size)
    held_out = synthetic_arrays(args.style, 128, seed=EVAL_SEED, **size)
    model = build_depth_model(args.preset, args.disparity)
    rate = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.steps, alpha=0.1) if args.cosine \
        else args.learning_rate
    optimizer = keras.optimizers.Adam(rate)
    blur_sizes = tuple(int(b) for b in args.blur_sizes.split(","))
    tolerance = None if args.occlusion_tolerance.lower() == "none" else float(args.occlusion_tolerance)

    motion_model = motion_optimizer = None
    if args.learn_motion:
        from taskology_tf.tasks.motion import MotionTask

        motion_model = MotionTask(preset="small", frame_difference=True, translation_scale=0.1).build_model()
        motion_optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, args.steps, alpha=0.1))

    def with_true_part(motion, forward, part):
        """``motion`` with one part replaced by the truth from ``forward`` [B, 4, 4] (see --true_part)."""
        if part == "rotation":
            return {**motion, "rotation": euler_angles(forward[:, :3, :3])}
        t, t_true = motion["translation"], forward[:, :3, 3]
        if args.norm_noise:
            t_true = t_true * (1.0 + args.norm_noise * tf.random.normal(tf.shape(t_true)[:1]))[:, None]
        if args.direction_noise:
            tilt = tf.random.normal(tf.shape(t_true)) * math.radians(args.direction_noise)
            t_true = t_true + tf.linalg.cross(tilt, t_true)  # small-angle rotation of the vector
        norm, norm_true = tf.norm(t, axis=-1, keepdims=True) + 1e-6, tf.norm(t_true, axis=-1, keepdims=True)
        translation = {"translation": t_true, "direction": t_true / norm_true * norm,
                       "magnitude": t / norm * norm_true}[part]
        return {**motion, "translation": translation}

    def photometric_loss(batch, depth, motion=None):
        image, image_next = ph.to_unit_float(batch["image"]), ph.to_unit_float(batch["image_next"])
        if motion is None:
            forward = tf.cast(batch["ego_motion"], tf.float32)
            transforms = [ph.transform_from_motion(euler_angles(t[:, :3, :3]), t[:, :3, 3])
                          for t in (forward, invert(forward))]
            fields = batch["object_motion"], batch["object_motion_backward"]
        else:
            if args.true_part != "none":
                motion = with_true_part(motion, tf.cast(batch["ego_motion"], tf.float32), args.true_part)
            transforms = camera_transforms(motion, "inverse")
            fields = None, None
        directions = [(image, depth["depth"], image_next, depth["depth_next"], transforms[0], fields[0]),
                      (image_next, depth["depth_next"], image, depth["depth"], transforms[1], fields[1])]
        directions = {"both": directions, "forward": directions[:1], "backward": directions[1:]}[args.directions]
        total = 0.0
        for target, target_depth, source, source_depth, transform, field in directions:
            for size_px in blur_sizes:
                source_b, target_b = ph.box_blur(source, size_px), ph.box_blur(target, size_px)
                recon, mask, _ = ph.warp_from(source_b, source_depth, target_depth, batch["intrinsics"], transform,
                                              field, tolerance)
                error = ph.photometric_error(target_b, recon)
                if args.no_inside_mask:
                    mask = tf.ones_like(mask)
                if args.automask:
                    unwarped = ph.photometric_error(target_b, source_b)
                    mask = mask * tf.stop_gradient(tf.cast(error < unwarped, tf.float32))
                total = total + ph.masked_mean(error, mask) / len(blur_sizes)
        smooth = ph.edge_aware_smoothness(depth["depth"], image) + ph.edge_aware_smoothness(depth["depth_next"], image_next)
        return tf.reduce_mean(total + args.smoothness * smooth)

    def supervised_loss(batch, depth):
        valid = tf.cast(batch["depth"] > 0, tf.float32)
        log_error = tf.math.log(depth["depth"]) - tf.math.log(tf.maximum(batch["depth"], 1e-3))
        return tf.reduce_sum(tf.square(log_error) * valid) / tf.reduce_sum(valid)

    loss_fn = supervised_loss if args.supervised else photometric_loss
    optimizer.build(model.trainable_variables)  # before tracing: --alternate traces steps that update one network
    if motion_optimizer is not None:
        motion_optimizer.build(motion_model.trainable_variables)

    @tf.function
    def train_step(batch, update_depth=True, update_motion=True):
        frames = {"image": batch["image"], "image_next": batch["image_next"]}
        with tf.GradientTape(persistent=True) as tape:
            if motion_model is None:
                loss = loss_fn(batch, model(frames, training=True))
            else:
                motion = motion_model(frames, training=True)
                loss = photometric_loss(batch, model(frames, training=True), motion)
                if args.speed_weight:
                    speed = tf.norm(tf.cast(batch["ego_motion"], tf.float32)[:, :3, 3], axis=-1)
                    loss += args.speed_weight * tf.reduce_mean(tf.abs(tf.norm(motion["translation"], axis=-1) - speed))
        if update_depth:
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        if motion_model is not None and update_motion:
            grads = tape.gradient(loss, motion_model.trainable_variables)
            motion_optimizer.apply_gradients(zip(grads, motion_model.trainable_variables))
        return loss

    def translation_error() -> str:
        """Mean |t_pred - t_true| / |t_true| over the held-out clips (empty without --learn_motion)."""
        if motion_model is None:
            return ""
        t = motion_model.predict({"image": held_out["image"], "image_next": held_out["image_next"]}, verbose=0,
                                 batch_size=32)["translation"]
        true = held_out["ego_motion"][:, :3, 3]
        rel = np.mean(np.linalg.norm(t - true, axis=-1)) / np.mean(np.linalg.norm(true, axis=-1))
        norm, norm_true = np.linalg.norm(t, axis=-1), np.linalg.norm(true, axis=-1)
        cos = np.sum(t * true, axis=-1) / np.maximum(norm * norm_true, 1e-9)
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        unit, unit_true = t / np.maximum(norm, 1e-9)[:, None], true / np.maximum(norm_true, 1e-9)[:, None]
        bias = np.degrees(np.mean(unit - unit_true, axis=0))  # systematic tilt of the direction (small angles)
        return (f"  translation error {rel:.3f} (norm ratio {np.median(norm / norm_true):.2f}, "
                f"direction {np.mean(angle):.2f} deg, bias x {bias[0]:+.2f} y {bias[1]:+.2f} deg)")

    def predict():
        return model.predict({"image": held_out["image"], "image_next": held_out["image_next"]}, verbose=0,
                             batch_size=32)["depth"]

    print(f"{vars(args)}\nuntrained: {region_report(predict(), held_out)['abs_rel']}", flush=True)
    rng = np.random.default_rng(args.seed)
    start, losses = time.monotonic(), []
    for step in range(1, args.steps + 1):
        index = np.sort(rng.choice(args.clips, args.batch, replace=False))
        turns = {} if not args.alternate else {"update_depth": (step - 1) // args.alternate % 2 == 1,
                                                "update_motion": (step - 1) // args.alternate % 2 == 0}
        losses.append(float(train_step({k: train[k][index] for k in KEYS}, **turns)))
        if step % args.every == 0 or step == args.steps:
            depth_now = predict()
            report = region_report(depth_now, held_out)
            valid = held_out["depth"] > 0
            scale = np.median(depth_now[valid]) / np.median(held_out["depth"][valid])
            print(f"step {step}  loss {np.mean(losses[-args.every:]):.4f}  held-out Abs Rel {report['abs_rel']:.3f} "
                  f"(moving {report['moving']:.3f}, static {report['static']:.3f}, depth scale {scale:.2f})"
                  f"{translation_error()}  "
                  f"({time.monotonic() - start:.0f} s)",
                  flush=True)
    print("final", region_report(predict(), held_out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
