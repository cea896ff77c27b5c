"""KITTI video readers (mediator data): consecutive frame pairs with pinhole intrinsics.

Three on-disk layouts, each with a pure-Python lister (paths and K, no TensorFlow)
and a ``*_dataset`` function returning an unbatched ``tf.data.Dataset`` of example
dicts with keys ``id`` () int64, ``image`` and ``image_next`` [H, W, 3] uint8 and
``intrinsics`` [3, 3] float32 (pixels, for the images as yielded):

* KITTI raw (``kitti_raw_pairs`` / ``kitti_raw_dataset``)::

      <root>/<date>/calib_cam_to_cam.txt                      K = first 3x3 of P_rect_02 (P_rect_03 for image_03)
      <root>/<date>/<date>_drive_XXXX_sync/image_02/data/0000000000.png ...

* The struct2depth / depth-from-videos triplet format (``kitti_triplet_pairs`` /
  ``kitti_triplets_dataset``)::

      <root>/train.txt                                        lines "<seq> <frame>"
      <root>/<seq>/<frame>.png                                3 frames side by side (left = earliest)
      <root>/<seq>/<frame>_cam.txt                            9 comma-separated values of one frame's K (row-major)

* Clips (``kitti_clip_pairs`` / ``kitti_clips_dataset``), e.g. ``../shared/data/kitti_clips``::

      <root>/<clip>/000.png, 001.png, ...                     consecutive frames
      <root>/<clip>/intrinsics.txt                            fx, fy, cx, cy (one per line)

Frames are decoded with ``tf.io`` inside the pipeline (parallel, deterministic order).
With ``height`` and ``width`` the frames are resized ("area" or antialiased "bilinear")
and K is scaled with the package's pixel-centre convention (``cx' = s (cx + 0.5) - 0.5``,
as ``taskology_tf.geometry.camera.scale_intrinsics``). Without them the images keep
their stored size (KITTI raw sizes differ slightly between dates, so resize to batch).

``FramePair`` and ``frame_pair_dataset`` are the generic pair pipeline (with the small TF
helpers ``decode_image``, ``crop_bottom_rows``, ``resize_image``, ``scale_intrinsics_tf``);
the Cityscapes and COCO readers use them too. Example ids are stable: a 63-bit hash of a key naming
the dataset, sequence and frame (``stable_id``), independent of where the root lies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Sequence

import gin
import numpy as np

RESIZE_METHODS = ("area", "bilinear")

_RAW_LAYOUT = (
    "expected KITTI raw data as <root>/<date>/<date>_drive_XXXX_sync/<camera>/data/*.png with "
    "<root>/<date>/calib_cam_to_cam.txt (unzip the raw *_sync.zip and *_calib.zip archives into <root>)"
)
_TRIPLET_LAYOUT = (
    "expected the struct2depth triplet format: <root>/<list_file> with lines '<seq> <frame>', "
    "<root>/<seq>/<frame>.png (frames side by side) and <root>/<seq>/<frame>_cam.txt (9 comma-separated K values)"
)
_CLIP_LAYOUT = (
    "expected clips as <root>/<clip>/NNN.png (consecutive frames) with <root>/<clip>/intrinsics.txt "
    "holding fx, fy, cx, cy"
)


@dataclasses.dataclass(frozen=True, eq=False)
class FramePair:
    """Two consecutive frames on disk and the intrinsics of one frame as stored.

    A file may hold ``columns`` equal-width frames side by side (a strip); ``column`` and
    ``column_next`` pick frame t and t+1 (both 0 for one frame per file).
    intrinsics: [3, 3] pinhole K in pixels of one frame before any crop or resize.
    """

    path: str
    path_next: str
    intrinsics: np.ndarray
    id: int
    column: int = 0
    column_next: int = 0
    columns: int = 1

    def __post_init__(self):
        k = np.asarray(self.intrinsics, dtype=np.float32)
        if k.shape != (3, 3):
            raise ValueError(f"FramePair.intrinsics must be a 3x3 matrix, got shape {k.shape} for {self.path}.")
        object.__setattr__(self, "intrinsics", k)
        if not (0 <= self.column < self.columns and 0 <= self.column_next < self.columns):
            raise ValueError(
                f"FramePair columns out of range: column={self.column}, column_next={self.column_next}, "
                f"columns={self.columns} ({self.path})."
            )


def stable_id(key: str) -> int:
    """A non-negative int64 id for ``key`` (63 bits of its BLAKE2b hash): same key, same id, on every machine."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """[3, 3] float32 pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def check_root(root, layout: str) -> str:
    """``root`` as a path string; FileNotFoundError naming the expected ``layout`` if it is not a directory."""
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist or is not a directory; {layout}.")
    return root


