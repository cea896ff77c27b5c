"""Rigid transforms as 4x4 matrices acting on column vectors: ``X' = R X + t``.

Angles are radians. A transform ``T = [[R, t], [0, 0, 0, 1]]`` of shape
[..., 4, 4]; ``ego_motion`` in the example contract is such a matrix mapping
camera-t points to camera-(t+1) points.
"""

from __future__ import annotations

from keras import ops

from taskology_tf.geometry.camera import batch_matvec


def _matrix_from_rows(rows):
    """Nested 3x3 list of [...] tensors -> [..., 3, 3]."""
    return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=-2)


def rotation_matrix(angles):
    """Rotation from Euler angles ``(rx, ry, rz)``: ``R = Rz @ Ry @ Rx``.

    I.e. a vector is rotated first about x by ``rx``, then about y by ``ry``,
    then about z by ``rz`` (extrinsic x-y-z), each right-handed.

    Args:
      angles: [..., 3] radians.
    Returns:
      [..., 3, 3] rotation matrices.
    """
    if angles.shape[-1] != 3:
        raise ValueError(f"angles must have a last axis of size 3 (rx, ry, rz), got shape {tuple(angles.shape)}.")
    cx, cy, cz = ops.cos(angles[..., 0]), ops.cos(angles[..., 1]), ops.cos(angles[..., 2])
    sx, sy, sz = ops.sin(angles[..., 0]), ops.sin(angles[..., 1]), ops.sin(angles[..., 2])
    return _matrix_from_rows(
        [
            [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
            [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
            [-sy, cy * sx, cy * cx],
        ]
    )


def euler_angles(rotation):
    """The angles ``(rx, ry, rz)`` of ``rotation_matrix``: [..., 3, 3] -> [..., 3] radians.

    ``ry`` is taken in [-pi/2, pi/2]; exact away from the gimbal lock at ``|ry| = pi/2`` (camera motions
    between frames are far from it).
    """
    if tuple(rotation.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation must have shape [..., 3, 3], got {tuple(rotation.shape)}.")
    ry = -ops.arcsin(ops.clip(rotation[..., 2, 0], -1.0, 1.0))
    rx = ops.arctan2(rotation[..., 2, 1], rotation[..., 2, 2])
    rz = ops.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    return ops.stack([rx, ry, rz], axis=-1)


def rotation_y(yaw):
    """Rotation about the y axis (the camera's down axis): [...] radians -> [..., 3, 3].

    ``[[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]]``; equals ``rotation_matrix((0, yaw, 0))``.
    """
    c, s = ops.cos(yaw), ops.sin(yaw)
    zero, one = ops.zeros_like(c), ops.ones_like(c)
    return _matrix_from_rows([[c, zero, s], [zero, one, zero], [-s, zero, c]])


def compose(rotation, translation):
    """Build ``T = [[R, t], [0, 0, 0, 1]]`` from R [..., 3, 3] and t [..., 3] -> [..., 4, 4]."""
    if tuple(rotation.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation must have shape [..., 3, 3], got {tuple(rotation.shape)}.")
    if translation.shape[-1] != 3:
        raise ValueError(f"translation must have shape [..., 3], got {tuple(translation.shape)}.")
    translation = ops.cast(translation, rotation.dtype)
    top = ops.concatenate([rotation, translation[..., :, None]], axis=-1)  # [..., 3, 4]
    bottom = ops.concatenate([ops.zeros_like(translation), ops.ones_like(translation[..., :1])], axis=-1)
    return ops.concatenate([top, bottom[..., None, :]], axis=-2)


def invert(transform):
    """Inverse of a rigid transform in closed form: ``[[R^T, -R^T t], [0, 1]]``.

    Args:
      transform: [..., 4, 4] rigid transforms (R orthonormal; the bottom row is ignored).
    Returns:
      [..., 4, 4].
    """
    if tuple(transform.shape[-2:]) != (4, 4):
        raise ValueError(f"transform must have shape [..., 4, 4], got {tuple(transform.shape)}.")
    rot_t = ops.swapaxes(transform[..., :3, :3], -1, -2)
    t = transform[..., :3, 3]
    new_t = -ops.sum(rot_t * t[..., None, :], axis=-1)  # -R^T t
    return compose(rot_t, new_t)


def apply(transform, points):
    """Apply ``X' = R X + t`` to points.

    Args:
      transform: [B, 4, 4].
      points: [B, ..., 3] (e.g. [B, H, W, 3] or [B, N, 3]).
    Returns:
      [B, ..., 3] transformed points.
    """
    if tuple(transform.shape[-2:]) != (4, 4) or len(transform.shape) != 3:
        raise ValueError(f"transform must have shape [B, 4, 4], got {tuple(transform.shape)}.")
    if points.shape[-1] != 3:
        raise ValueError(f"points must have a last axis of size 3, got shape {tuple(points.shape)}.")
    transform = ops.cast(transform, points.dtype)
    rotated = batch_matvec(transform[:, :3, :3], points)
    t = transform[:, :3, 3]
    t = ops.reshape(t, (-1,) + (1,) * (len(points.shape) - 2) + (3,))
    return rotated + t
