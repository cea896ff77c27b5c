"""Pieces of the photometric consistency between depth and motion (Eq. (2)-(3) of Taskology,
following the losses of depth-from-videos-in-the-wild): pure functions of images and predictions.

Conventions: images [B, H, W, 3] floats in [0, 1]; depth [B, H, W, 1] metres; intrinsics
[B, 3, 3] pixels; motions as Euler angles [B, 3] (radians) and translations [B, 3] (metres)
mapping camera-t points to camera-(t+1) points. Per-example losses are [B].
"""

from __future__ import annotations

from keras import ops

from taskology_tf.geometry.resample import bilinear_sample
from taskology_tf.geometry.ssim import ssim_distance
from taskology_tf.geometry.transforms import compose, rotation_matrix
from taskology_tf.geometry.warp import reproject


def weighted_sum(terms, weights, base: str = "photometric"):
    """``terms[base] + sum_k weights[k] * terms[k]`` (terms: name -> [B]; zero weights are skipped): [B]."""
    total = terms[base]
    for name, weight in weights.items():
        if weight:
            total = total + weight * terms[name]
    return total


def to_unit_float(image):
    """uint8 (or float 0..255) [B, H, W, C] -> float32 in [0, 1]; float32 images in [0, 1] pass through."""
    if "int" in str(image.dtype):
        return ops.cast(image, "float32") / 255.0
    return ops.cast(image, "float32")


def transform_from_motion(rotation, translation):
    """[B, 3] Euler angles (radians) and [B, 3] translation (metres) -> [B, 4, 4] rigid transform."""
    rotation = ops.cast(rotation, "float32")
    return compose(rotation_matrix(rotation), ops.cast(translation, "float32"))


def masked_mean(values, mask):
    """Per-example mean of ``values`` [B, H, W, C] over pixels where ``mask`` [B, H, W, 1] is 1 -> [B].

    Channels are averaged; an example with an empty mask gives 0.
    """
    per_pixel = ops.mean(values, axis=-1, keepdims=True) * mask
    return ops.sum(per_pixel, axis=(1, 2, 3)) / ops.maximum(ops.sum(mask, axis=(1, 2, 3)), 1.0)


def photometric_error(target, reconstruction, l1_weight: float = 0.15, ssim_weight: float = 0.85):
    """Per-pixel ``l1_weight * |I' - I| + ssim_weight * (1 - SSIM(I', I)) / 2``, channel-averaged: [B, H, W, 1]."""
    error = 0.0
    if l1_weight:
        error = error + l1_weight * ops.mean(ops.abs(reconstruction - target), axis=-1, keepdims=True)
    if ssim_weight:
        error = error + ssim_weight * ops.mean(ssim_distance(reconstruction, target), axis=-1, keepdims=True)
    return error


def box_blur(image, size: int):
    """Mean over a ``size`` x ``size`` window at every pixel (same size, edges repeated): [B, H, W, C].

    Comparing blurred frames widens the basin of the photometric loss: the bilinear sampler's gradient
    only sees one pixel around each sample, a blurred image has slopes that reach further.
    """
    if size <= 1:
        return image
    lo, hi = (size - 1) // 2, size // 2
    padded = ops.pad(image, [[0, 0], [lo, hi], [lo, hi], [0, 0]], mode="symmetric")
    rows = ops.average_pool(padded, pool_size=(size, 1), strides=1, padding="valid")  # separable: see ssim._box3
    return ops.average_pool(rows, pool_size=(1, size), strides=1, padding="valid")


def warp_from(source_image, source_depth, depth, intrinsics, transform, translation_field=None,
              occlusion_tolerance: float | None = 0.05):
    """Reconstruct a target frame from a source frame (Eq. (2) then bilinear sampling).

    Args:
      source_image: [B, H, W, C] the frame that is sampled (e.g. frame t+1).
      source_depth: [B, H, W, 1] predicted depth of the source frame.
      depth: [B, H, W, 1] predicted depth of the target frame (e.g. frame t), metres.
      intrinsics: [B, 3, 3].
      transform: [B, 4, 4] target camera -> source camera.
      translation_field: optional [B, H, W, 3] per-pixel object motion (already masked).
      occlusion_tolerance: a target pixel counts as visible in the source when its depth there is at
        most ``(1 + tolerance)`` times the source's own depth at that spot (else it is occluded); None:
        no occlusion test. The test uses *predicted* depths, so a pixel whose depth is over-estimated
        looks occluded and gets no photometric gradient that could correct it (a trap measured in
        benchmarks/README.md, "Depth ladder"); the Table 1 experiments turn it off.
    Returns:
      reconstruction: [B, H, W, C] the target as seen through the source (edges repeated outside);
      mask: [B, H, W, 1] float, 1 where the point lands inside the source image, in front of its camera
        and is not occluded (no gradient);
      depth_error: [B, H, W, 1] relative disagreement ``|z' - z_source| / (z' + z_source)`` of the warped
        depth with the source's predicted depth (gradients to both).
    """
    uv, warped_depth = reproject(depth, intrinsics, transform, translation_field)
    reconstruction, inside = bilinear_sample(source_image, uv, padding="border")
    sampled_depth, _ = bilinear_sample(source_depth, uv, padding="border")
    in_front = ops.cast(warped_depth > 0.0, "float32")
    mask = inside * in_front
    if occlusion_tolerance is not None:
        mask = mask * ops.cast(warped_depth <= sampled_depth * (1.0 + occlusion_tolerance), "float32")
    mask = ops.stop_gradient(mask)
    depth_error = ops.abs(warped_depth - sampled_depth) / ops.maximum(warped_depth + sampled_depth, 1e-3)
    return reconstruction, mask, depth_error