def check_stride(stride: int) -> int:
    """``stride`` as an int; ValueError unless it is a positive integer."""
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer (frames between the two of a pair), got {stride!r}.")
    return int(stride)


def _numbered_pngs(folder: str) -> dict[int, str]:
    """frame number -> path of the ``<number>.png`` files in ``folder``."""
    frames = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() == ".png" and stem.isdigit():
            frames[int(stem)] = os.path.join(folder, name)
    return frames


def _consecutive(frames: dict[int, str], stride: int) -> list[tuple[int, str, str]]:
    """(number, path, path_next) for every frame whose successor ``number + stride`` exists."""
    return [(n, frames[n], frames[n + stride]) for n in sorted(frames) if n + stride in frames]


# ----------------------------------------------------------------------------------------------
# KITTI raw.


def read_calib_cam_to_cam(path: str) -> dict[str, np.ndarray]:
    """The ``KEY: numbers`` lines of a KITTI ``calib_cam_to_cam.txt`` (non-numeric lines are skipped)."""
    values = {}
    with open(path) as f:
        for line in f:
            key, sep, rest = line.partition(":")
            if not sep:
                continue
            try:
                values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
            except ValueError:
                continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    return values


def kitti_raw_intrinsics(calib_path: str, camera: str = "image_02") -> np.ndarray:
    """[3, 3] K of ``camera`` (image_00..image_03): the left 3x3 of ``P_rect_0X`` in ``calib_cam_to_cam.txt``."""
    key = f"P_rect_{camera[-2:]}"
    calib = read_calib_cam_to_cam(calib_path)
    if key not in calib or calib[key].size != 12:
        raise ValueError(
            f"{calib_path} has no 12-value '{key}:' line (the rectified 3x4 projection of {camera}); "
            "is it a KITTI raw calib_cam_to_cam.txt?"
        )
    return calib[key].reshape(3, 4)[:, :3].astype(np.float32)


def kitti_raw_pairs(
    root, *, camera: str = "image_02", drives: Sequence[str] | None = None, stride: int = 1
) -> list[FramePair]:
    """Consecutive frame pairs of the KITTI raw ``*_sync`` drives under ``root``, sorted by drive and frame.

    camera: "image_02" (left colour, default) or "image_03" (right colour); greyscale image_00/01 work too.
    drives: drive folder names to keep, e.g. ["2011_09_26_drive_0001_sync"]; None = all.
    stride: frame t+1 is ``stride`` frames after t (KITTI raw runs at 10 Hz).
    """
    root = check_root(root, _RAW_LAYOUT)
    stride = check_stride(stride)
    if not re.fullmatch(r"image_0[0-3]", camera):
        raise ValueError(f"camera must be one of image_00..image_03, got {camera!r}.")
    found = {}
    for date in sorted(os.listdir(root)):
        date_dir = os.path.join(root, date)
        if not os.path.isdir(date_dir):
            continue
        for drive in sorted(os.listdir(date_dir)):
            if re.fullmatch(r".*_drive_\d+_sync", drive) and os.path.isdir(os.path.join(date_dir, drive)):
                found[drive] = date
    if not found:
        raise FileNotFoundError(f"no <date>/<date>_drive_XXXX_sync folders under {root!r}; {_RAW_LAYOUT}.")
    if drives is not None:
        if isinstance(drives, str):
            raise ValueError("drives must be a list of drive folder names, not a string.")
        unknown = sorted(set(drives) - set(found))
        if unknown:
            raise ValueError(f"drives {unknown} are not under {root!r}; available: {sorted(found)}.")
        found = {d: found[d] for d in drives}
    pairs = []
    for drive, date in sorted(found.items()):
        calib = os.path.join(root, date, "calib_cam_to_cam.txt")
        if not os.path.isfile(calib):
            raise FileNotFoundError(f"missing calibration {calib!r} for drive {drive}; {_RAW_LAYOUT}.")
        k = kitti_raw_intrinsics(calib, camera)
        data = os.path.join(root, date, drive, camera, "data")
        if not os.path.isdir(data):
            raise FileNotFoundError(f"missing frames folder {data!r}; {_RAW_LAYOUT}.")
        for n, path, path_next in _consecutive(_numbered_pngs(data), stride):
            pairs.append(FramePair(path, path_next, k, stable_id(f"kitti_raw/{drive}/{camera}/{n}/{stride}")))
    if not pairs:
        raise FileNotFoundError(f"no pairs of consecutive frames (stride {stride}) under {root!r}; {_RAW_LAYOUT}.")
    return pairs


