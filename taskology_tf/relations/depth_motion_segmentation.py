"""Depth, motion and segmentation tied by Eq. (2)-(5) of Taskology (Sec. 3.2.1).

    z' p' = K R K^-1 z p + K (m * delta_t + T)                       (Eq. 2)
    L = L_ph + L_seg                                                 (Eq. 5)

with m the movable mask from the segmentation peer's argmax (no gradient), delta_t the motion
task's residual translation field, L_ph the photometric consistency of ``depth_motion`` (Eq. 3,
both directions) and L_seg the squared L2 distance between the segmentation logits of a frame and
the other frame's logits warped onto it (Eq. 4, both directions, on visible pixels). Segmentation
receives the gradient of L_seg through its logits; depth and motion through the warps of both
terms; the motion field's smoothness and sparsity regularise the motion task only.

Eq. (4) as squared L2 between logits has a trivial minimiser: shrinking every logit towards a constant
lowers it, and on the unlabelled domain the segmentation network finds that (benchmarks/README.md).
``segmentation_form = "confident_cross_entropy"`` replaces it by the cross-entropy of a frame's logits
to the warped other frame's labels where that frame is confident (max probability >= ``confidence``):
sharpening agreeing predictions lowers it, flattening them raises it; ``"balanced_confident_cross_entropy"``
averages it per target class, so that the classes a network is sure of on the unlabelled domain (road, sky)
cannot outweigh the small ones (cars) it is less sure of (``class_balanced_mean``); ``class_portion`` gives each
class its own threshold (``class_thresholds``: class-balanced self-training), so a class the peer is never 0.9-sure
of on the unlabelled domain (pedestrians) still gets labels instead of being taught away. Its targets are discrete, so
only segmentation receives its gradient; depth and motion stay tied to segmentation through the
movable mask of Eq. (2).

A warp that is wrong (a moving car whose depth or motion is off) carries the other frame's labels to the wrong
pixels; ``agreement_tolerance`` restricts Eq. (4) to pixels where the same warp also carries the *image*
correctly (mean absolute colour error at most the tolerance, images in [0, 1]).

With both sides of Eq. (4) from the network being trained, and the mask m from it too, nothing anchors its labels
on the unlabelled domain: what it is sure of spreads, and a car it misses is warped as static scenery, which
teaches it to miss the car (benchmarks/README.md, "Table 1"). ``teacher`` names another task (a frozen copy of a
trained segmentation network, ``Experiment.task_copies``) that supplies the mask and the warped side of Eq. (4);
the network being trained then only answers for the compared side.

On a movable pixel the photometric error cannot tell depth from object motion: a car that moves with the camera
is reproduced by delta_t = -T at *any* depth, or by delta_t = 0 at infinite depth. With gradients to both, the
lead car's depth runs off and the field stays near zero. ``movable_depth_gradient = False`` lets the photometric
warps train only the object motion on movable pixels (depth there gets no gradient from the warps; its smoothness
still applies), so depth on cars comes from what the network learns where it is observable. It needs a precise
mask: with the true segmentation it took Table 1's row C from Abs Rel 0.511 to 0.390, with row B's network (which
marks a quarter of the scenery as movable) it did not help, with row B trained on colour-jittered labels (a
mask of precision 0.61 instead of 0.49) it took C from 0.509 to 0.473 (benchmarks/README.md, "Table 1").
"""

from __future__ import annotations

import functools

import gin
from keras import ops

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation, weight_overrides
from taskology_tf.relations import photometric as ph
from taskology_tf.relations.depth_motion import DEPTH_KEYS, MOTION_KEYS, camera_transforms, depth_motion_terms
from taskology_tf.tasks.segmentation import movable_class_ids, movable_mask

SEGMENTATION_KEYS = ("segmentation_logits", "segmentation_logits_next")
FIELD_KEYS = ("residual_translation", "residual_translation_backward")
SEGMENTATION_FORMS = ("logits_l2", "confident_cross_entropy", "balanced_confident_cross_entropy")


