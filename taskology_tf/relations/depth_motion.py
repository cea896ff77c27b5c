"""Depth <-> motion photometric consistency (Sec. 3.2.1, Eq. (2)-(3)), both directions.

    L = sum over directions (t -> t+1 and t+1 -> t) of
          mean over visible pixels of  l1 |I' - I| + ssim (1 - SSIM(I', I)) / 2      (Eq. 3)
        + depth_consistency * mean |z' - z_src| / (z' + z_src)
        + smoothness * edge-aware smoothness of both depth maps
        + rotation_cycle * |R_f R_b - I|^2 + translation_cycle * |R_b t_f + t_b|^2 / (|t_f|^2 + |t_b|^2)

where I' is the other frame warped with the predicted depth and camera motion
(``z' p' = K R K^-1 z p + K T``). The depth task (``frames=2``: ``depth`` and
``depth_next``) receives the gradient through the depths, the motion task through
the motions; each term that depends on one task only (smoothness, cycles) acts on
that task alone. The object-motion and segmentation terms of Eq. (2), (4) and (5)
extend this relation with a translation field masked by the segmentation peer.
"""

from __future__ import annotations

import functools

import gin
from keras import ops

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation, weight_overrides
from taskology_tf.geometry.transforms import invert
from taskology_tf.relations import photometric as ph

DEPTH_KEYS = ("depth", "depth_next")
MOTION_KEYS = ("rotation", "translation", "rotation_backward", "translation_backward")


def camera_transforms(motion, backward: str = "predicted"):
    """(t -> t+1, t+1 -> t) camera transforms [B, 4, 4] from a motion task's predictions; the backward
    one is the prediction's (``"predicted"``) or the inverse of the forward one (``"inverse"``)."""
    if backward not in ("predicted", "inverse"):
        raise ValueError(f"backward must be 'predicted' or 'inverse', got {backward!r}.")
    forward = ph.transform_from_motion(motion["rotation"], motion["translation"])
    if backward == "inverse":
        return forward, invert(forward)
    return forward, ph.transform_from_motion(motion["rotation_backward"], motion["translation_backward"])


def depth_motion_terms(
    inputs,
    predictions,
    depth_task: str = "depth",
    motion_task: str = "motion",
    l1_weight: float = 0.15,
    ssim_weight: float = 0.85,
    occlusion_tolerance: float | None = 0.05,
    translation_fields=None,
    blur_sizes=(1,),
    backward: str = "predicted",
    warp_frozen_depth=None,
):
    """The relation's terms per example, unweighted: dict name -> [B].

    ``backward``: "predicted" warps frame t+1 with the motion net's own backward prediction (and the
    cycle terms tie it to the forward one); "inverse" uses the inverse of the forward motion instead,
    so both directions train one prediction. An untrained network hardly tells (t, t+1) from
    (t+1, t), and with separate predictions the backward term can then drag the forward motion to
    the wrong sign; "inverse" avoids that (the cycle terms are then 0).

    ``blur_sizes``: the photometric error is averaged over copies of both frames box-blurred with these
    window sizes (1 = the frames themselves); coarser copies give the motion and depth a gradient
    towards displacements of several pixels.

    inputs: ``image``, ``image_next`` (uint8 [B, H, W, 3]), ``intrinsics`` [B, 3, 3].
    predictions: ``{depth_task: {depth, depth_next}, motion_task: {rotation, translation,
    rotation_backward, translation_backward}}``. translation_fields: optional (forward, backward)
    [B, H, W, 3] per-pixel object motion of frame t's and frame t+1's points. warp_frozen_depth: optional
    (frame t, frame t+1) [B, H, W, 1] 0/1 masks where the warps take no gradient to depth (smoothness still does).
    """
    image = ph.to_unit_float(inputs["image"])
    image_next = ph.to_unit_float(inputs["image_next"])
    intrinsics = inputs["intrinsics"]
    depth = predictions[depth_task]["depth"]
    depth_next = predictions[depth_task]["depth_next"]
    motion = predictions[motion_task]
    forward, backward_transform = camera_transforms(motion, backward)
    fields = translation_fields or (None, None)
    smoothed = (depth, depth_next)
    if warp_frozen_depth is not None:
        depth, depth_next = (static_gradient_only(d, m) for d, m in zip((depth, depth_next), warp_frozen_depth))

    terms = {"photometric": 0.0, "depth_consistency": 0.0, "visible_fraction": 0.0}
    # every blurred copy of a frame side by side (3 channels per size), made once for both directions and warped
    # together: one projection and one sampling instead of one per size; the error's channel mean is the mean over
    # the sizes
    stacked, stacked_next = (ops.concatenate([ph.box_blur(frame, size) for size in blur_sizes], axis=-1)
                             for frame in (image, image_next))
    directions = (
        (stacked, depth, stacked_next, depth_next, forward, fields[0]),  # reconstruct frame t from t+1
        (stacked_next, depth_next, stacked, depth, backward_transform, fields[1]),  # reconstruct frame t+1 from t
    )
    for target, target_depth, source, source_depth, transform, field in directions:
        recon, mask, depth_error = ph.warp_from(source, source_depth, target_depth, intrinsics, transform, field,
                                                occlusion_tolerance)
        error = ph.photometric_error(target, recon, l1_weight, ssim_weight)
        terms["photometric"] = terms["photometric"] + ph.masked_mean(error, mask)
        terms["depth_consistency"] = terms["depth_consistency"] + ph.masked_mean(depth_error, mask)
        terms["visible_fraction"] = terms["visible_fraction"] + 0.5 * ops.mean(mask, axis=(1, 2, 3))
    terms["smoothness"] = ph.edge_aware_smoothness(smoothed[0], image) + ph.edge_aware_smoothness(smoothed[1], image_next)
    if backward == "inverse":
        terms["rotation_cycle"] = terms["translation_cycle"] = ops.zeros_like(terms["smoothness"])
    else:
        terms["rotation_cycle"], terms["translation_cycle"] = ph.motion_cycle_consistency(
            motion["rotation"], motion["translation"], motion["rotation_backward"], motion["translation_backward"]
        )
    return terms