# ----------------------------------------------------------------------------------------------
# struct2depth / depth-from-videos triplets.


def read_cam_txt(path: str) -> np.ndarray:
    """[3, 3] K from a struct2depth ``<frame>_cam.txt`` (9 values, comma- or space-separated, row-major)."""
    with open(path) as f:
        text = f.read()
    try:
        values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError as err:
        raise ValueError(f"{path}: expected 9 comma-separated numbers (K row by row): {err}.") from None
    if len(values) != 9:
        raise ValueError(f"{path}: expected 9 comma-separated numbers (K row by row), got {len(values)}.")
    return np.asarray(values, dtype=np.float32).reshape(3, 3)


def kitti_triplet_pairs(
    root, *, list_file: str = "train.txt", pair_starts: Sequence[int] = (0, 1), frames_per_file: int = 3
) -> list[FramePair]:
    """Frame pairs of the struct2depth format, in list-file order (pairs of one file together).

    list_file: relative to ``root`` (or absolute): lines "<seq> <frame>".
    pair_starts: which frames of each strip start a pair (frame i with i+1): (0, 1) = both pairs
      of a triplet; (1,) = only the middle frame with the last; (0,) = only the first two frames.
    frames_per_file: frames side by side in each PNG (3 for struct2depth triplets).
    """
    root = check_root(root, _TRIPLET_LAYOUT)
    if int(frames_per_file) != frames_per_file or frames_per_file < 2:
        raise ValueError(f"frames_per_file must be an integer >= 2, got {frames_per_file!r}.")
    starts = list(pair_starts)
    if not starts or any(int(s) != s or not 0 <= s <= frames_per_file - 2 for s in starts):
        raise ValueError(
            f"pair_starts must be a non-empty list of frame indices in [0, {frames_per_file - 2}], got {pair_starts!r}."
        )
    list_path = list_file if os.path.isabs(list_file) else os.path.join(root, list_file)
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"missing list file {list_path!r}; {_TRIPLET_LAYOUT}.")
    pairs = []
    with open(list_path) as f:
        lines = [line.split() for line in f]
    for number, fields in enumerate(lines, 1):
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{list_path}, line {number}: expected '<seq> <frame>', got {' '.join(fields)!r}.")
        seq, frame = fields
        image = os.path.join(root, seq, frame + ".png")
        cam = os.path.join(root, seq, frame + "_cam.txt")
        for path in (image, cam):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{list_path}, line {number} names a missing file {path!r}; {_TRIPLET_LAYOUT}.")
        k = read_cam_txt(cam)
        for s in starts:
            pairs.append(FramePair(image, image, k, stable_id(f"kitti_triplets/{seq}/{frame}/{s}"),
                                   column=int(s), column_next=int(s) + 1, columns=int(frames_per_file)))
    if not pairs:
        raise ValueError(f"{list_path} lists no frames; {_TRIPLET_LAYOUT}.")
    return pairs


# ----------------------------------------------------------------------------------------------
# Clips (e.g. ../shared/data/kitti_clips).


def read_intrinsics_txt(path: str) -> np.ndarray:
    """[3, 3] K from a clip's ``intrinsics.txt``: fx, fy, cx, cy (whitespace-separated)."""
    with open(path) as f:
        text = f.read()
    try:
        values = [float(v) for v in text.split()]
    except ValueError as err:
        raise ValueError(f"{path}: expected 4 numbers fx fy cx cy: {err}.") from None
    if len(values) != 4:
        raise ValueError(f"{path}: expected 4 numbers fx fy cx cy (one per line), got {len(values)}.")
    return intrinsics_matrix(*values)


