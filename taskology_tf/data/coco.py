"""COCO 2017 panoptic segmentation mapped to the project's classes (dedicated data of the segmentation task).

Layout (the official ``panoptic_annotations_trainval2017.zip`` and image zips under one ``<root>``)::

    <root>/<split>2017/<file_name>.jpg                          images
    <root>/annotations/panoptic_<split>2017.json                 images, annotations (segments_info), categories
    <root>/panoptic_<split>2017/<file_name>.png                  segment ids as RGB: id = R + 256 G + 256**2 B
        (or <root>/annotations/panoptic_<split>2017/, where the annotation zip unpacks them)

Each pixel takes the class of its segment's category, mapped by name with ``CATEGORY_TO_CLASS``
(names of the 133 panoptic categories; the unmerged COCO-stuff names are listed as well):

=================  ==================================================================================
project class      COCO categories
=================  ==================================================================================
road               road
sidewalk           pavement-merged (COCO's pavement is the sidewalk), pavement
building           building-other-merged, house, roof, building-other
vegetation         tree-merged, grass-merged, potted plant, tree, grass, bush, plant-other, leaves
pole               traffic light, stop sign, parking meter (COCO has no pole class; these are
                   the pole-mounted street furniture the synthetic world's poles stand for)
sky                sky-other-merged, sky-other, clouds
car                car, truck, bus, motorcycle, bicycle, train (every road vehicle: movable)
pedestrian         person (COCO has no rider class: riders are persons)
IGNORE_LABEL 255   every other category, void pixels (segment id 0) and segments absent from the json
=================  ==================================================================================

Crowd segments (``iscrowd`` 1) keep their category's class. Examples are {id () int64,
image [H, W, 3] uint8, segmentation [H, W, 1] int32}; ids are a stable hash of split and COCO
image id. COCO images differ in size: give ``height`` and ``width`` to batch (the image is
resized with "area" or antialiased "bilinear", the labels with nearest neighbour; the aspect
ratio is not kept).
"""

from __future__ import annotations

import dataclasses
import json
import os

import gin
import numpy as np

from taskology_tf.data import kitti
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL

CATEGORY_TO_CLASS = {
    "road": "road",
    "pavement-merged": "sidewalk", "pavement": "sidewalk",
    "building-other-merged": "building", "house": "building", "roof": "building", "building-other": "building",
    "tree-merged": "vegetation", "grass-merged": "vegetation", "potted plant": "vegetation", "tree": "vegetation",
    "grass": "vegetation", "bush": "vegetation", "plant-other": "vegetation", "leaves": "vegetation",
    "traffic light": "pole", "stop sign": "pole", "parking meter": "pole",
    "sky-other-merged": "sky", "sky-other": "sky", "clouds": "sky",
    "car": "car", "truck": "car", "bus": "car", "motorcycle": "car", "bicycle": "car", "train": "car",
    "person": "pedestrian",
}

_LAYOUT = (
    "expected COCO 2017 panoptic data: <root>/annotations/panoptic_<split>2017.json, the segment PNGs in "
    "<root>/panoptic_<split>2017/ (or <root>/annotations/panoptic_<split>2017/) and the images in <root>/<split>2017/"
)


@dataclasses.dataclass(frozen=True)
class PanopticImage:
    """One image, its panoptic PNG and the project class of each of its segments.

    segment_ids: sorted segment ids, starting with 0 (void); classes: project class id of each
    (``IGNORE_LABEL`` for void and unmapped categories).
    """

    path: str
    panoptic_path: str
    segment_ids: tuple[int, ...]
    classes: tuple[int, ...]
    id: int


def category_classes(categories: list[dict]) -> dict[int, int]:
    """COCO category id -> project class id (``IGNORE_LABEL`` if its name is not in ``CATEGORY_TO_CLASS``)."""
    out = {}
    for cat in categories:
        cls = CATEGORY_TO_CLASS.get(cat["name"])
        out[int(cat["id"])] = IGNORE_LABEL if cls is None else CLASS_NAMES.index(cls)
    return out


def _panoptic_dir(root: str, split: str) -> str:
    for candidate in (os.path.join(root, f"panoptic_{split}2017"),
                      os.path.join(root, "annotations", f"panoptic_{split}2017")):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"no panoptic PNG folder panoptic_{split}2017 in {root!r} or its annotations/; {_LAYOUT}.")