def edge_aware_smoothness(depth, image):
    """Edge-aware smoothness of mean-normalised disparity: [B]; small where disparity is flat
    or changes where the image has edges.

    ``sum over x, y of |d(disp / mean disp)| * exp(-mean_c |dI|)``, averaged over pixels.
    """
    disparity = 1.0 / ops.maximum(ops.cast(depth, "float32"), 1e-3)
    disparity = disparity / ops.maximum(ops.mean(disparity, axis=(1, 2, 3), keepdims=True), 1e-6)
    image = ops.cast(image, "float32")
    total = 0.0
    for axis in (1, 2):
        d_disp = ops.abs(_diff(disparity, axis))
        d_img = ops.mean(ops.abs(_diff(image, axis)), axis=-1, keepdims=True)
        total = total + ops.mean(d_disp * ops.exp(-d_img), axis=(1, 2, 3))
    return total


def _diff(x, axis):
    if axis == 1:
        return x[:, 1:] - x[:, :-1]
    return x[:, :, 1:] - x[:, :, :-1]


def motion_cycle_consistency(rotation, translation, rotation_backward, translation_backward):
    """How far forward and backward motions are from being inverses: ([B] rotation, [B] translation).

    rotation: ``mean((R_f R_b - I)^2)`` over matrix entries (radians^2 for small angles);
    translation: ``|R_b t_f + t_b|^2 / (|t_f|^2 + |t_b|^2 + eps)`` (scale-free).
    """
    r_f = rotation_matrix(ops.cast(rotation, "float32"))
    r_b = rotation_matrix(ops.cast(rotation_backward, "float32"))
    t_f = ops.cast(translation, "float32")
    t_b = ops.cast(translation_backward, "float32")
    product = ops.einsum("bij,bjk->bik", r_f, r_b)
    eye = ops.eye(3, dtype="float32")[None]
    rot_err = ops.mean(ops.square(product - eye), axis=(1, 2))
    residual = ops.einsum("bij,bj->bi", r_b, t_f) + t_b
    scale = ops.sum(ops.square(t_f), axis=-1) + ops.sum(ops.square(t_b), axis=-1) + 1e-12
    trans_err = ops.sum(ops.square(residual), axis=-1) / scale
    return rot_err, trans_err


def motion_field_smoothness(field):
    """Total variation of a translation field [B, H, W, 3] (metres) after dividing it by its RMS: [B].

    Mean ``|d field|`` along rows and columns of the normalised field, so the penalty does not depend
    on the field's overall scale and a field that is constant per object stays cheap.
    """
    field = ops.cast(field, "float32")
    rms = ops.sqrt(ops.mean(ops.square(field), axis=(1, 2, 3), keepdims=True) + 1e-12)
    field = field / rms
    return ops.mean(ops.abs(_diff(field, 1)), axis=(1, 2, 3)) + ops.mean(ops.abs(_diff(field, 2)), axis=(1, 2, 3))


def motion_field_sparsity(field):
    """Sparsity penalty of a translation field [B, H, W, 3]: [B]. Each channel's ``|v|`` is divided by
    its mean ``|v|`` over the image (a square-root-shaped penalty), so small, spread-out motion costs
    more than motion concentrated on a few objects (the normaliser carries no gradient)."""
    field = ops.cast(field, "float32")
    mean_abs = ops.stop_gradient(ops.mean(ops.abs(field), axis=(1, 2), keepdims=True))
    scaled = ops.abs(field) / (mean_abs + 1e-12)
    return ops.mean(2.0 * mean_abs[:, 0, 0, :] * ops.mean(ops.sqrt(scaled + 1.0), axis=(1, 2)), axis=-1)