def kitti_clip_pairs(root, *, stride: int = 1) -> list[FramePair]:
    """Consecutive frame pairs of every clip folder under ``root`` (or of ``root`` itself if it is a clip).

    A clip is a folder with ``intrinsics.txt`` and numbered PNGs; pairs are sorted by clip and frame.
    """
    root = check_root(root, _CLIP_LAYOUT)
    stride = check_stride(stride)
    if os.path.isfile(os.path.join(root, "intrinsics.txt")):
        clips = [root]
    else:
        clips = [os.path.join(root, d) for d in sorted(os.listdir(root))
                 if os.path.isfile(os.path.join(root, d, "intrinsics.txt"))]
    if not clips:
        raise FileNotFoundError(f"no clip folders with an intrinsics.txt under {root!r}; {_CLIP_LAYOUT}.")
    pairs = []
    for clip in clips:
        k = read_intrinsics_txt(os.path.join(clip, "intrinsics.txt"))
        name = os.path.basename(os.path.normpath(clip))
        for n, path, path_next in _consecutive(_numbered_pngs(clip), stride):
            pairs.append(FramePair(path, path_next, k, stable_id(f"kitti_clips/{name}/{n}/{stride}")))
    if not pairs:
        raise FileNotFoundError(f"no pairs of consecutive frames (stride {stride}) under {root!r}; {_CLIP_LAYOUT}.")
    return pairs


# ----------------------------------------------------------------------------------------------
# The tf.data pipeline shared by the video readers.


def check_size(height, width, resize_method: str) -> None:
    """ValueError unless both or neither of height/width are given (positive ints) and the method is known."""
    if (height is None) != (width is None):
        raise ValueError(f"give both height and width to resize, or neither; got height={height}, width={width}.")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}.")


def checked_labelled_image(image, labels, height, width, method, *message):
    """Fail (with ``message``: strings/tensors naming the files) unless ``image`` [H, W, 3] and
    ``labels`` [H, W, 1] have the same size; resize both to (height, width) when given (labels by
    nearest neighbour). Returns (image, labels) with static label shape [height, width, 1]."""
    import tensorflow as tf

    check = tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(labels)[:2])), list(message))
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    if height is not None:
        image = resize_image(image, height, width, method)
        labels = tf.image.resize(labels, [height, width], method="nearest")
    labels.set_shape([height, width, 1])
    return image, labels


def resize_image(image, height: int, width: int, method: str = "area"):
    """Resize a [h, w, C] uint8 tensor to [height, width, C] uint8 ("area" or antialiased "bilinear")."""
    import tensorflow as tf

    out = tf.image.resize(image, [height, width], method=method, antialias=(method == "bilinear"))
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def scale_intrinsics_tf(intrinsics, scale_y, scale_x):
    """K [3, 3] of an image resized by ``scale_y``, ``scale_x`` (new / old size); pixel-centre convention.

    The same formula as ``taskology_tf.geometry.camera.scale_intrinsics``, as TF ops for tf.data:
    ``fx' = sx fx``, ``cx' = sx (cx + 0.5) - 0.5``, likewise for y.
    """
    import tensorflow as tf

    sx = tf.cast(scale_x, tf.float32)
    sy = tf.cast(scale_y, tf.float32)
    s = tf.stack([
        tf.stack([sx, 0.0, 0.5 * (sx - 1.0)]),
        tf.stack([0.0, sy, 0.5 * (sy - 1.0)]),
        tf.constant([0.0, 0.0, 1.0]),
    ])
    return tf.linalg.matmul(s, tf.cast(intrinsics, tf.float32))


def crop_bottom_rows(image, fraction: float):
    """Drop the bottom ``fraction`` of the rows of a [h, w, C] tensor (at least one row stays)."""
    import tensorflow as tf

    if fraction <= 0.0:
        return image
    keep = tf.cast(tf.round(tf.cast(tf.shape(image)[0], tf.float32) * (1.0 - fraction)), tf.int32)
    return image[:tf.maximum(keep, 1)]


