"""Surface normals from a depth map, and the cosine distance between normal maps.

Normals are unit vectors in the camera frame (x right, y down, z forward)
that face the camera (``n . X <= 0``): a fronto-parallel wall gives
``(0, 0, -1)``, a ground plane below the camera gives ``(0, -1, 0)``.
"""

from __future__ import annotations

from keras import ops

from taskology_tf.geometry.camera import backproject

SCHEMES = ("central", "edge_aware")


def _one_sided_differences(x, axis: int):
    """Forward and backward differences of x along ``axis`` (1 = rows/v, 2 = columns/u), same shape as x.

    At the last (first) index, where the forward (backward) neighbour is
    missing, the other one-sided difference is used, so both are defined
    everywhere. Needs at least 2 samples along ``axis``.
    """
    size = x.shape[axis]
    if size is not None and size < 2:
        raise ValueError(f"normals need at least 2 pixels along each image axis, got {size} along axis {axis}.")
    if axis == 1:
        diff = x[:, 1:] - x[:, :-1]
        forward = ops.concatenate([diff, diff[:, -1:]], axis=1)
        backward = ops.concatenate([diff[:, :1], diff], axis=1)
    else:
        diff = x[:, :, 1:] - x[:, :, :-1]
        forward = ops.concatenate([diff, diff[:, :, -1:]], axis=2)
        backward = ops.concatenate([diff[:, :, :1], diff], axis=2)
    return forward, backward


def _tangent(points, depth, axis: int, scheme: str):
    forward, backward = _one_sided_differences(points, axis)
    if scheme == "central":
        return 0.5 * (forward + backward)
    dz_forward, dz_backward = _one_sided_differences(depth, axis)
    use_forward = ops.abs(dz_forward) <= ops.abs(dz_backward)  # [B, H, W, 1]
    return ops.where(use_forward, forward, backward)


def normals_from_depth(depth, intrinsics, scheme: str = "edge_aware", eps: float = 1e-12):
    """Unit surface normals of the back-projected depth map.

    Each pixel is lifted to ``X = z K^-1 (u, v, 1)``; the tangents ``dX/du``
    and ``dX/dv`` are finite differences of neighbouring points and the normal
    is ``dX/dv x dX/du`` (this order faces the camera for any visible
    surface; the sign is also flipped wherever ``n . X > 0``, e.g. on noisy
    depth, so the result always faces the camera).

    Schemes:
      "central": ``(X[i+1] - X[i-1]) / 2``, one-sided at the image border.
        Exact on planes, but next to a depth discontinuity the difference
        spans both surfaces and the normal is wrong (tilted towards the
        jump).
      "edge_aware": per pixel and per direction, the forward or backward
        one-sided difference, whichever has the smaller depth change (ties
        -> forward). A pixel next to a depth step thus differentiates along
        the surface it lies on and gets that surface's normal; only
        one-pixel-wide structures (no neighbour on the same surface in some
        direction) still mix surfaces.
      Both schemes are exact (up to float error) on planes, whose
      neighbouring points are chords lying in the plane.

    Invalid depth (0) is not treated specially: mask such pixels downstream.
    The tangents are scaled by fx and fy (which does not change the
    direction) so that their cross product has magnitude ~ z^2 whatever the
    focal length, and the normalisation ``n / sqrt(|n|^2 + eps)`` keeps
    values and gradients finite everywhere, including constant or zero depth
    (where the normal is the zero vector).

    Args:
      depth: [B, H, W, 1] camera-frame z in metres (H, W >= 2).
      intrinsics: [B, 3, 3] pinhole matrix K in pixels.
      scheme: "edge_aware" or "central".
      eps: added to the squared norm (m^4) before normalising.
    Returns:
      [B, H, W, 3] unit normals in the camera frame.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}.")
    points = backproject(depth, intrinsics)  # validates shapes
    intrinsics = ops.cast(intrinsics, depth.dtype)
    fx = intrinsics[:, 0, 0][:, None, None, None]
    fy = intrinsics[:, 1, 1][:, None, None, None]
    d_du = _tangent(points, depth, axis=2, scheme=scheme) * fx
    d_dv = _tangent(points, depth, axis=1, scheme=scheme) * fy
    normals = ops.cross(d_dv, d_du)
    facing_away = ops.sum(normals * points, axis=-1, keepdims=True) > 0.0
    normals = ops.where(facing_away, -normals, normals)
    return normals / ops.sqrt(ops.sum(normals * normals, axis=-1, keepdims=True) + eps)


def cosine_distance(a, b, mask=None, eps: float = 1e-12):
    """Per-example mean of ``1 - cos(a, b)`` over (valid) pixels.

    Args:
      a, b: [B, ..., 3] vectors (need not be unit; zero vectors give cos 0).
      mask: optional [B, ..., 1] (or [B, ...]) weights, 1 = valid.
      eps: added to squared norms before normalising.
    Returns:
      [B] mean distance; examples without valid pixels give 0.
    """
    if a.shape[-1] != 3 or b.shape[-1] != 3:
        raise ValueError(f"a and b must have a last axis of size 3, got {tuple(a.shape)} and {tuple(b.shape)}.")
    b = ops.cast(b, a.dtype)
    dot = ops.sum(a * b, axis=-1, keepdims=True)
    norm = ops.sqrt(ops.sum(a * a, axis=-1, keepdims=True) + eps) * ops.sqrt(
        ops.sum(b * b, axis=-1, keepdims=True) + eps
    )
    distance = 1.0 - dot / norm  # [B, ..., 1]
    axes = tuple(range(1, len(distance.shape)))
    if mask is None:
        return ops.mean(distance, axis=axes)
    mask = ops.cast(mask, a.dtype)
    if len(mask.shape) == len(distance.shape) - 1:
        mask = mask[..., None]
    if len(mask.shape) != len(distance.shape):
        raise ValueError(f"mask must have shape [B, ..., 1] matching a {tuple(a.shape)}, got {tuple(mask.shape)}.")
    total = ops.sum(distance * mask, axis=axes)
    count = ops.sum(ops.ones_like(distance) * mask, axis=axes)
    return total / ops.maximum(count, 1.0)