def class_thresholds(probs, valid, portion: float, cap: float, iterations: int = 12):
    """Per-class confidence thresholds of class-balanced self-training: [C] float32 (no gradient).

    probs: [B, H, W, C] a peer's class probabilities; valid: [B, H, W, 1] the pixels that count. For each class c,
    the largest t with at least ``portion`` of the valid pixels whose argmax is c at p_c >= t, at most ``cap``
    (``cap`` for a class that is nobody's argmax); found to 2^-``iterations`` by bisection (sorting each class's
    pixels was slower than the rest of the relation under XLA on a CPU). A class the peer is never sure of
    (pedestrians on an unfamiliar domain) gets a low threshold instead of no labels at all.
    """
    probs = ops.stop_gradient(ops.cast(probs, "float32"))
    num_classes = ops.shape(probs)[-1]
    flat = ops.reshape(probs, (-1, num_classes))  # [N, C]
    member = ops.one_hot(ops.argmax(flat, axis=-1), num_classes) * ops.reshape(ops.cast(valid, "float32"), (-1, 1))
    count = ops.sum(member, axis=0)  # [C]
    low, high = ops.zeros_like(count), ops.ones_like(count)  # invariant: share(p >= low) >= portion
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        enough = ops.sum(member * ops.cast(flat >= middle, "float32"), axis=0) >= portion * count
        low, high = ops.where(enough, middle, low), ops.where(enough, high, middle)
    return ops.where(count > 0.0, ops.minimum(low, cap), cap)


def pseudo_labels(probs, thresholds):
    """Labels and selection of self-training: (labels [B, H, W] int, selected [B, H, W, 1] float32).

    probs: [B, H, W, C]; thresholds: a float or [C]. A pixel takes the class with the largest ``p_c / threshold_c``
    and is selected where that ratio is at least 1 (with one threshold for every class: the argmax where its
    probability reaches the threshold).
    """
    ratio = ops.stop_gradient(probs) / thresholds
    labels = ops.argmax(ratio, axis=-1)
    return labels, ops.cast(ops.max(ratio, axis=-1, keepdims=True) >= 1.0, "float32")


def label_cross_entropy(logits, labels, selected):
    """``-log softmax(logits)[labels]`` where ``selected``, else 0: [B, H, W, 1].

    logits: [B, H, W, C]; labels: [B, H, W] int; selected: [B, H, W, 1] float (``pseudo_labels``).
    """
    picked = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.expand_dims(labels, -1), axis=-1)
    return -picked * selected


def segmentation_disagreement(logits, warped_logits, form: str = "logits_l2", confidence=0.9):
    """Per-pixel disagreement of a frame's logits with the other frame's logits warped onto it: [B, H, W, 1].

    logits, warped_logits: [B, H, W, C]. ``"logits_l2"``: ``sum_c (warped - logits)^2`` (the paper's Eq. 4);
    ``"confident_cross_entropy"`` (and ``"balanced_..."``, which differs only in how pixels are averaged, see
    ``class_balanced_mean``): ``-log softmax(logits)[label]`` on the pixels ``pseudo_labels(softmax(warped),
    confidence)`` selects, else 0 (no gradient through the warped side); ``confidence`` a float or [C] thresholds
    (``class_thresholds``).
    """
    if form == "logits_l2":
        return ops.sum(ops.square(warped_logits - logits), axis=-1, keepdims=True)
    if form in ("confident_cross_entropy", "balanced_confident_cross_entropy"):
        return label_cross_entropy(logits, *pseudo_labels(ops.softmax(warped_logits, axis=-1), confidence))
    raise ValueError(f"segmentation_form must be one of {SEGMENTATION_FORMS}, got {form!r}.")


