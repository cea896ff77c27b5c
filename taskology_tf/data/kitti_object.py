"""KITTI 3D object detection frames: Velodyne scans with 3D boxes converted to the LiDAR frame.

Layout (the KITTI object benchmark; ``root`` may also be the split folder itself)::

    <root>/<split>/velodyne/000000.bin     float32 x, y, z, reflectance (LiDAR frame)
    <root>/<split>/label_2/000000.txt      one object per line (absent for the testing split)
    <root>/<split>/calib/000000.txt        P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo
    <root>/<split>/image_2/000000.png      left colour image (only its size is read, for ``fov_only``)

A label line is ``type truncated occluded alpha left top right bottom h w l x y z
rotation_y [score]``: (x, y, z) is the *bottom* centre of the box in the rectified
camera-0 frame (x right, y down, z forward), (h, w, l) its height, width and length
in metres, and rotation_y the yaw about the camera y axis (0 = length axis along
camera +x). ``camera_to_lidar_boxes`` turns these into our LiDAR-frame boxes
``(x, y, z, length, width, height, heading)`` (x forward, y left, z up, z = box
centre): centre = ``inv(Tr_velo_to_cam) inv(R0_rect) (x, y - h/2, z)``, heading =
direction of the length axis ``(cos ry, 0, -sin ry)`` carried into the LiDAR frame,
which for KITTI's near-axis-aligned calibration is ``-rotation_y - pi/2``.

KITTI object frames are single, untracked frames: ``track_ids`` number the boxes of a
frame 0..N-1. Labels only cover objects seen by the camera; ``fov_only`` keeps the
points that project into image_2.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import gin
import numpy as np

from taskology_tf.data import lidar_sequence
from taskology_tf.data.kitti import check_root, read_calib_cam_to_cam, stable_id

VEHICLE_CLASSES = ("Car", "Van")
DEFAULT_IMAGE_SIZE = (1242, 375)  # (width, height) of most KITTI object images
_LAYOUT = (
    "expected the KITTI object layout <root>/<split>/{velodyne/*.bin, calib/*.txt, label_2/*.txt} "
    "(unzip data_object_velodyne.zip, data_object_calib.zip and data_object_label_2.zip into <root>)"
)


@dataclasses.dataclass(frozen=True)
class KittiCalib:
    """p2: [3, 4] projection of the left colour camera (rectified frame -> pixels); r0_rect: [3, 3];
    velo_to_cam: [4, 4] LiDAR frame -> (unrectified) camera-0 frame. All float64."""

    p2: np.ndarray
    r0_rect: np.ndarray
    velo_to_cam: np.ndarray

    def velo_to_rect(self) -> np.ndarray:
        """[4, 4] LiDAR frame -> rectified camera frame: ``R0_rect @ Tr_velo_to_cam``."""
        r0 = np.eye(4)
        r0[:3, :3] = self.r0_rect
        return r0 @ self.velo_to_cam

    def rect_to_velo(self) -> np.ndarray:
        """[4, 4] rectified camera frame -> LiDAR frame (the inverse of ``velo_to_rect``)."""
        return np.linalg.inv(self.velo_to_rect())


@dataclasses.dataclass(frozen=True)
class KittiLabels:
    """The objects of one label file (struct of arrays).

    types: N class names; truncation [N] float; occlusion [N] int (0 visible .. 3 unknown);
    alpha [N]; bbox [N, 4] (left, top, right, bottom) pixels; dimensions [N, 3] (h, w, l) metres;
    location [N, 3] bottom centre in the rectified camera frame; rotation_y [N] radians;
    score [N] (1 when the file has no score column).
    """

    types: tuple[str, ...]
    truncation: np.ndarray
    occlusion: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    dimensions: np.ndarray
    location: np.ndarray
    rotation_y: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.types)

    def select(self, keep: np.ndarray) -> "KittiLabels":
        """The labels where the boolean mask ``keep`` [N] holds."""
        keep = np.asarray(keep, bool)
        return KittiLabels(
            types=tuple(t for t, k in zip(self.types, keep) if k),
            **{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self) if f.name != "types"},
        )

    def difficulty(self) -> np.ndarray:
        """[N] int32 KITTI difficulty: 0 easy, 1 moderate, 2 hard, -1 none of these.

        Easy: 2D box >= 40 px tall, fully visible, truncation <= 0.15; moderate: >= 25 px, occlusion
        <= 1, truncation <= 0.3; hard: >= 25 px, occlusion <= 2, truncation <= 0.5.
        """
        height = self.bbox[:, 3] - self.bbox[:, 1]
        out = np.full(len(self), -1, np.int32)
        levels = [(40, 0, 0.15), (25, 1, 0.3), (25, 2, 0.5)]  # (min height px, max occlusion, max truncation)
        for level, (min_h, max_occ, max_trunc) in reversed(list(enumerate(levels))):  # easiest level wins
            ok = (height >= min_h) & (self.occlusion <= max_occ) & (self.truncation <= max_trunc)
            out[ok] = level
        return out


def read_velodyne(path) -> np.ndarray:
    """[P, 4] float32 x, y, z, reflectance of a KITTI ``velodyne/*.bin`` file."""
    data = np.fromfile(os.fspath(path), dtype=np.float32)
    if data.size % 4:
        raise ValueError(f"{path}: a KITTI Velodyne file holds float32 (x, y, z, reflectance) rows; its size "
                         f"({data.size * 4} bytes) is not a multiple of 16.")
    return data.reshape(-1, 4)


def read_calib(path) -> KittiCalib:
    """P2, R0_rect and Tr_velo_to_cam of a KITTI object ``calib/*.txt`` file."""
    values = read_calib_cam_to_cam(os.fspath(path))
    wanted = {"P2": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}
    for key, size in wanted.items():
        if key not in values or values[key].size != size:
            raise ValueError(f"{path}: missing a '{key}:' line with {size} numbers; is it a KITTI object calib file?")
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = values["Tr_velo_to_cam"].reshape(3, 4)
    return KittiCalib(p2=values["P2"].reshape(3, 4), r0_rect=values["R0_rect"].reshape(3, 3), velo_to_cam=velo_to_cam)


def read_labels(path) -> KittiLabels:
    """The objects of a KITTI ``label_2/*.txt`` file (15 or 16 whitespace-separated fields per line)."""
    rows, types = [], []
    with open(os.fspath(path)) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (15, 16):
                raise ValueError(f"{path}, line {number}: expected 15 fields (type, truncated, occluded, alpha, "
                                 f"4 bbox, h w l, x y z, rotation_y) or 16 (+ score), got {len(fields)}.")
            try:
                numbers = [float(v) for v in fields[1:]]
            except ValueError as err:
                raise ValueError(f"{path}, line {number}: {err}.") from None
            types.append(fields[0])
            rows.append(numbers + ([1.0] if len(fields) == 15 else []))
    a = np.asarray(rows, np.float64).reshape(-1, 15)
    return KittiLabels(
        types=tuple(types), truncation=a[:, 0], occlusion=a[:, 1].astype(np.int32), alpha=a[:, 2], bbox=a[:, 3:7],
        dimensions=a[:, 7:10], location=a[:, 10:13], rotation_y=a[:, 13], score=a[:, 14],
    )


def camera_to_lidar_boxes(dimensions, location, rotation_y, calib: KittiCalib) -> np.ndarray:
    """[N, 7] LiDAR-frame boxes (x, y, z, length, width, height, heading) from KITTI camera labels.

    dimensions: [N, 3] (h, w, l); location: [N, 3] bottom centre (rectified camera frame);
    rotation_y: [N] radians. Headings are wrapped to [-pi, pi).
    """
    dims = np.asarray(dimensions, np.float64).reshape(-1, 3)
    loc = np.asarray(location, np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, np.float64).reshape(-1)
    if not (len(dims) == len(loc) == len(ry)):
        raise ValueError(
            f"dimensions {dims.shape}, location {loc.shape} and rotation_y {ry.shape} must all have N rows.")
    t = calib.rect_to_velo()
    centre = loc - np.stack([np.zeros_like(ry), 0.5 * dims[:, 0], np.zeros_like(ry)], axis=1)  # y is down
    centre = centre @ t[:3, :3].T + t[:3, 3]
    direction = np.stack([np.cos(ry), np.zeros_like(ry), -np.sin(ry)], axis=1) @ t[:3, :3].T
    heading = lidar_sequence.wrap_angle(np.arctan2(direction[:, 1], direction[:, 0]))
    return np.concatenate([centre, dims[:, [2, 1, 0]], heading[:, None]], axis=1)


def lidar_to_camera_boxes(boxes, calib: KittiCalib):
    """The inverse of ``camera_to_lidar_boxes``: (dimensions [N, 3] h w l, location [N, 3], rotation_y [N])."""
    boxes = lidar_sequence.check_boxes(boxes).astype(np.float64)
    t = calib.velo_to_rect()
    centre = boxes[:, :3] @ t[:3, :3].T + t[:3, 3]
    location = centre + np.stack([np.zeros(len(boxes)), 0.5 * boxes[:, 5], np.zeros(len(boxes))], axis=1)
    direction = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))], axis=1) @ t[:3, :3].T
    rotation_y = lidar_sequence.wrap_angle(np.arctan2(-direction[:, 2], direction[:, 0]))
    return boxes[:, [5, 4, 3]], location, rotation_y


def camera_fov_mask(points, calib: KittiCalib, image_size=DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """[P] bool: points in front of the camera that project into image_2 of ``image_size`` (width, height)."""
    points = np.asarray(points)
    rect = points[:, :3].astype(np.float64) @ calib.velo_to_rect()[:3, :3].T + calib.velo_to_rect()[:3, 3]
    uvw = rect @ calib.p2[:, :3].T + calib.p2[:, 3]
    z = uvw[:, 2]
    front = z > 0.1
    u = np.where(front, uvw[:, 0] / np.where(front, z, 1.0), -1.0)
    v = np.where(front, uvw[:, 1] / np.where(front, z, 1.0), -1.0)
    width, height = image_size
    return front & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def _split_dir(root, split: str) -> str:
    root = check_root(root, _LAYOUT)
    if os.path.isdir(os.path.join(root, "velodyne")):
        return root
    path = os.path.join(root, split)
    if not os.path.isdir(os.path.join(path, "velodyne")):
        raise FileNotFoundError(f"no {split}/velodyne folder under {root!r}; {_LAYOUT}.")
    return path


def kitti_object_frame_ids(root, split: str = "training") -> list[str]:
    """Sorted frame ids (e.g. "000000") of the Velodyne scans of ``split``."""
    folder = os.path.join(_split_dir(root, split), "velodyne")
    ids = sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".bin"))
    if not ids:
        raise FileNotFoundError(f"no *.bin scans in {folder!r}; {_LAYOUT}.")
    return ids


def _image_size(split_dir: str, frame_id: str):
    path = os.path.join(split_dir, "image_2", frame_id + ".png")
    if not os.path.isfile(path):
        return DEFAULT_IMAGE_SIZE
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        return image.size


def read_kitti_object_frame(
    root,
    frame_id: str,
    *,
    split: str = "training",
    classes: Sequence[str] = VEHICLE_CLASSES,
    fov_only: bool = False,
    min_points: int = 0,
) -> dict[str, np.ndarray]:
    """One frame in the per-frame form of ``taskology_tf.data.lidar_sequence``.

    Keys: id () int64; points [P, 4] float32 (LiDAR frame, reflectance); boxes [N, 7] float32 of the
    objects of ``classes`` (LiDAR frame); track_ids [N] int64 (0..N-1, KITTI object frames are untracked);
    num_points_in_box [N] int32 (of all scan points); difficulty [N] int32 (0 easy, 1 moderate, 2 hard,
    -1 other); pose [4, 4] identity. Without a label file (testing split) there are no boxes.
    fov_only: keep only the points that project into image_2 (the labelled field of view).
    min_points: drop boxes with fewer scan points inside.
    """
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of KITTI class names, e.g. ['Car', 'Van'], not {classes!r}.")
    split_dir = _split_dir(root, split)
    scan = os.path.join(split_dir, "velodyne", frame_id + ".bin")
    calib_path = os.path.join(split_dir, "calib", frame_id + ".txt")
    for path in (scan, calib_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"missing {path!r} for frame {frame_id}; {_LAYOUT}.")
    points = read_velodyne(scan)
    calib = read_calib(calib_path)
    label_path = os.path.join(split_dir, "label_2", frame_id + ".txt")
    boxes = np.zeros((0, 7), np.float64)
    difficulty = np.zeros((0,), np.int32)
    if os.path.isfile(label_path):
        labels = read_labels(label_path)
        labels = labels.select(np.array([t in classes for t in labels.types], bool))
        boxes = camera_to_lidar_boxes(labels.dimensions, labels.location, labels.rotation_y, calib)
        difficulty = labels.difficulty()
    counts = lidar_sequence.count_points_in_boxes(points, boxes)
    keep = counts >= min_points
    boxes, counts, difficulty = boxes[keep], counts[keep], difficulty[keep]
    if fov_only:
        points = points[camera_fov_mask(points, calib, _image_size(split_dir, frame_id))]
    return {
        "id": np.int64(stable_id(f"kitti_object/{split}/{frame_id}")),
        "points": points.astype(np.float32),
        "boxes": boxes.astype(np.float32),
        "track_ids": np.arange(len(boxes), dtype=np.int64),
        "num_points_in_box": counts.astype(np.int32),
        "difficulty": difficulty.astype(np.int32),
        "pose": np.eye(4),
    }


@gin.configurable("kitti_object")
def kitti_object_dataset(
    root=gin.REQUIRED,
    *,
    split: str = "training",
    classes: Sequence[str] = VEHICLE_CLASSES,
    fov_only: bool = True,
    min_points: int = 0,
    max_points: int | None = None,
    max_boxes: int | None = None,
):
    """KITTI object frames as an unbatched ``tf.data.Dataset``, read lazily in frame order.

    Without ``max_points``/``max_boxes``: per-frame examples {id, points [P, 4], boxes [N, 7],
    track_ids [N], num_points_in_box [N], difficulty [N]} of varying P and N. With both: one-frame
    sequences padded by ``lidar_sequence.stack_sequence`` (``n_f`` = 1; keys ``SEQUENCE_KEYS``).
    """
    import tensorflow as tf

    if (max_points is None) != (max_boxes is None):
        raise ValueError(f"give both max_points and max_boxes (padded one-frame sequences) or neither; got "
                         f"max_points={max_points}, max_boxes={max_boxes}.")
    ids = kitti_object_frame_ids(root, split)
    kwargs = dict(split=split, classes=tuple(classes), fov_only=fov_only, min_points=min_points)
    if max_points is None:
        keys = {"id": ((), tf.int64), "points": ((None, 4), tf.float32), "boxes": ((None, 7), tf.float32),
                "track_ids": ((None,), tf.int64), "num_points_in_box": ((None,), tf.int32),
                "difficulty": ((None,), tf.int32)}

        def frames():
            for frame_id in ids:
                frame = read_kitti_object_frame(root, frame_id, **kwargs)
                yield {k: frame[k] for k in keys}
    else:
        spec = {k: (tuple({"n_f": 1, "max_points": max_points, "max_boxes": max_boxes}.get(d, d) for d in shape),
                    tf.as_dtype(dtype)) for k, (shape, dtype, _) in lidar_sequence.SEQUENCE_KEYS.items()}
        keys = spec

        def frames():
            for frame_id in ids:
                frame = read_kitti_object_frame(root, frame_id, **kwargs)
                yield lidar_sequence.stack_sequence([frame], 1, max_points, max_boxes)

    signature = {k: tf.TensorSpec(shape, dtype) for k, (shape, dtype) in keys.items()}
    return tf.data.Dataset.from_generator(frames, output_signature=signature)
