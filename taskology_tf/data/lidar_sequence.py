"""Multi-frame LiDAR examples: pose transforms, points in boxes, and padding frames into fixed-size arrays.

Pure NumPy (no TensorFlow). Frames: LiDAR/vehicle frame x forward, y left, z up;
metres, radians. A box is ``(x, y, z, length, width, height, heading)``: its
geometric centre, its extent along its own x (length), y (width) and z
(height), and its heading, the angle from the frame's +x to the box's length
axis about +z (counter-clockwise seen from above), wrapped to [-pi, pi).

One *frame* is a dict in the unbatched example-contract form::

    points     [P, 4] float32  x, y, z, intensity in the frame's sensor (or vehicle) frame
    boxes      [N, 7] float32  in the same frame
    track_ids  [N]    int64    the same object keeps its id across frames
    pose       [4, 4] float    sensor-to-world transform of the frame (float64 keeps precision)
    optional: timestamp () seconds, num_points_in_box [N] int, labelled () 0/1, id () int64

``stack_sequence`` turns ``n_f`` such frames (oldest first) into one padded,
fixed-size multi-frame example, every frame expressed in the *latest* frame's
sensor frame (see ``SEQUENCE_KEYS``).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Mapping, Sequence

import numpy as np

from taskology_tf.geometry import boxes as boxes_geometry

# The multi-frame example (frames ordered oldest first; index n_f - 1 is the latest, "current" frame).
SEQUENCE_KEYS = {
    "id": ((), "int64", "stable id of the example (of its latest frame)"),
    "points": (("n_f", "max_points", 4), "float32",
               "x, y, z (latest frame's sensor frame), intensity; padding rows are 0"),
    "points_mask": (("n_f", "max_points"), "float32", "1 = real point, 0 = padding"),
    "boxes": (("n_f", "max_boxes", 7), "float32",
              "x, y, z, length, width, height, heading (latest frame's sensor frame); padding 0"),
    "box_mask": (("n_f", "max_boxes"), "float32", "1 = real labelled box, 0 = padding or unlabelled frame"),
    "track_ids": (("n_f", "max_boxes"), "int64", "track id of each box; -1 = padding"),
    "num_points_in_box": (("n_f", "max_boxes"), "int32", "LiDAR points of the frame inside the box; 0 = padding"),
    "labelled": (("n_f",), "float32", "1 = the frame's boxes are labels, 0 = the frame is unlabelled"),
    "frame_poses": (("n_f", 4, 4), "float32", "maps frame k's sensor coordinates to the latest frame's"),
    "timestamps": (("n_f",), "float32", "seconds relative to the latest frame (<= 0)"),
}
PAD_TRACK_ID = -1


# Angles wrapped to [-pi, pi) (same shape, float64).
wrap_angle = functools.partial(boxes_geometry.wrap_angle, closed_below=True)


def check_transform(transform, name: str = "transform") -> np.ndarray:
    """``transform`` as a [4, 4] float64 array; ValueError naming ``name`` otherwise."""
    t = np.asarray(transform, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 rigid transform, got shape {t.shape}.")
    return t


def yaw_of(transform) -> float:
    """Rotation about +z of a (near-upright) transform: ``atan2(R[1, 0], R[0, 0])`` in radians."""
    t = np.asarray(transform, dtype=np.float64)
    return float(np.arctan2(t[1, 0], t[0, 0]))


def yaw_transform(yaw: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """[4, 4] float64 transform rotating by ``yaw`` about +z, then translating."""
    c, s = np.cos(yaw), np.sin(yaw)
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    t[:3, 3] = translation
    return t


def invert_transform(transform) -> np.ndarray:
    """Inverse of a rigid [4, 4] transform (``[R^T, -R^T t]``), float64."""
    t = check_transform(transform)
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def relative_transform(pose_from, pose_to) -> np.ndarray:
    """[4, 4] float64 ``inv(pose_to) @ pose_from``: frame-``from`` coordinates -> frame-``to`` coordinates.

    Both poses map their frame to a common world frame.
    """
    return invert_transform(check_transform(pose_to, "pose_to")) @ check_transform(pose_from, "pose_from")


def transform_points(points, transform) -> np.ndarray:
    """Apply a [4, 4] transform to the x, y, z columns of ``points`` [P, 3 + F]; extra columns are kept."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must have shape [P, >=3] (x, y, z, ...), got {points.shape}.")
    t = check_transform(transform)
    out = points.astype(np.float64, copy=True)
    out[:, :3] = points[:, :3].astype(np.float64) @ t[:3, :3].T + t[:3, 3]
    return out.astype(points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64)