def class_balanced_mean(values, labels, mask, num_classes: int):
    """Per-example mean of ``values`` over each label's masked pixels, then over the labels present: [B].

    values: [B, H, W, 1]; labels: [B, H, W] int; mask: [B, H, W, 1]. Every class present weighs the same, so a
    class covering 60 % of the pixels (road) cannot outvote one covering 2 % (a car); an empty mask gives 0.
    """
    members = ops.one_hot(labels, num_classes) * mask  # [B, H, W, C]
    count = ops.sum(members, axis=(1, 2))
    per_class = ops.sum(members * values, axis=(1, 2)) / ops.maximum(count, 1.0)
    present = ops.cast(count > 0.0, "float32")
    return ops.sum(per_class * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)


def photometric_agreement(image, warped_image, tolerance: float):
    """1 where a warp reproduces the image: ``mean_c |warped_image - image| <= tolerance``: [B, H, W, 1] float.

    image, warped_image: [B, H, W, 3] in [0, 1]. No gradient (a gate, not a loss).
    """
    error = ops.mean(ops.abs(warped_image - image), axis=-1, keepdims=True)
    return ops.stop_gradient(ops.cast(error <= tolerance, "float32"))


def video_consistency_terms(
    inputs,
    predictions,
    depth_task: str = "depth",
    motion_task: str = "motion",
    segmentation_task: str = "segmentation",
    movable_ids=None,
    occlusion_tolerance: float | None = 0.05,
    backward: str = "predicted",
    segmentation_form: str = "logits_l2",
    confidence: float = 0.9,
    agreement_tolerance: float | None = None,
    teacher_task: str | None = None,
    movable_depth_gradient: bool = True,
    class_portion: float | None = None,
    **photometric_kwargs,
):
    """Every term per example, unweighted: the ``depth_motion_terms`` (with object motion) plus
    ``segmentation`` (Eq. 4), ``field_smoothness``, ``field_sparsity`` and ``movable_fraction``; [B] each.

    predictions: depth {depth, depth_next}, motion {rotation, translation, *_backward,
    residual_translation, residual_translation_backward}, segmentation {segmentation_logits,
    segmentation_logits_next}. ``backward``: "predicted" or "inverse" camera motion for the
    t+1 -> t warps (see ``depth_motion_terms``); the backward object motion is always predicted.
    ``segmentation_form``, ``confidence``: the form of Eq. (4) (see ``segmentation_disagreement``);
    ``agreement_tolerance``: None, or Eq. (4) only where the warp reproduces the image (``photometric_agreement``).
    ``teacher_task``: None, or the task whose segmentation logits give the mask m and the warped side of Eq. (4)
    (the segmentation task's own logits then only give the compared side).
    ``movable_depth_gradient``: False stops the warps' gradient to depth on movable pixels (mask m of each frame).
    ``class_portion``: None, or the confident forms' threshold per class from the warped peer's probabilities on the
    visible pixels (``class_thresholds`` with cap ``confidence``).
    """
    movable_ids = tuple(movable_class_ids() if movable_ids is None else movable_ids)
    seg = predictions[segmentation_task]
    guide = predictions[teacher_task] if teacher_task else seg  # the mask and the warped side of Eq. (4)
    motion = predictions[motion_task]
    depth = predictions[depth_task]
    mask_t = movable_mask(guide["segmentation_logits"], movable_ids)
    mask_next = movable_mask(guide["segmentation_logits_next"], movable_ids)
    field = ops.cast(motion["residual_translation"], "float32") * mask_t
    field_backward = ops.cast(motion["residual_translation_backward"], "float32") * mask_next
    terms = depth_motion_terms(
        inputs, predictions, depth_task, motion_task, occlusion_tolerance=occlusion_tolerance,
        translation_fields=(field, field_backward), backward=backward,
        warp_frozen_depth=None if movable_depth_gradient else (mask_t, mask_next), **photometric_kwargs,
    )
    intrinsics = inputs["intrinsics"]
    forward, backward_transform = camera_transforms(motion, backward)
    logits = ops.cast(seg["segmentation_logits"], "float32")
    logits_next = ops.cast(seg["segmentation_logits_next"], "float32")
    guide_logits = ops.cast(guide["segmentation_logits"], "float32")
    guide_logits_next = ops.cast(guide["segmentation_logits_next"], "float32")
    image = ph.to_unit_float(inputs["image"])
    image_next = ph.to_unit_float(inputs["image_next"])
    directions = (
        (logits, image, depth["depth"], guide_logits_next, image_next, depth["depth_next"], forward, field),
        (logits_next, image_next, depth["depth_next"], guide_logits, image, depth["depth"], backward_transform,
         field_backward),
    )
    terms["segmentation"] = 0.0
    terms["agreement_fraction"] = 0.0
    for target, target_image, target_depth, source, source_image, source_depth, transform, f in directions:
        # logits and image through one warp: the gate judges exactly the sampling the labels took
        warped, visible, _ = ph.warp_from(ops.concatenate([source, source_image], axis=-1), source_depth,
                                          target_depth, intrinsics, transform, f, occlusion_tolerance)
        warped, warped_image = warped[..., :-3], warped[..., -3:]
        if agreement_tolerance is not None:
            visible = visible * photometric_agreement(target_image, warped_image, agreement_tolerance)
        if segmentation_form == "logits_l2":
            compared = ph.masked_mean(segmentation_disagreement(target, warped, segmentation_form), visible)
        else:  # the confident forms: the peer's labels and their selection once, for the loss and its averaging
            peer = ops.softmax(warped, axis=-1)
            thresholds = confidence if class_portion is None else class_thresholds(peer, visible, class_portion,
                                                                                   confidence)
            labels, selected = pseudo_labels(peer, thresholds)
            disagreement = label_cross_entropy(target, labels, selected)
            if segmentation_form == "balanced_confident_cross_entropy":
                compared = class_balanced_mean(disagreement, labels, visible * selected, ops.shape(warped)[-1])
            else:
                compared = ph.masked_mean(disagreement, visible)
        terms["segmentation"] = terms["segmentation"] + compared
        terms["agreement_fraction"] = terms["agreement_fraction"] + 0.5 * ops.mean(visible, axis=(1, 2, 3))
    terms["field_smoothness"] = ph.motion_field_smoothness(motion["residual_translation"]) + \
        ph.motion_field_smoothness(motion["residual_translation_backward"])
    terms["field_sparsity"] = ph.motion_field_sparsity(motion["residual_translation"]) + \
        ph.motion_field_sparsity(motion["residual_translation_backward"])
    terms["movable_fraction"] = ops.mean(mask_t, axis=(1, 2, 3))
    return terms