def coco_panoptic_examples(root, *, split: str = "train", skip_unlabelled: bool = False) -> list[PanopticImage]:
    """The annotated images of ``split`` ("train" or "val"), sorted by COCO image id.

    skip_unlabelled: drop images none of whose segments maps to a project class.
    """
    root = kitti.check_root(root, _LAYOUT)
    json_path = os.path.join(root, "annotations", f"panoptic_{split}2017.json")
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"missing annotation file {json_path!r}; {_LAYOUT}.")
    with open(json_path) as f:
        data = json.load(f)
    try:
        classes = category_classes(data["categories"])
        images = {int(im["id"]): im["file_name"] for im in data["images"]}
        annotations = sorted(data["annotations"], key=lambda a: int(a["image_id"]))
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{json_path}: expected COCO panoptic JSON with 'images', 'annotations' and 'categories' ({err!r})."
        ) from None
    png_dir = _panoptic_dir(root, split)
    image_dir = os.path.join(root, f"{split}2017")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"missing image folder {image_dir!r}; {_LAYOUT}.")
    out = []
    for ann in annotations:
        image_id = int(ann["image_id"])
        if image_id not in images:
            raise ValueError(
                f"{json_path}: annotation {ann['file_name']!r} names image id {image_id}, which 'images' lacks."
            )
        segments = {0: IGNORE_LABEL}
        for seg in ann["segments_info"]:
            if int(seg["category_id"]) not in classes:
                raise ValueError(f"{json_path}: segment {seg['id']} of image {image_id} has an unknown category "
                                 f"{seg['category_id']}.")
            segments[int(seg["id"])] = classes[int(seg["category_id"])]
        if skip_unlabelled and all(c == IGNORE_LABEL for c in segments.values()):
            continue
        path = os.path.join(image_dir, images[image_id])
        panoptic_path = os.path.join(png_dir, ann["file_name"])
        for p in (path, panoptic_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"missing file {p!r} (image id {image_id}); {_LAYOUT}.")
        ids = tuple(sorted(segments))
        out.append(PanopticImage(path, panoptic_path, ids, tuple(segments[i] for i in ids),
                                 kitti.stable_id(f"coco_panoptic/{split}/{image_id}")))
    if not out:
        raise ValueError(f"{json_path} yields no examples (skip_unlabelled={skip_unlabelled}); {_LAYOUT}.")
    return out


def segment_ids_from_rgb(panoptic):
    """[h, w, 3] uint8 panoptic PNG -> [h, w] int32 segment ids ``R + 256 G + 256**2 B``."""
    import tensorflow as tf

    rgb = tf.cast(panoptic, tf.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def segments_to_classes(segment_ids, sorted_ids, classes):
    """Per-pixel class: ``classes[j]`` where ``segment_ids == sorted_ids[j]``, else ``IGNORE_LABEL``.

    segment_ids: [h, w] int32; sorted_ids: [n >= 1] int32 ascending; classes: [n] int32 -> [h, w] int32.
    """
    import tensorflow as tf

    flat = tf.reshape(segment_ids, [-1])
    index = tf.minimum(tf.searchsorted(sorted_ids, flat, side="left"), tf.size(sorted_ids) - 1)
    found = tf.equal(tf.gather(sorted_ids, index), flat)
    labels = tf.where(found, tf.gather(classes, index), IGNORE_LABEL)
    return tf.reshape(labels, tf.shape(segment_ids))


@gin.configurable("coco_panoptic")
def coco_panoptic_dataset(
    root=gin.REQUIRED,
    *,
    split: str = "train",
    skip_unlabelled: bool = False,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched dataset of {id, image, segmentation} in COCO image-id order; see ``coco_panoptic_examples``."""
    import tensorflow as tf

    kitti.check_size(height, width, resize_method)
    examples = coco_panoptic_examples(root, split=split, skip_unlabelled=skip_unlabelled)
    lengths = np.array([len(e.segment_ids) for e in examples], np.int64)
    table = {
        "path": np.array([e.path for e in examples]),
        "panoptic_path": np.array([e.panoptic_path for e in examples]),
        "segment_ids": tf.RaggedTensor.from_row_lengths(
            np.concatenate([e.segment_ids for e in examples]).astype(np.int32), lengths),
        "classes": tf.RaggedTensor.from_row_lengths(
            np.concatenate([e.classes for e in examples]).astype(np.int32), lengths),
        "id": np.array([e.id for e in examples], np.int64),
    }

    def load(rec):
        image = kitti.decode_image(rec["path"])
        panoptic = tf.io.decode_png(tf.io.read_file(rec["panoptic_path"]), channels=3)
        labels = segments_to_classes(segment_ids_from_rgb(panoptic), rec["segment_ids"], rec["classes"])[..., None]
        image, labels = kitti.checked_labelled_image(image, labels, height, width, resize_method,
                                                     "image and panoptic PNG differ in size:", rec["path"],
                                                     rec["panoptic_path"])
        return {"id": rec["id"], "image": image, "segmentation": labels}

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)