def check_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """``boxes`` as an [N, 7] array; ValueError naming ``name`` otherwise."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise ValueError(f"{name} must have shape [N, 7] (x, y, z, length, width, height, heading), got {boxes.shape}.")
    return boxes


def transform_boxes(boxes, transform) -> np.ndarray:
    """Upright boxes [N, 7] moved by a [4, 4] transform: centres transformed, heading += the transform's yaw.

    Exact for transforms that rotate about z only (roll and pitch of the transform are ignored,
    the boxes stay upright); sizes are unchanged. Headings are wrapped to [-pi, pi).
    """
    boxes = check_boxes(boxes)
    t = check_transform(transform)
    out = boxes.astype(np.float64, copy=True)
    out[:, :3] = out[:, :3] @ t[:3, :3].T + t[:3, 3]
    out[:, 6] = wrap_angle(out[:, 6] + yaw_of(t))
    return out.astype(boxes.dtype if np.issubdtype(boxes.dtype, np.floating) else np.float64)


def box_corners(boxes) -> np.ndarray:
    """[N, 8, 3] corners of upright boxes [N, 7]; corner i has local signs (x, y, z) from the bits (4, 2, 1) of i."""
    boxes = check_boxes(boxes).astype(np.float64)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    local = 0.5 * signs[None] * boxes[:, None, 3:6]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def points_in_boxes(points, boxes, margin: float = 0.0) -> np.ndarray:
    """[P, N] bool: whether point p lies inside box n (grown by ``margin`` metres on every side).

    points: [P, >=3] (x, y, z first); boxes: [N, 7] upright boxes in the points' frame.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must have shape [P, >=3] (x, y, z, ...), got {points.shape}.")
    boxes = check_boxes(boxes).astype(np.float64)
    xyz = points[:, :3].astype(np.float64)
    d = xyz[:, None, :] - boxes[None, :, :3]  # [P, N, 3]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    lx = c * d[..., 0] + s * d[..., 1]
    ly = -s * d[..., 0] + c * d[..., 1]
    half = 0.5 * boxes[:, 3:6] + margin
    return (np.abs(lx) <= half[:, 0]) & (np.abs(ly) <= half[:, 1]) & (np.abs(d[..., 2]) <= half[:, 2])


def count_points_in_boxes(points, boxes, margin: float = 0.0, chunk: int = 65536) -> np.ndarray:
    """[N] int32 number of ``points`` inside each box (computed in chunks of points to bound memory)."""
    points = np.asarray(points)
    boxes = check_boxes(boxes)
    counts = np.zeros(boxes.shape[0], np.int64)
    if boxes.shape[0] == 0:
        return counts.astype(np.int32)
    for start in range(0, points.shape[0], chunk):
        counts += points_in_boxes(points[start:start + chunk], boxes, margin).sum(axis=0)
    return counts.astype(np.int32)