def video_consistency_loss(inputs, predictions, weights, **kwargs):
    """``photometric + sum_k weights[k] * term_k`` per example: [B]."""
    return ph.weighted_sum(video_consistency_terms(inputs, predictions, **kwargs), weights)


@register_relation("depth_motion_segmentation")
@gin.configurable
def depth_motion_segmentation(
    depth: str = "depth",
    motion: str = "motion",
    segmentation: str = "segmentation",
    weight: float = 1.0,
    depth_weight: float | None = None,
    motion_weight: float | None = None,
    segmentation_weight: float | None = None,
    segmentation_consistency: float = 1.0,
    segmentation_form: str = "logits_l2",
    confidence: float = 0.9,
    agreement_tolerance: float | None = None,
    teacher: str | None = None,
    movable_depth_gradient: bool = True,
    class_portion: float | None = None,
    l1_weight: float = 0.15,
    ssim_weight: float = 0.85,
    occlusion_tolerance: float | None = 0.05,
    blur_sizes=(1,),
    backward: str = "predicted",
    smoothness: float = 1e-3,
    depth_consistency: float = 0.0,
    rotation_cycle: float = 1e-3,
    translation_cycle: float = 1e-2,
    field_smoothness: float = 1e-3,
    field_sparsity: float = 1e-3,
    start_step: int = 0,
    ramp_steps: int = 0,
) -> Relation:
    """Eq. (5) between a two-frame depth task, a motion task with ``object_motion`` and a two-frame
    segmentation task. ``segmentation_consistency`` weighs L_seg against L_ph (the paper: 1);
    ``segmentation_form`` (one of SEGMENTATION_FORMS; "logits_l2" is the paper's) and ``confidence``
    choose its form (see ``segmentation_disagreement``), ``agreement_tolerance`` where it counts (None: every
    visible pixel; see ``photometric_agreement``), ``teacher`` whose labels it asks for (None: the segmentation
    task's own; else a task with segmentation logits, e.g. a frozen copy, that also gives the mask m),
    ``movable_depth_gradient`` whether the warps train depth on movable pixels (see the module docstring),
    ``class_portion`` None (one threshold, ``confidence``) or per-class thresholds (``class_thresholds``); the other
    weights (and ``backward``) as in ``depth_motion``; ``field_*`` regularise the residual translation field.
    """
    if segmentation_form not in SEGMENTATION_FORMS:
        raise ValueError(f"depth_motion_segmentation.segmentation_form must be one of {SEGMENTATION_FORMS}, "
                         f"got {segmentation_form!r}.")
    if agreement_tolerance is not None and not agreement_tolerance > 0.0:
        raise ValueError(f"depth_motion_segmentation.agreement_tolerance must be None or > 0 (a mean absolute colour "
                         f"error, images in [0, 1]), got {agreement_tolerance}.")
    if not 0.0 < confidence <= 1.0:
        raise ValueError(f"depth_motion_segmentation.confidence must be in (0, 1], got {confidence}.")
    if class_portion is not None and not 0.0 < class_portion <= 1.0:
        raise ValueError(f"depth_motion_segmentation.class_portion must be None or in (0, 1] (the share of each "
                         f"class's pixels that pass), got {class_portion}.")
    if teacher is not None and teacher in (depth, motion, segmentation):
        raise ValueError(f"depth_motion_segmentation.teacher must be a task of its own (e.g. a frozen copy of "
                         f"segmentation, Experiment.task_copies), got {teacher!r}.")
    weights = {
        "segmentation": segmentation_consistency,
        "smoothness": smoothness,
        "depth_consistency": depth_consistency,
        "rotation_cycle": rotation_cycle,
        "translation_cycle": translation_cycle,
        "field_smoothness": field_smoothness,
        "field_sparsity": field_sparsity,
    }
    reads = {depth: DEPTH_KEYS, motion: MOTION_KEYS + FIELD_KEYS, segmentation: SEGMENTATION_KEYS}
    if teacher is not None:
        reads[teacher] = SEGMENTATION_KEYS
    return Relation(
        name="depth_motion_segmentation",
        reads=reads,
        input_keys=("image", "image_next", "intrinsics"),
        loss_fn=functools.partial(
            video_consistency_loss,
            weights=weights,
            depth_task=depth,
            motion_task=motion,
            segmentation_task=segmentation,
            segmentation_form=segmentation_form,
            confidence=confidence,
            agreement_tolerance=agreement_tolerance,
            teacher_task=teacher,
            movable_depth_gradient=bool(movable_depth_gradient),
            class_portion=None if class_portion is None else float(class_portion),
            l1_weight=l1_weight,
            ssim_weight=ssim_weight,
            occlusion_tolerance=occlusion_tolerance,
            blur_sizes=tuple(int(b) for b in blur_sizes),
            backward=backward,
        ),
        weight=weight,
        task_weights=weight_overrides({depth: depth_weight, motion: motion_weight, segmentation: segmentation_weight}),
        start_step=start_step,
        ramp_steps=ramp_steps,
    )
