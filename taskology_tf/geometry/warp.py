"""View synthesis: reproject frame-t pixels into frame t+1 and sample frame t+1 there.

``transform`` maps camera-t points to camera-(t+1) points (``X' = R X + t``,
the example contract's ``ego_motion``), so a pixel p of frame t with depth z
lands at ``z' p' = K R K^-1 z p + K t`` in frame t+1. With a per-pixel
``translation_field`` dt (object motion, already masked to movable pixels by
the caller) it lands at ``z' p' = K R K^-1 z p + K (dt + t)``: Eq. (2) of the
Taskology paper with ``dt = m * delta_t``.
"""

from __future__ import annotations

from keras import ops

from taskology_tf.geometry.camera import backproject, project
from taskology_tf.geometry.resample import bilinear_sample
from taskology_tf.geometry.transforms import apply


def reproject(depth, intrinsics, transform, translation_field=None):
    """Where each pixel of frame t appears in frame t+1.

    Args:
      depth: [B, H, W, 1] frame-t depth in metres.
      intrinsics: [B, 3, 3] pinhole K in pixels (shared by both frames).
      transform: [B, 4, 4] camera-t -> camera-(t+1).
      translation_field: optional [B, H, W, 3] metres, extra motion of each pixel's point
        (in camera-(t+1) axes) added after the rigid transform.
    Returns:
      uv: [B, H, W, 2] pixel coordinates (u, v) in frame t+1;
      z: [B, H, W, 1] depth in frame t+1 (<= 0: behind the camera).
    """
    points = apply(transform, backproject(depth, intrinsics))
    if translation_field is not None:
        if tuple(translation_field.shape[-1:]) != (3,) or len(translation_field.shape) != 4:
            raise ValueError(f"translation_field must have shape [B, H, W, 3], got {tuple(translation_field.shape)}.")
        points = points + ops.cast(translation_field, points.dtype)
    return project(points, intrinsics)


def inverse_warp(image_next, depth, intrinsics, transform, padding: str = "zeros", translation_field=None):
    """Reconstruct frame t by sampling frame t+1 at the reprojected coordinates.

    Args:
      image_next: [B, H, W, C] frame t+1.
      depth: [B, H, W, 1] frame-t depth in metres.
      intrinsics: [B, 3, 3] pinhole K in pixels.
      transform: [B, 4, 4] camera-t -> camera-(t+1).
      padding: "zeros" or "border" (see ``bilinear_sample``).
      translation_field: optional [B, H, W, 3] per-pixel object motion (see ``reproject``).
    Returns:
      warped: [B, H, W, C] frame t as seen through frame t+1 (not masked);
      valid: [B, H, W, 1] float 1 where the reprojected point lies inside
        frame t+1 and in front of its camera (z' > 0), else 0.
    """
    uv, z = reproject(depth, intrinsics, transform, translation_field)
    warped, valid = bilinear_sample(image_next, uv, padding=padding)
    in_front = ops.cast(z > 0.0, valid.dtype)
    return warped, valid * in_front