def static_gradient_only(depth, frozen):
    """``depth`` [B, H, W, 1] with its gradient stopped where ``frozen`` [B, H, W, 1] is 1 (same values)."""
    depth = ops.cast(depth, "float32")
    return frozen * ops.stop_gradient(depth) + (1.0 - frozen) * depth


def depth_motion_loss(inputs, predictions, weights, **kwargs):
    """Weighted sum of ``depth_motion_terms`` (``weights``: term name -> weight; the photometric term
    has weight 1): [B]."""
    return ph.weighted_sum(depth_motion_terms(inputs, predictions, **kwargs), weights)


@register_relation("depth_motion")
@gin.configurable
def depth_motion(
    depth: str = "depth",
    motion: str = "motion",
    weight: float = 1.0,
    depth_weight: float | None = None,
    motion_weight: float | None = None,
    l1_weight: float = 0.15,
    ssim_weight: float = 0.85,
    occlusion_tolerance: float | None = 0.05,
    blur_sizes=(1,),
    backward: str = "predicted",
    smoothness: float = 1e-3,
    depth_consistency: float = 0.0,
    rotation_cycle: float = 1e-3,
    translation_cycle: float = 1e-2,
    start_step: int = 0,
    ramp_steps: int = 0,
) -> Relation:
    """The photometric relation between a two-frame depth task and a motion task.

    Args:
      depth, motion: task names in the experiment (the depth task needs ``frames = 2``).
      weight: relation weight for both tasks; ``depth_weight`` / ``motion_weight`` override it per task.
      l1_weight, ssim_weight: mix of the per-pixel photometric error.
      occlusion_tolerance: relative depth margin of the occlusion test, None for none (see ``photometric.warp_from``).
      blur_sizes: box-blur window sizes the photometric error is averaged over (see ``depth_motion_terms``).
      backward: "predicted" or "inverse" backward motion (see ``depth_motion_terms``).
      smoothness, depth_consistency, rotation_cycle, translation_cycle: weights of the regularisers.
      start_step, ramp_steps: warm-up of the relation's weight (see ``Relation``).
    """
    weights = {
        "smoothness": smoothness,
        "depth_consistency": depth_consistency,
        "rotation_cycle": rotation_cycle,
        "translation_cycle": translation_cycle,
    }
    return Relation(
        name="depth_motion",
        reads={depth: DEPTH_KEYS, motion: MOTION_KEYS},
        input_keys=("image", "image_next", "intrinsics"),
        loss_fn=functools.partial(
            depth_motion_loss,
            weights=weights,
            depth_task=depth,
            motion_task=motion,
            l1_weight=l1_weight,
            ssim_weight=ssim_weight,
            occlusion_tolerance=occlusion_tolerance,
            blur_sizes=tuple(int(b) for b in blur_sizes),
            backward=backward,
        ),
        weight=weight,
        task_weights=weight_overrides({depth: depth_weight, motion: motion_weight}),
        start_step=start_step,
        ramp_steps=ramp_steps,
    )
