"""Cityscapes readers: video frame pairs (mediator) and fine-labelled frames mapped to the project's classes.

Layouts (as the official zips unpack under one ``<root>``)::

    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   30-frame snippets
    <root>/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json                     "intrinsic": fx, fy, u0, v0
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

``cityscapes_sequence_pairs`` / ``cityscapes_sequence_dataset`` give pairs of consecutive
frames of each snippet, {id, image, image_next, intrinsics}. The camera json is released
for the labelled (20th) frame of each snippet only, so a frame without its own json uses
the json of another frame of the same snippet (one camera per snippet). The bottom
``crop_bottom`` = 0.25 of every frame is removed by default: the ego car's hood and
bonnet reflections fill the lowest rows of the 1024-row frames and do not move with the
scene, and the struct2depth preprocessing used by depth-from-videos-in-the-wild drops
this bottom quarter too. Cropping the bottom leaves K unchanged; resizing scales it
(see ``taskology_tf.data.kitti.frame_pair_dataset``).

``cityscapes_labelled_examples`` / ``cityscapes_labelled_dataset`` give {id, image,
segmentation} with Cityscapes label ids mapped to ``CLASS_NAMES`` by ``LABEL_TO_CLASS``:

=================  ============================================================
project class      Cityscapes labels (label id)
=================  ============================================================
road               road (7)
sidewalk           sidewalk (8)
building           building (11)
vegetation         vegetation (21), terrain (22; the synthetic world labels grass vegetation too)
pole               pole (17), polegroup (18), traffic light (19), traffic sign (20)
sky                sky (23)
car                car (26), truck (27), bus (28), caravan (29), trailer (30), train (31),
                   motorcycle (32), bicycle (33): every vehicle, so the movable mask covers them
pedestrian         person (24), rider (25)
IGNORE_LABEL 255   everything else (unlabeled, ego vehicle, ground, parking, wall, fence, ...)
=================  ============================================================
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Sequence

import gin
import numpy as np

from taskology_tf.data import kitti
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL

# Cityscapes label ids (cityscapesScripts' labels.py) of the labels the project keeps.
CITYSCAPES_LABEL_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "pole": 17, "polegroup": 18, "traffic light": 19,
    "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26,
    "truck": 27, "bus": 28, "caravan": 29, "trailer": 30, "train": 31, "motorcycle": 32, "bicycle": 33,
}
# Cityscapes label name -> project class name (labels not listed map to IGNORE_LABEL).
LABEL_TO_CLASS = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "vegetation": "vegetation", "terrain": "vegetation",
    "pole": "pole", "polegroup": "pole", "traffic light": "pole", "traffic sign": "pole",
    "sky": "sky",
    "car": "car", "truck": "car", "bus": "car", "caravan": "car", "trailer": "car", "train": "car",
    "motorcycle": "car", "bicycle": "car",
    "person": "pedestrian", "rider": "pedestrian",
}
HOOD_FRACTION = 0.25  # bottom fraction of a frame removed by default in the sequence reader

_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png$")
_SEQUENCE_LAYOUT = (
    "expected <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png with "
    "<root>/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json (unzip leftImg8bit_sequence_trainvaltest.zip "
    "and camera_trainvaltest.zip into <root>)"
)
_LABELLED_LAYOUT = (
    "expected <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png with "
    "<root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png (unzip leftImg8bit_trainvaltest.zip "
    "and gtFine_trainvaltest.zip into <root>)"
)


def label_lookup_table() -> np.ndarray:
    """[256] int32: Cityscapes label id -> project class id (``IGNORE_LABEL`` where unmapped)."""
    table = np.full(256, IGNORE_LABEL, np.int32)
    for label, cls in LABEL_TO_CLASS.items():
        table[CITYSCAPES_LABEL_IDS[label]] = CLASS_NAMES.index(cls)
    return table


def _city_dirs(base: str, split: str, cities: Sequence[str] | None, layout: str) -> list[tuple[str, str]]:
    """(city, folder) under ``base/split``, sorted, restricted to ``cities`` when given."""
    split_dir = os.path.join(base, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"missing folder {split_dir!r} (split {split!r}); {layout}.")
    found = {c: os.path.join(split_dir, c) for c in sorted(os.listdir(split_dir))
             if os.path.isdir(os.path.join(split_dir, c))}
    if cities is not None:
        if isinstance(cities, str):
            raise ValueError("cities must be a list of city names, not a string.")
        unknown = sorted(set(cities) - set(found))
        if unknown:
            raise ValueError(f"cities {unknown} are not in {split_dir!r}; available: {sorted(found)}.")
        found = {c: found[c] for c in cities}
    return sorted(found.items())


def _frames(folder: str) -> list[tuple[str, int, int, str]]:
    """(city, seq, frame, path) of the ``*_leftImg8bit.png`` files in ``folder``."""
    out = []
    for name in sorted(os.listdir(folder)):
        m = _NAME.match(name)
        if m:
            out.append((m["city"], int(m["seq"]), int(m["frame"]), os.path.join(folder, name)))
    return out


def read_camera_json(path: str) -> np.ndarray:
    """[3, 3] K from a Cityscapes ``*_camera.json`` (``intrinsic``: fx, fy, u0, v0)."""
    with open(path) as f:
        try:
            intrinsic = json.load(f)["intrinsic"]
            return kitti.intrinsics_matrix(*(float(intrinsic[k]) for k in ("fx", "fy", "u0", "v0")))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected JSON with \"intrinsic\": {{fx, fy, u0, v0}} ({err!r}).") from None


def _snippet_cameras(camera_dir: str) -> dict[tuple[str, int], dict[int, str]]:
    """(city, seq) -> {frame: camera json path} for the json files in ``camera_dir``."""
    cams: dict[tuple[str, int], dict[int, str]] = {}
    if os.path.isdir(camera_dir):
        for name in os.listdir(camera_dir):
            m = re.match(r"^(.+)_(\d+)_(\d+)_camera\.json$", name)
            if m:
                cams.setdefault((m[1], int(m[2])), {})[int(m[3])] = os.path.join(camera_dir, name)
    return cams


def cityscapes_sequence_pairs(
    root, *, split: str = "train", cities: Sequence[str] | None = None, stride: int = 1
) -> list[kitti.FramePair]:
    """Pairs of frames ``stride`` apart in each ``leftImg8bit_sequence`` snippet, sorted by city, snippet, frame."""
    root = kitti.check_root(root, _SEQUENCE_LAYOUT)
    stride = kitti.check_stride(stride)
    pairs = []
    for city, folder in _city_dirs(os.path.join(root, "leftImg8bit_sequence"), split, cities, _SEQUENCE_LAYOUT):
        camera_dir = os.path.join(root, "camera", split, city)
        cams = _snippet_cameras(camera_dir)
        snippets: dict[tuple[str, int], dict[int, str]] = {}
        for c, seq, frame, path in _frames(folder):
            snippets.setdefault((c, seq), {})[frame] = path
        for (c, seq), frames in sorted(snippets.items()):
            if (c, seq) not in cams:
                raise FileNotFoundError(
                    f"no camera json for snippet {c}_{seq:06d} in {camera_dir!r}; {_SEQUENCE_LAYOUT}."
                )
            by_frame = cams[(c, seq)]
            k = None
            for frame in sorted(frames):
                if frame + stride not in frames:
                    continue
                if frame in by_frame:
                    k_frame = read_camera_json(by_frame[frame])
                else:
                    k = read_camera_json(by_frame[min(by_frame)]) if k is None else k
                    k_frame = k
                key = f"cityscapes_sequence/{split}/{c}_{seq:06d}_{frame:06d}/{stride}"
                pairs.append(kitti.FramePair(frames[frame], frames[frame + stride], k_frame, kitti.stable_id(key)))
    if not pairs:
        raise FileNotFoundError(
            f"no pairs of frames {stride} apart under {root!r} (split {split!r}); {_SEQUENCE_LAYOUT}."
        )
    return pairs


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    """An image file, its label-id PNG and the example id."""

    path: str
    label_path: str
    id: int


def cityscapes_labelled_examples(
    root, *, split: str = "val", cities: Sequence[str] | None = None
) -> list[LabelledImage]:
    """The fine-labelled frames of ``split``, sorted by city and name."""
    root = kitti.check_root(root, _LABELLED_LAYOUT)
    out = []
    for city, folder in _city_dirs(os.path.join(root, "leftImg8bit"), split, cities, _LABELLED_LAYOUT):
        for c, seq, frame, path in _frames(folder):
            stem = f"{c}_{seq:06d}_{frame:06d}"
            label = os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png")
            if not os.path.isfile(label):
                raise FileNotFoundError(f"missing labels {label!r} for {path!r}; {_LABELLED_LAYOUT}.")
            out.append(LabelledImage(path, label, kitti.stable_id(f"cityscapes_fine/{split}/{stem}")))
    if not out:
        raise FileNotFoundError(f"no *_leftImg8bit.png images under {root!r} (split {split!r}); {_LABELLED_LAYOUT}.")
    return out


@gin.configurable("cityscapes_sequence")
def cityscapes_sequence_dataset(
    root=gin.REQUIRED,
    *,
    split: str = "train",
    cities: Sequence[str] | None = None,
    stride: int = 1,
    crop_bottom: float = HOOD_FRACTION,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
):
    """Unbatched dataset of {id, image, image_next, intrinsics} (mediator data), see ``cityscapes_sequence_pairs``."""
    kitti.check_size(height, width, resize_method)
    pairs = cityscapes_sequence_pairs(root, split=split, cities=cities, stride=stride)
    return kitti.frame_pair_dataset(pairs, height=height, width=width, crop_bottom=crop_bottom,
                                    resize_method=resize_method)


@gin.configurable("cityscapes_labelled")
def cityscapes_labelled_dataset(
    root=gin.REQUIRED,
    *,
    split: str = "val",
    cities: Sequence[str] | None = None,
    crop_bottom: float = 0.0,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched dataset of {id, image [H, W, 3] uint8, segmentation [H, W, 1] int32} in file order.

    Labels are mapped with ``LABEL_TO_CLASS``; crop_bottom removes that fraction of rows of both
    (e.g. ``HOOD_FRACTION`` to match the sequence reader); with ``height`` and ``width`` the image is
    resized with ``resize_method`` and the labels with nearest neighbour.
    """
    import tensorflow as tf

    kitti.check_size(height, width, resize_method)
    if not 0.0 <= crop_bottom < 1.0:
        raise ValueError(f"crop_bottom must be a fraction in [0, 1), got {crop_bottom!r}.")
    examples = cityscapes_labelled_examples(root, split=split, cities=cities)
    table = {
        "path": np.array([e.path for e in examples]),
        "label_path": np.array([e.label_path for e in examples]),
        "id": np.array([e.id for e in examples], np.int64),
    }
    lookup = tf.constant(label_lookup_table())

    def load(rec):
        image = kitti.decode_image(rec["path"])
        label_ids = tf.io.decode_png(tf.io.read_file(rec["label_path"]), channels=1)
        labels = tf.gather(lookup, tf.cast(label_ids, tf.int32))
        image, labels = kitti.checked_labelled_image(image, labels, None, None, resize_method,
                                                     "image and labelIds differ in size:", rec["path"], rec["label_path"])
        image, labels = kitti.checked_labelled_image(kitti.crop_bottom_rows(image, crop_bottom),
                                                     kitti.crop_bottom_rows(labels, crop_bottom), height, width,
                                                     resize_method, "cropping changed sizes:", rec["path"])
        return {"id": rec["id"], "image": image, "segmentation": labels}

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)
