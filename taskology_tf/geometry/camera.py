"""Pinhole camera: pixel grids, back-projection, projection, resizing intrinsics.

Conventions: camera frame x right, y down, z forward (metres). Pixel
coordinates are ``(u, v) = (column, row)`` with pixel *centres* at integer
coordinates: pixel ``(0, 0)`` is the centre of the top-left pixel, so an image
of width ``W`` spans ``u`` in ``[-0.5, W - 0.5]``. Homogeneous pixels are
``p = (u, v, 1)``; intrinsics ``K`` map camera points to pixels, ``z p = K X``.
"""

from __future__ import annotations

import string

from keras import ops


def _middle_letters(rank: int) -> str:
    """Einsum letters for the ``rank - 2`` dimensions between batch and the last axis."""
    n = rank - 2
    if n < 0:
        raise ValueError(f"expected a tensor of rank >= 2 ([B, ..., 3]), got rank {rank}.")
    letters = [c for c in string.ascii_lowercase if c not in "bij"]
    if n > len(letters):
        raise ValueError(f"too many dimensions ({rank}); flatten the points to [B, N, 3] first.")
    return "".join(letters[:n])


def batch_matvec(matrix, vectors):
    """``matrix @ v`` for every vector: matrix [B, 3, 3] (or [B, 4, 4]), vectors [B, ..., n] -> [B, ..., n]."""
    mid = _middle_letters(len(vectors.shape))
    return ops.einsum(f"bij,b{mid}j->b{mid}i", matrix, vectors)


def pixel_grid(height: int, width: int, dtype: str = "float32"):
    """Homogeneous pixel coordinates ``(u, v, 1)`` of every pixel centre.

    Returns: [height, width, 3]; ``grid[v, u] == (u, v, 1)``.
    """
    u = ops.arange(width, dtype=dtype)
    v = ops.arange(height, dtype=dtype)
    uu, vv = ops.meshgrid(u, v, indexing="xy")  # both [height, width]
    return ops.stack([uu, vv, ops.ones_like(uu)], axis=-1)


def _check_intrinsics(intrinsics, name: str = "intrinsics"):
    shape = tuple(intrinsics.shape)
    if len(shape) != 3 or shape[-2:] != (3, 3):
        raise ValueError(
            f"{name} must have shape [B, 3, 3], got {shape}; add a batch axis (e.g. intrinsics[None]) if needed."
        )


def backproject(depth, intrinsics):
    """Lift every pixel to a 3D camera-frame point ``X = z K^-1 (u, v, 1)``.

    Args:
      depth: [B, H, W, 1] camera-frame z in metres.
      intrinsics: [B, 3, 3] pinhole matrix K in pixels.
    Returns:
      points: [B, H, W, 3] camera-frame points in metres.
    """
    if len(depth.shape) != 4 or depth.shape[-1] != 1:
        raise ValueError(f"depth must have shape [B, H, W, 1], got {tuple(depth.shape)}.")
    _check_intrinsics(intrinsics)
    shape = ops.shape(depth)
    grid = pixel_grid(shape[1], shape[2], dtype=depth.dtype)  # [H, W, 3]
    k_inv = ops.cast(ops.inv(intrinsics), depth.dtype)
    rays = ops.einsum("bij,hwj->bhwi", k_inv, grid)  # [B, H, W, 3], z component 1 for pinhole K
    return depth * rays


def project(points, intrinsics, eps: float = 1e-6):
    """Project camera-frame points to pixel coordinates.

    The divisor ``z`` is clamped away from zero (to ``+eps`` or ``-eps``,
    keeping its sign) so the result is finite; points behind the camera
    (``z <= 0``) still get (meaningless) coordinates, so mask them with ``z``.

    Args:
      points: [B, ..., 3] camera-frame points in metres (typically [B, H, W, 3]).
      intrinsics: [B, 3, 3] pinhole matrix K in pixels.
      eps: smallest magnitude of the divisor.
    Returns:
      uv: [B, ..., 2] pixel coordinates (u, v);
      z: [B, ..., 1] depth of the points (third component of ``K X``, equal to
         the camera-frame z for a pinhole K whose last row is (0, 0, 1)), unclamped.
    """
    if points.shape[-1] != 3:
        raise ValueError(f"points must have a last axis of size 3 (x, y, z), got shape {tuple(points.shape)}.")
    _check_intrinsics(intrinsics)
    intrinsics = ops.cast(intrinsics, points.dtype)
    p = batch_matvec(intrinsics, points)
    z = p[..., 2:3]
    z_safe = ops.where(z >= 0, ops.maximum(z, eps), ops.minimum(z, -eps))
    return p[..., :2] / z_safe, z


def scale_intrinsics(intrinsics, scale_y, scale_x):
    """Intrinsics of an image resized by ``scale_y`` (rows) and ``scale_x`` (columns).

    Scales are ``new_size / old_size``. Uses the pixel-centre convention of
    this package (centres at integers) together with the half-pixel resize
    convention of ``keras.layers.Resizing`` / ``tf.image.resize``: the image
    *edges* stay aligned, so a point at ``u`` moves to
    ``u' = scale_x * (u + 0.5) - 0.5``. Hence ``fx' = scale_x * fx`` (and the
    skew), ``cx' = scale_x * (cx + 0.5) - 0.5``, and likewise for y.

    Args:
      intrinsics: [..., 3, 3] pinhole matrices K in pixels.
      scale_y, scale_x: python floats or scalar tensors.
    Returns:
      [..., 3, 3] intrinsics of the resized image.
    """
    if tuple(intrinsics.shape[-2:]) != (3, 3):
        raise ValueError(f"intrinsics must have shape [..., 3, 3], got {tuple(intrinsics.shape)}.")
    dtype = intrinsics.dtype
    sx = ops.cast(scale_x, dtype)
    sy = ops.cast(scale_y, dtype)
    row0, row1, row2 = intrinsics[..., 0, :], intrinsics[..., 1, :], intrinsics[..., 2, :]
    # K' = S K with S = [[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]].
    new0 = sx * row0 + 0.5 * (sx - 1.0) * row2
    new1 = sy * row1 + 0.5 * (sy - 1.0) * row2
    return ops.stack([new0, new1, row2], axis=-2)
