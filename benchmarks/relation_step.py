"""Where a Table 1 round spends its time: the relations' and the networks' forward + backward, one at a time.

    python benchmarks/relation_step.py [--repeats 20] [--no_xla] [--parts relations,networks,pieces]

At Table 1's sizes (mediator batch 4 of 64x128 frame pairs, 8 classes; table1_common.gin): ``depth_motion`` and
``depth_motion_segmentation`` (with a teacher, the class-balanced confident form, per-class thresholds or not) as
each trainer runs them (XLA unless ``--no_xla``), Table 1's three networks (two-frame tiny depth U-Net, 'small'
motion net on the frames and their difference with and without the object-motion field, two-frame tiny NAS-FPN),
and the relation's pieces (SSIM, the warp, the box blurs). Prints milliseconds per call after one warm-up call.
Results in benchmarks/README.md, "Relation step".
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from taskology_tf import runtime  # noqa: E402

B, H, W, C = 4, 64, 128, 8
BLUR_SIZES = (1, 5, 9)


def timed(fn, args, repeats: int) -> float:
    """Milliseconds per call of ``fn(*args)`` (results pulled to the host), after one warm-up call."""
    import tensorflow as tf

    def pull(result):
        for value in tf.nest.flatten(result):
            np.asarray(value)

    pull(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        pull(fn(*args))
    return (time.perf_counter() - start) / repeats * 1000.0


def with_gradient(loss_fn):
    """``loss_fn(*tensors) -> scalar`` as ``f(*tensors) -> (loss, gradients w.r.t. every tensor)``."""
    import tensorflow as tf

    def step(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = loss_fn(*tensors)
        return loss, tape.gradient(loss, tensors)

    return step


def relation_inputs(rng):
    """A mediator batch and every task's predictions at Table 1's sizes (a moving camera, random depth)."""
    import tensorflow as tf

    k = np.array([[60.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]], np.float32)
    image = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    inputs = {"image": image, "image_next": np.roll(image, 2, axis=2), "intrinsics": np.broadcast_to(k, (B, 3, 3)).copy()}

    def small(*shape):
        return tf.constant(rng.normal(scale=0.01, size=shape).astype(np.float32))

    def logits():
        return {"segmentation_logits": small(B, H, W, C) * 300, "segmentation_logits_next": small(B, H, W, C) * 300}

    depth = {"depth": tf.constant(rng.uniform(5, 20, (B, H, W, 1)).astype(np.float32)),
             "depth_next": tf.constant(rng.uniform(5, 20, (B, H, W, 1)).astype(np.float32))}
    motion = {"rotation": small(B, 3), "translation": small(B, 3) * 30, "rotation_backward": small(B, 3),
              "translation_backward": small(B, 3), "residual_translation": small(B, H, W, 3) * 30,
              "residual_translation_backward": small(B, H, W, 3) * 30}
    return inputs, {"depth": depth, "motion": motion, "segmentation": logits(), "teacher": logits()}


def relations(repeats: int, xla: bool) -> None:
    import tensorflow as tf

    from taskology_tf.relations.depth_motion import depth_motion_terms
    from taskology_tf.relations.depth_motion_segmentation import video_consistency_terms

    inputs, preds = relation_inputs(np.random.default_rng(0))
    common = dict(occlusion_tolerance=None, backward="inverse", blur_sizes=BLUR_SIZES)
    video = dict(teacher_task="teacher", segmentation_form="balanced_confident_cross_entropy",
                 movable_depth_gradient=False, **common)
    cases = {
        "depth_motion": lambda p: depth_motion_terms(inputs, p, **common)["photometric"],
        "depth_motion_segmentation": lambda p: video_consistency_terms(inputs, p, **video)["photometric"],
        "  + class_portion 0.5": lambda p: video_consistency_terms(inputs, p, class_portion=0.5, **video)["photometric"],
    }
    for name, terms in cases.items():
        def loss(d0, d1, t, seg, terms=terms):
            p = dict(preds, depth={"depth": d0, "depth_next": d1}, motion=dict(preds["motion"], translation=t),
                     segmentation={"segmentation_logits": seg,
                                   "segmentation_logits_next": preds["segmentation"]["segmentation_logits_next"]})
            return tf.reduce_sum(terms(p))

        fn = tf.function(with_gradient(loss), jit_compile=xla)
        args = (preds["depth"]["depth"], preds["depth"]["depth_next"], preds["motion"]["translation"],
                preds["segmentation"]["segmentation_logits"])
        print(f"relation  {name:32s} fwd+bwd {timed(fn, args, repeats):7.1f} ms")


def networks(repeats: int, xla: bool) -> None:
    import tensorflow as tf

    from taskology_tf.tasks.depth import DepthTask
    from taskology_tf.tasks.motion import MotionTask
    from taskology_tf.tasks.segmentation import SegmentationTask

    rng = np.random.default_rng(0)
    batch = {"image": tf.constant(rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)),
             "image_next": tf.constant(rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8))}
    tasks = {
        "depth (tiny, 2 frames)": DepthTask(frames=2, preset="tiny", max_depth=80.0, median_scaling=True),
        "motion (small)": MotionTask(preset="small", frame_difference=True, translation_scale=0.1),
        "motion (small, object motion)": MotionTask(preset="small", frame_difference=True, object_motion=True,
                                                    translation_scale=0.1),
        "segmentation (tiny, 2 frames)": SegmentationTask(frames=2, backbone="tiny"),
    }
    for name, task in tasks.items():
        model = task.build_model()
        x = task.model_inputs(batch)

        def step(x, model=model):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = tf.add_n([tf.reduce_mean(tf.cast(v, tf.float32)) for v in tf.nest.flatten(out)])
            return tape.gradient(loss, model.trainable_variables)

        train = timed(tf.function(step, jit_compile=xla), (x,), repeats)
        forward = timed(tf.function(lambda x, model=model: model(x, training=False), jit_compile=xla), (x,), repeats)
        print(f"network   {name:32s} fwd+bwd {train:7.1f} ms   fwd {forward:7.1f} ms   {model.count_params():,} params")


def pieces(repeats: int, xla: bool) -> None:
    import tensorflow as tf

    from taskology_tf.geometry.ssim import ssim_distance
    from taskology_tf.relations import photometric as ph

    rng = np.random.default_rng(0)
    channels = 3 * len(BLUR_SIZES)
    x = tf.constant(rng.uniform(size=(B, H, W, channels)).astype(np.float32))
    y = tf.constant(rng.uniform(size=(B, H, W, channels)).astype(np.float32))
    depth = tf.constant(rng.uniform(5, 20, (B, H, W, 1)).astype(np.float32))
    k = tf.constant(np.broadcast_to(np.array([[60.0, 0, 63.5], [0, 60.0, 31.5], [0, 0, 1]], np.float32), (B, 3, 3)))
    transform = tf.constant(np.broadcast_to(np.eye(4, dtype=np.float32), (B, 4, 4)) + 0.01)
    cases = {
        f"ssim, {channels} channels": (lambda a, b: tf.reduce_sum(ssim_distance(a, b)), (x, y)),
        f"warp, {channels} channels": (lambda s, d: tf.reduce_sum(ph.warp_from(s, d, d, k, transform, None, None)[0]),
                                       (x, depth)),
        "box blurs 5 and 9": (lambda s: tf.reduce_sum(ph.box_blur(s, 5)) + tf.reduce_sum(ph.box_blur(s, 9)),
                              (x[..., :3],)),
    }
    for name, (loss, args) in cases.items():
        fn = tf.function(with_gradient(loss), jit_compile=xla)
        print(f"piece     {name:32s} fwd+bwd {timed(fn, args, repeats):7.1f} ms")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no_xla", action="store_true")
    p.add_argument("--parts", default="relations,networks,pieces")
    args = p.parse_args(argv)
    runtime.configure(False)
    runtime.import_tensorflow()
    parts = {"relations": relations, "networks": networks, "pieces": pieces}
    unknown = set(args.parts.split(",")) - set(parts)
    if unknown:
        p.error(f"--parts: unknown {sorted(unknown)}; choose from {sorted(parts)}")
    for name in args.parts.split(","):
        parts[name](args.repeats, not args.no_xla)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
