"""Cityscapes in the 7-class segmentation + depth setting of MTAN, XTasC and instance-level task parameters.

The multi-task literature (MTAN, Liu et al. 2019; XTasC, Sec. V-A; instance-level task
parameters, Sec. 5) trains segmentation and depth on Cityscapes' fine-labelled frames
resized to 128x256, with the 7 *categories* of Cityscapes (the ``category`` field of
cityscapesScripts' ``labels.py``) as classes and a disparity-derived depth target.

Layout (as the official zips unpack under one ``<root>``)::

    <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png       (and/or _gtFine_labelTrainIds.png)
    <root>/disparity/<split>/<city>/<stem>_disparity.png           16-bit, needed with_depth
    <root>/camera/<split>/<city>/<stem>_camera.json                needed for depth_target="metres" only

Classes (``CATEGORY_NAMES``; class id = Cityscapes ``catId`` - 1, void -> ``IGNORE_LABEL``):

==  ============  =====================================================  ==========================
id  category      Cityscapes labels (label id)                            train ids
==  ============  =====================================================  ==========================
0   flat          road 7, sidewalk 8, parking 9, rail track 10            0, 1
1   construction  building 11, wall 12, fence 13, guard rail 14,          2, 3, 4
                  bridge 15, tunnel 16
2   object        pole 17, polegroup 18, traffic light 19, traffic sign   5, 6, 7
                  20
3   nature        vegetation 21, terrain 22                               8, 9
4   sky           sky 23                                                  10
5   human         person 24, rider 25                                     11, 12
6   vehicle       car 26 ... bicycle 33 (incl. caravan 29, trailer 30)    13 ... 18
==  ============  =====================================================  ==========================

Label ids 0-6 (void: unlabeled, ego vehicle, rectification border, out of roi, static,
dynamic, ground) and every other value map to ``IGNORE_LABEL`` (the license plate, id -1, is
not drawn into the labelIds PNGs; the vehicle under it shows). ``label_source="labelTrainIds"`` reads the 19-train-id PNGs instead; the
labels that have no train id (parking, rail track, guard rail, bridge, tunnel, polegroup,
caravan, trailer) are then 255 there and stay ignored.

Depth target. Cityscapes ships stereo disparity, not depth: a pixel value ``p`` of
``*_disparity.png`` is the disparity ``d = (p - 1) / 256`` in pixels of the full 2048-wide
frame for ``p > 0``; ``p = 0`` is invalid. The ``depth`` key of this reader holds, by
``depth_target``:

* ``"disparity_scaled"`` (default, the MTAN / XTasC target): ``d / 256`` = ``(p - 1) / 65536``,
  i.e. disparity in units of 256 full-resolution pixels (about 0 - 0.5). This is the
  "inverse depth" target of XTasC (Sec. V-A: disparity is proportional to inverse depth,
  finite for the sky); its Abs Err / Rel Err in Table I-II are in this unit. Larger = nearer.
* ``"disparity_px"``: ``d`` in full-resolution pixels.
* ``"metres"``: camera z ``baseline * fx / d`` in metres from the frame's ``camera.json``
  (``extrinsic.baseline`` in metres, ``intrinsic.fx`` in pixels), i.e. the example
  contract's meaning of ``depth``.

0 marks invalid pixels in every target (``p`` = 0 or 1, i.e. no or zero disparity). The
disparity is *not* rescaled when the frame is resized: it stays in full-resolution pixels
(as in MTAN and XTasC). So for the two disparity targets the ``depth`` key does NOT hold
metres as ``example.KEYS`` says; a depth task or metric must be told the unit.

With ``height`` and ``width`` (default 128x256) the image is resized with
``resize_method`` and the labels and depth with nearest neighbour (no mixing of classes or
of valid and invalid disparity). Example ids are those of
``cityscapes.cityscapes_labelled_dataset`` for the same frame (``"cityscapes_fine/<split>/<stem>"``).

``cityscapes7_preprocessed`` reads MTAN's preprocessed ``.npy`` release instead
(``<root>/<split>/{image,label_7,depth}/<i>.npy``; see ``taskology_tf.data.nyuv2``); its
``depth`` holds the values of the files as released (MTAN's inverse-depth target).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import gin
import numpy as np

from taskology_tf.data import cityscapes, kitti
from taskology_tf.data.example import IGNORE_LABEL

CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
NUM_CLASSES = len(CATEGORY_NAMES)
HEIGHT, WIDTH = 128, 256  # the XTasC / MTAN resolution

# Cityscapes label id -> category (cityscapesScripts labels.py ``category``); unlisted ids are void.
LABEL_ID_TO_CATEGORY = {
    7: "flat", 8: "flat", 9: "flat", 10: "flat",
    11: "construction", 12: "construction", 13: "construction", 14: "construction", 15: "construction",
    16: "construction",
    17: "object", 18: "object", 19: "object", 20: "object",
    21: "nature", 22: "nature",
    23: "sky",
    24: "human", 25: "human",
    26: "vehicle", 27: "vehicle", 28: "vehicle", 29: "vehicle", 30: "vehicle", 31: "vehicle", 32: "vehicle",
    33: "vehicle",
}
# Cityscapes train id (0-18) -> category.
TRAIN_ID_TO_CATEGORY = {
    0: "flat", 1: "flat",
    2: "construction", 3: "construction", 4: "construction",
    5: "object", 6: "object", 7: "object",
    8: "nature", 9: "nature",
    10: "sky",
    11: "human", 12: "human",
    13: "vehicle", 14: "vehicle", 15: "vehicle", 16: "vehicle", 17: "vehicle", 18: "vehicle",
}
LABEL_SOURCES = {"labelIds": LABEL_ID_TO_CATEGORY, "labelTrainIds": TRAIN_ID_TO_CATEGORY}
DEPTH_TARGETS = ("disparity_scaled", "disparity_px", "metres")
DISPARITY_SCALE = 256.0  # disparity_scaled = disparity_px / DISPARITY_SCALE

_LAYOUT = (
    "expected <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png, "
    "<root>/gtFine/<split>/<city>/<stem>_gtFine_<labelIds|labelTrainIds>.png and (with_depth) "
    "<root>/disparity/<split>/<city>/<stem>_disparity.png (unzip leftImg8bit_trainvaltest.zip, "
    "gtFine_trainvaltest.zip and disparity_trainvaltest.zip into <root>)"
)


def label_lookup_table(label_source: str = "labelIds") -> np.ndarray:
    """[256] int32: value of a ``label_source`` PNG -> 7-class id (``IGNORE_LABEL`` where void)."""
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {sorted(LABEL_SOURCES)}, got {label_source!r}.")
    table = np.full(256, IGNORE_LABEL, np.int32)
    for value, category in LABEL_SOURCES[label_source].items():
        table[value] = CATEGORY_NAMES.index(category)
    return table


def disparity_from_png(pixels) -> np.ndarray:
    """Disparity in full-resolution pixels (float32, same shape) from ``*_disparity.png`` values.

    ``d = (p - 1) / 256`` for ``p > 0``; 0 (invalid) where ``p == 0``.
    """
    p = np.asarray(pixels).astype(np.float64)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0).astype(np.float32)


def depth_target_from_disparity(disparity_px, depth_target: str = "disparity_scaled",
                                baseline_fx: float | None = None) -> np.ndarray:
    """The ``depth`` values (float32) for disparity in pixels; 0 stays 0 (invalid). See the module doc.

    ``baseline_fx``: baseline (metres) times fx (pixels), needed for ``"metres"``.
    """
    _check_depth_target(depth_target)
    d = np.asarray(disparity_px, np.float64)
    if depth_target == "disparity_scaled":
        out = d / DISPARITY_SCALE
    elif depth_target == "disparity_px":
        out = d
    else:
        if baseline_fx is None or not baseline_fx > 0:
            raise ValueError(f"depth_target='metres' needs baseline_fx > 0 (metres * pixels), got {baseline_fx!r}.")
        with np.errstate(divide="ignore"):
            out = np.where(d > 0, baseline_fx / np.where(d > 0, d, 1.0), 0.0)
    return np.where(d > 0, out, 0.0).astype(np.float32)


def _check_depth_target(depth_target: str) -> None:
    if depth_target not in DEPTH_TARGETS:
        raise ValueError(f"depth_target must be one of {DEPTH_TARGETS}, got {depth_target!r}.")


def read_baseline_fx(path: str) -> float:
    """``extrinsic.baseline`` (metres) * ``intrinsic.fx`` (pixels) from a Cityscapes ``*_camera.json``."""
    with open(path) as f:
        try:
            camera = json.load(f)
            value = float(camera["extrinsic"]["baseline"]) * float(camera["intrinsic"]["fx"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected JSON with \"extrinsic\": {{baseline}} and \"intrinsic\": {{fx}} "
                             f"({err!r}).") from None
    if not value > 0:
        raise ValueError(f"{path}: baseline * fx must be positive, got {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class Cityscapes7Frame:
    """Files of one fine-labelled frame ("" where not needed) and its example id."""

    path: str
    label_path: str
    disparity_path: str
    baseline_fx: float
    id: int


def cityscapes7_frames(
    root, *, split: str = "train", cities: Sequence[str] | None = None, label_source: str = "labelIds",
    with_depth: bool = True, depth_target: str = "disparity_scaled",
) -> list[Cityscapes7Frame]:
    """The fine-labelled frames of ``split`` with the files this reader needs, sorted by city and name."""
    label_lookup_table(label_source)  # validates label_source
    _check_depth_target(depth_target)
    root = kitti.check_root(root, _LAYOUT)
    frames = []
    for e in cityscapes.cityscapes_labelled_examples(root, split=split, cities=cities):
        city = os.path.basename(os.path.dirname(e.path))
        stem = os.path.basename(e.path)[: -len("_leftImg8bit.png")]
        label = os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_{label_source}.png")
        if not os.path.isfile(label):
            raise FileNotFoundError(f"missing labels {label!r} for {e.path!r}; {_LAYOUT}.")
        disparity, baseline_fx = "", 0.0
        if with_depth:
            disparity = os.path.join(root, "disparity", split, city, f"{stem}_disparity.png")
            if not os.path.isfile(disparity):
                raise FileNotFoundError(
                    f"missing disparity {disparity!r} for {e.path!r}; {_LAYOUT}. Pass with_depth=False to read "
                    "images and segmentation only."
                )
            if depth_target == "metres":
                camera = os.path.join(root, "camera", split, city, f"{stem}_camera.json")
                if not os.path.isfile(camera):
                    raise FileNotFoundError(
                        f"missing {camera!r} (depth_target='metres' needs each frame's camera.json; unzip "
                        "camera_trainvaltest.zip into <root>, or use a disparity target)."
                    )
                baseline_fx = read_baseline_fx(camera)
        frames.append(Cityscapes7Frame(e.path, label, disparity, baseline_fx, e.id))
    return frames


def _depth_tf(disparity_path, baseline_fx, depth_target: str):
    """[h, w, 1] float32 depth target (module doc) decoded from a 16-bit ``*_disparity.png``."""
    import tensorflow as tf

    p = tf.cast(tf.io.decode_png(tf.io.read_file(disparity_path), channels=1, dtype=tf.uint16), tf.float32)
    d = tf.where(p > 0.0, (p - 1.0) / 256.0, 0.0)
    if depth_target == "disparity_scaled":
        out = d / DISPARITY_SCALE
    elif depth_target == "disparity_px":
        out = d
    else:
        out = tf.math.divide_no_nan(tf.cast(baseline_fx, tf.float32), d)
    return tf.where(d > 0.0, out, 0.0)


@gin.configurable("cityscapes7")
def cityscapes7_dataset(
    root=gin.REQUIRED,
    *,
    split: str = "train",
    cities: Sequence[str] | None = None,
    height: int | None = HEIGHT,
    width: int | None = WIDTH,
    resize_method: str = "area",
    label_source: str = "labelIds",
    with_depth: bool = True,
    depth_target: str = "disparity_scaled",
    num_parallel_calls: int | None = None,
):
    """Unbatched dataset of {id, image [H, W, 3] uint8, segmentation [H, W, 1] int32 (7 classes),
    depth [H, W, 1] float32 (``depth_target``; 0 invalid)} in file order; no depth with ``with_depth=False``.

    height/width None keep the stored size (1024x2048 for the official release).
    """
    import tensorflow as tf

    kitti.check_size(height, width, resize_method)
    frames = cityscapes7_frames(root, split=split, cities=cities, label_source=label_source, with_depth=with_depth,
                                depth_target=depth_target)
    table = {
        "path": np.array([f.path for f in frames]),
        "label_path": np.array([f.label_path for f in frames]),
        "disparity_path": np.array([f.disparity_path for f in frames]),
        "baseline_fx": np.array([f.baseline_fx for f in frames], np.float32),
        "id": np.array([f.id for f in frames], np.int64),
    }
    lookup = tf.constant(label_lookup_table(label_source))

    def load(rec):
        image = kitti.decode_image(rec["path"])
        raw = tf.io.decode_png(tf.io.read_file(rec["label_path"]), channels=1)
        labels = tf.gather(lookup, tf.cast(raw, tf.int32))
        image_size = tf.shape(image)[:2]
        image, labels = kitti.checked_labelled_image(image, labels, height, width, resize_method,
                                                     "image and labels differ in size:", rec["path"],
                                                     rec["label_path"])
        out = {"id": rec["id"], "image": image, "segmentation": labels}
        if with_depth:
            depth = _depth_tf(rec["disparity_path"], rec["baseline_fx"], depth_target)
            check = tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(depth)[:2], image_size)),
                                        ["image and disparity differ in size:", rec["path"], rec["disparity_path"]])
            with tf.control_dependencies([check]):
                depth = tf.identity(depth)
            if height is not None:
                depth = tf.image.resize(depth, [height, width], method="nearest")
            depth.set_shape([height, width, 1])
            out["depth"] = depth
        return out

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)


@gin.configurable("cityscapes7_preprocessed")
def cityscapes7_preprocessed_dataset(root=gin.REQUIRED, *, split: str = "train", num_parallel_calls: int | None = None):
    """MTAN's preprocessed 128x256 release: ``<root>/<split>/{image,label_7,depth}/<i>.npy``.

    Yields {id, image, segmentation (7 classes; the files' -1 -> ``IGNORE_LABEL``), depth (as stored)}.
    """
    from taskology_tf.data import nyuv2

    return nyuv2.npy_folder_dataset(root, split=split, label_folder="label_7", num_classes=NUM_CLASSES,
                                    id_prefix="cityscapes7_npy", num_parallel_calls=num_parallel_calls)