def decode_image(path):
    """[h, w, 3] uint8 tensor of the PNG/JPEG file at ``path`` (a string tensor); greyscale becomes RGB."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def _check(condition, path, message: str, *more):
    """An op failing with ``message`` and the file ``path`` (and ``more``) unless ``condition`` holds."""
    import tensorflow as tf

    return tf.debugging.Assert(condition, [message, path, *more])


def frame_pair_dataset(
    pairs: Sequence[FramePair],
    *,
    height: int | None = None,
    width: int | None = None,
    crop_bottom: float = 0.0,
    resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched ``tf.data.Dataset`` of {id, image, image_next, intrinsics} for ``pairs``, in order.

    crop_bottom: fraction of rows removed at the bottom of each frame (e.g. a car hood) before
      resizing; K is unchanged by it (the origin is the top-left corner).
    height, width: output size (both or neither); K is scaled to match.
    num_parallel_calls: decoding parallelism (None = tf.data.AUTOTUNE); order stays deterministic.
    """
    import tensorflow as tf

    check_size(height, width, resize_method)
    if not 0.0 <= crop_bottom < 1.0:
        raise ValueError(f"crop_bottom must be a fraction in [0, 1), got {crop_bottom!r}.")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("frame_pair_dataset needs at least one FramePair; the lister found none.")
    table = {
        "path": np.array([p.path for p in pairs]),
        "path_next": np.array([p.path_next for p in pairs]),
        "column": np.array([p.column for p in pairs], np.int32),
        "column_next": np.array([p.column_next for p in pairs], np.int32),
        "columns": np.array([p.columns for p in pairs], np.int32),
        "intrinsics": np.stack([p.intrinsics for p in pairs]).astype(np.float32),
        "id": np.array([p.id for p in pairs], np.int64),
    }

    def frame(strip, column, columns, path):
        w = tf.shape(strip)[1] // columns
        check = _check(tf.equal(tf.shape(strip)[1] % columns, 0), path,
                       f"image width is not a multiple of the frames side by side; {_TRIPLET_LAYOUT}")
        with tf.control_dependencies([check]):
            image = tf.identity(strip[:, column * w:(column + 1) * w])
        return crop_bottom_rows(image, crop_bottom)

    def load(rec):
        strip = decode_image(rec["path"])
        strip_next = tf.cond(tf.equal(rec["path"], rec["path_next"]), lambda: strip,
                             lambda: decode_image(rec["path_next"]))
        image = frame(strip, rec["column"], rec["columns"], rec["path"])
        image_next = frame(strip_next, rec["column_next"], rec["columns"], rec["path_next"])
        check = _check(tf.reduce_all(tf.equal(tf.shape(image), tf.shape(image_next))), rec["path"],
                       "the two frames of a pair differ in size (frame t, then t+1):", rec["path_next"])
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        k = rec["intrinsics"]
        if height is not None:
            size = tf.cast(tf.shape(image)[:2], tf.float32)
            k = scale_intrinsics_tf(k, height / size[0], width / size[1])
            image = resize_image(image, height, width, resize_method)
            image_next = resize_image(image_next, height, width, resize_method)
        return {"id": rec["id"], "image": image, "image_next": image_next, "intrinsics": k}

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)


# ----------------------------------------------------------------------------------------------
# Datasets (gin-configurable under the names kitti_raw, kitti_triplets, kitti_clips).


@gin.configurable("kitti_raw")
def kitti_raw_dataset(
    root=gin.REQUIRED,
    *,
    camera: str = "image_02",
    drives: Sequence[str] | None = None,
    stride: int = 1,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
):
    """KITTI raw frame pairs as a dataset (see ``kitti_raw_pairs`` and ``frame_pair_dataset``)."""
    check_size(height, width, resize_method)
    pairs = kitti_raw_pairs(root, camera=camera, drives=drives, stride=stride)
    return frame_pair_dataset(pairs, height=height, width=width, resize_method=resize_method)


@gin.configurable("kitti_triplets")
def kitti_triplets_dataset(
    root=gin.REQUIRED,
    *,
    list_file: str = "train.txt",
    pair_starts: Sequence[int] = (0, 1),
    frames_per_file: int = 3,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
):
    """struct2depth triplet frame pairs as a dataset (see ``kitti_triplet_pairs`` and ``frame_pair_dataset``)."""
    check_size(height, width, resize_method)
    pairs = kitti_triplet_pairs(root, list_file=list_file, pair_starts=pair_starts, frames_per_file=frames_per_file)
    return frame_pair_dataset(pairs, height=height, width=width, resize_method=resize_method)


@gin.configurable("kitti_clips")
def kitti_clips_dataset(
    root=gin.REQUIRED,
    *,
    stride: int = 1,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
):
    """Clip frame pairs as a dataset (see ``kitti_clip_pairs`` and ``frame_pair_dataset``)."""
    check_size(height, width, resize_method)
    pairs = kitti_clip_pairs(root, stride=stride)
    return frame_pair_dataset(pairs, height=height, width=width, resize_method=resize_method)