def frame_labelled(key: str, label_fraction: float, seed: int = 0) -> bool:
    """Whether the frame named ``key`` keeps its labels when only ``label_fraction`` of frames do.

    A hash of ``(seed, key)`` mapped to [0, 1) is compared with the fraction, so the choice is fixed
    for a frame (the same in every window, epoch and process) and independent across frames.
    """
    if not 0.0 <= label_fraction <= 1.0:
        raise ValueError(f"label_fraction must be in [0, 1], got {label_fraction!r}.")
    digest = hashlib.blake2b(f"{int(seed)}/{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < label_fraction


def _check_count(name: str, value) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _subsample(num: int, keep: int, rng: np.random.Generator | None) -> np.ndarray:
    """Sorted indices of ``keep`` of ``num`` rows: evenly spaced (rng None) or a random subset."""
    if num <= keep:
        return np.arange(num)
    if rng is None:
        return np.floor(np.arange(keep) * (num / keep)).astype(np.int64)
    return np.sort(rng.choice(num, size=keep, replace=False))


def stack_sequence(
    frames: Sequence[Mapping[str, np.ndarray]],
    n_f: int,
    max_points: int,
    max_boxes: int,
    *,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Pad ``n_f`` frames (oldest first) into one fixed-size multi-frame example (see ``SEQUENCE_KEYS``).

    Every frame's points and boxes are moved into the latest frame's sensor frame with the poses
    (``inv(pose_latest) @ pose_k``). A frame with more than ``max_points`` points keeps an evenly
    spaced subset (a random one with ``rng``); with more than ``max_boxes`` boxes it keeps the boxes
    nearest to the latest sensor. A frame with ``labelled`` 0 keeps its points, but its boxes are
    masked (``box_mask`` 0, ``track_ids`` -1). ``id`` is the latest frame's ``id`` (0 if absent).

    Args:
      frames: n_f dicts with points [P, >=4], boxes [N, 7], track_ids [N], pose [4, 4]; optional
        timestamp (seconds), num_points_in_box [N], labelled (0/1, default 1), id.
      n_f: number of frames (checked against ``len(frames)``).
      max_points, max_boxes: padded sizes.
    Returns:
      dict of NumPy arrays with the keys, shapes and dtypes of ``SEQUENCE_KEYS``.
    """
    n_f = _check_count("n_f", n_f)
    max_points = _check_count("max_points", max_points)
    max_boxes = _check_count("max_boxes", max_boxes)
    frames = list(frames)
    if len(frames) != n_f:
        raise ValueError(f"stack_sequence: expected n_f={n_f} frames (oldest first), got {len(frames)}.")
    for k, frame in enumerate(frames):
        missing = [key for key in ("points", "boxes", "track_ids", "pose") if key not in frame]
        if missing:
            raise ValueError(f"stack_sequence: frame {k} lacks keys {missing}; it has {sorted(frame)}.")
    latest = check_transform(frames[-1]["pose"], "frames[-1]['pose']")
    latest_time = float(frames[-1].get("timestamp", 0.0))
    out = {
        "id": np.asarray(int(frames[-1].get("id", 0)), np.int64),
        "points": np.zeros((n_f, max_points, 4), np.float32),
        "points_mask": np.zeros((n_f, max_points), np.float32),
        "boxes": np.zeros((n_f, max_boxes, 7), np.float32),
        "box_mask": np.zeros((n_f, max_boxes), np.float32),
        "track_ids": np.full((n_f, max_boxes), PAD_TRACK_ID, np.int64),
        "num_points_in_box": np.zeros((n_f, max_boxes), np.int32),
        "labelled": np.zeros((n_f,), np.float32),
        "frame_poses": np.zeros((n_f, 4, 4), np.float32),
        "timestamps": np.zeros((n_f,), np.float32),
    }
    for k, frame in enumerate(frames):
        to_latest = relative_transform(check_transform(frame["pose"], f"frames[{k}]['pose']"), latest)
        out["frame_poses"][k] = to_latest
        out["timestamps"][k] = float(frame.get("timestamp", latest_time)) - latest_time
        points = np.asarray(frame["points"])
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(f"frames[{k}]['points'] must have shape [P, 4] (x, y, z, intensity), got {points.shape}.")
        keep = _subsample(points.shape[0], max_points, rng)
        moved = transform_points(points[keep, :4].astype(np.float64), to_latest)
        out["points"][k, :len(keep)] = moved
        out["points_mask"][k, :len(keep)] = 1.0
        labelled = float(frame.get("labelled", 1.0))
        out["labelled"][k] = labelled
        boxes = check_boxes(frame["boxes"], f"frames[{k}]['boxes']")
        track_ids = np.asarray(frame["track_ids"]).reshape(-1)
        if track_ids.shape[0] != boxes.shape[0]:
            raise ValueError(f"frames[{k}]: {boxes.shape[0]} boxes but {track_ids.shape[0]} track_ids.")
        if labelled <= 0.0 or boxes.shape[0] == 0:
            continue
        moved_boxes = transform_boxes(boxes.astype(np.float64), to_latest)
        order = np.argsort(np.linalg.norm(moved_boxes[:, :2], axis=1), kind="stable")[:max_boxes]
        order = np.sort(order)
        n = len(order)
        out["boxes"][k, :n] = moved_boxes[order]
        out["box_mask"][k, :n] = 1.0
        out["track_ids"][k, :n] = track_ids[order]
        if "num_points_in_box" in frame:
            out["num_points_in_box"][k, :n] = np.asarray(frame["num_points_in_box"]).reshape(-1)[order]
        else:
            out["num_points_in_box"][k, :n] = count_points_in_boxes(points, boxes[order])
    return out


def sequence_windows(num_frames: int, n_f: int, stride: int = 1) -> list[list[int]]:
    """Frame indices of every window of ``n_f`` frames ``stride`` apart in a sequence of ``num_frames``.

    E.g. 10 Hz data with frames 0.5 s apart: ``stride=5``. Windows are listed by their latest frame.
    """
    n_f = _check_count("n_f", n_f)
    stride = _check_count("stride", stride)
    span = (n_f - 1) * stride
    return [[last - span + k * stride for k in range(n_f)] for last in range(span, num_frames)]
