"""NYUv2 with 13-class segmentation and depth (the MTAN / XTasC setting), from common preprocessed layouts.

Two layouts under ``<base>`` = ``<root>/<split>`` (or ``<root>`` when ``split`` is None):

* ``"npy"``, MTAN's preprocessed release (288x384; ``split`` "train" or "val")::

      <base>/image/<i>.npy    [H, W, 3] float in [0, 1] (uint8 files are taken as they are)
      <base>/label/<i>.npy    [H, W] class ids 0-12 as floats, -1 = void
      <base>/depth/<i>.npy    [H, W, 1] (or [H, W]) depth in metres, 0 = invalid
      (<base>/normal/<i>.npy is not read)

* ``"png"``, folders of image files sharing a stem, e.g. ``../shared/data/nyu_sample``::

      <base>/<rgb|image|images>/<stem>.<png|jpg|jpeg>
      <base>/label/<stem>.png  8-bit class ids, ``label_encoding``: "1_to_13" (0 = void, class c
                               stored as c + 1, the usual 13-class PNG release) or "0_to_12"
                               (255 = void)
      <base>/depth/<stem>.png  16-bit depth in millimetres (``depth_scale`` = 1000 units per metre), 0 = invalid

``layout="auto"`` picks "npy" when ``<base>/image`` holds ``.npy`` files, else "png". A label
folder that is absent leaves its key out (the shared sample has no labels); name the keys in
``labels`` to require them. Classes (``CLASS_NAMES``, 0-12, Couprie et al.'s 13 classes in MTAN's
order) are bed, books, ceiling, chair, floor, furniture, objects, picture, sofa, table, tv, wall,
window; void is ``IGNORE_LABEL``. Depth is camera z in metres (the example contract). With
``height`` and ``width`` (XTasC: 288x384) the image is resized with ``resize_method``, labels and
depth with nearest neighbour; depth values are not rescaled.

``npy_folder_dataset`` is the generic numbered-``.npy`` reader (``cityscapes7`` uses it for MTAN's
Cityscapes release).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import gin
import numpy as np

from taskology_tf.data import kitti
from taskology_tf.data.example import IGNORE_LABEL

CLASS_NAMES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table",
               "tv", "wall", "window")
NUM_CLASSES = len(CLASS_NAMES)
HEIGHT, WIDTH = 288, 384  # the XTasC / MTAN resolution
IMAGE_FOLDERS = ("rgb", "image", "images")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_ENCODINGS = ("1_to_13", "0_to_12")
LABEL_KEYS = ("segmentation", "depth")
LAYOUTS = ("auto", "npy", "png")

_NPY_LAYOUT = "expected <base>/image/<i>.npy with <base>/label/<i>.npy and <base>/depth/<i>.npy (MTAN's release)"
_PNG_LAYOUT = ("expected <base>/<rgb|image|images>/<stem>.<png|jpg> with <base>/label/<stem>.png (8-bit ids) and "
               "<base>/depth/<stem>.png (16-bit millimetres)")


# ----------------------------------------------------------------------------------------------- numpy conversions

def image_to_uint8(array, path: str = "image") -> np.ndarray:
    """[H, W, 3] uint8 from a uint8 array or a float array in [0, 1] (rounded)."""
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{path}: expected an image [H, W, 3], got shape {a.shape}.")
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{path}: expected a uint8 or float image, got dtype {a.dtype}.")
    if a.size and (np.nanmin(a) < -1e-3 or np.nanmax(a) > 1.0 + 1e-3):
        raise ValueError(f"{path}: a float image must lie in [0, 1], got values in [{np.nanmin(a)}, {np.nanmax(a)}].")
    return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)


def labels_from_array(array, num_classes: int, path: str = "labels") -> np.ndarray:
    """[H, W, 1] int32 class ids from an [H, W] (or [H, W, 1]) array: negatives and 255 -> ``IGNORE_LABEL``.

    Any other value outside [0, num_classes) is an error.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{path}: expected labels [H, W], got shape {a.shape}.")
    ids = np.round(a).astype(np.int64) if np.issubdtype(a.dtype, np.floating) else a.astype(np.int64)
    ids = np.where((ids < 0) | (ids == IGNORE_LABEL), IGNORE_LABEL, ids)
    bad = (ids != IGNORE_LABEL) & (ids >= num_classes)
    if bad.any():
        raise ValueError(f"{path}: labels must be in [0, {num_classes}) or void (negative/{IGNORE_LABEL}), "
                         f"found {sorted(np.unique(ids[bad]).tolist())[:10]}.")
    return ids.astype(np.int32)[..., None]


def depth_from_array(array, path: str = "depth") -> np.ndarray:
    """[H, W, 1] float32 depth from an [H, W] or [H, W, 1] array; non-finite and negative values -> 0 (invalid)."""
    a = np.asarray(array, np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] != 1:
        raise ValueError(f"{path}: expected depth [H, W, 1] or [H, W], got shape {a.shape}.")
    return np.where(np.isfinite(a) & (a > 0), a, 0.0).astype(np.float32)


def label_png_table(label_encoding: str) -> np.ndarray:
    """[256] int32: 8-bit label PNG value -> class id, ``IGNORE_LABEL`` for void, -1 for values that are errors."""
    if label_encoding not in LABEL_ENCODINGS:
        raise ValueError(f"label_encoding must be one of {LABEL_ENCODINGS}, got {label_encoding!r}.")
    table = np.full(256, -1, np.int32)
    if label_encoding == "1_to_13":
        table[0] = IGNORE_LABEL
        table[1:NUM_CLASSES + 1] = np.arange(NUM_CLASSES)
    else:
        table[:NUM_CLASSES] = np.arange(NUM_CLASSES)
        table[IGNORE_LABEL] = IGNORE_LABEL
    return table


def png_bit_depth(path: str) -> int:
    """Bit depth per channel of a PNG file (from its IHDR chunk)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file.")
    return head[24]


# ------------------------------------------------------------------------------------------------------- listing

def _base(root, split: str | None, layout_doc: str) -> str:
    root = kitti.check_root(root, layout_doc)
    if split is None:
        return root
    base = os.path.join(root, split)
    if not os.path.isdir(base):
        raise FileNotFoundError(f"missing folder {base!r} (split {split!r}); {layout_doc}. Pass split=None when the "
                                "folders lie directly under root.")
    return base


def _numbered_npy(folder: str) -> dict[int, str]:
    out = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = re.fullmatch(r"(\d+)\.npy", name)
            if m:
                out[int(m[1])] = os.path.join(folder, name)
    return out


def detect_layout(base: str) -> str:
    """"npy" if ``base/image`` holds ``<i>.npy`` files, "png" if an image folder holds image files."""
    if _numbered_npy(os.path.join(base, "image")):
        return "npy"
    for folder in IMAGE_FOLDERS:
        path = os.path.join(base, folder)
        if os.path.isdir(path) and any(n.lower().endswith(IMAGE_SUFFIXES) for n in os.listdir(path)):
            return "png"
    raise FileNotFoundError(f"no NYUv2 data under {base!r}: {_NPY_LAYOUT}, or {_PNG_LAYOUT}.")


def _wanted(labels: Sequence[str] | None, present: dict[str, bool], where: str) -> tuple[str, ...]:
    if labels is None:
        return tuple(k for k in LABEL_KEYS if present[k])
    if isinstance(labels, str):
        raise ValueError(f"labels must be a list of keys from {LABEL_KEYS}, not a string ({labels!r}).")
    unknown = sorted(set(labels) - set(LABEL_KEYS))
    if unknown:
        raise ValueError(f"labels {unknown} are not known; choose from {LABEL_KEYS}.")
    missing = [k for k in labels if not present[k]]
    if missing:
        raise FileNotFoundError(f"labels {missing} were asked for but {where} has no folder for them.")
    return tuple(k for k in LABEL_KEYS if k in labels)


def _resize(out: dict, height, width, method: str) -> dict:
    import tensorflow as tf

    if height is None:
        return out
    out["image"] = kitti.resize_image(out["image"], height, width, method)
    for key in ("segmentation", "depth"):
        if key in out:
            out[key] = tf.image.resize(out[key], [height, width], method="nearest")
            out[key].set_shape([height, width, 1])
    return out


def _check_same_size(out: dict, *names):
    """Fail unless every image-like entry of ``out`` has the image's height and width."""
    import tensorflow as tf

    size = tf.shape(out["image"])[:2]
    checks = [tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(out[k])[:2], size)),
                                  [f"image and {k} differ in size:", *names]) for k in out if k in LABEL_KEYS]
    with tf.control_dependencies(checks):
        out["image"] = tf.identity(out["image"])
    return out


# ---------------------------------------------------------------------------------------------------- .npy folders

def npy_folder_dataset(
    root, *, split: str | None = "train", label_folder: str = "label", depth_folder: str = "depth",
    num_classes: int = NUM_CLASSES, labels: Sequence[str] | None = None, id_prefix: str = "nyuv2_npy",
    height: int | None = None, width: int | None = None, resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched {id, image, segmentation?, depth?} from numbered ``.npy`` files (layout "npy"), in index order.

    Images/labels/depth are converted by ``image_to_uint8``, ``labels_from_array`` and ``depth_from_array``;
    ids are ``stable_id("<id_prefix>/<split>/<i>")``.
    """
    import tensorflow as tf

    kitti.check_size(height, width, resize_method)
    base = _base(root, split, _NPY_LAYOUT)
    images = _numbered_npy(os.path.join(base, "image"))
    if not images:
        raise FileNotFoundError(f"no <i>.npy files in {os.path.join(base, 'image')!r}; {_NPY_LAYOUT}.")
    folders = {"segmentation": os.path.join(base, label_folder), "depth": os.path.join(base, depth_folder)}
    keys = _wanted(labels, {k: os.path.isdir(v) for k, v in folders.items()}, base)
    indices = sorted(images)
    table = {"image": np.array([images[i] for i in indices]),
             "id": np.array([kitti.stable_id(f"{id_prefix}/{split or ''}/{i}") for i in indices], np.int64)}
    for key in keys:
        files = _numbered_npy(folders[key])
        missing = [i for i in indices if i not in files]
        if missing:
            raise FileNotFoundError(f"{folders[key]!r} lacks {len(missing)} files, e.g. {missing[0]}.npy; {_NPY_LAYOUT}.")
        table[key] = np.array([files[i] for i in indices])

    def load_image(path):
        p = path.decode()
        return image_to_uint8(np.load(p), p)

    def load_labels(path):
        p = path.decode()
        return labels_from_array(np.load(p), num_classes, p)

    def load_depth(path):
        p = path.decode()
        return depth_from_array(np.load(p), p)

    loaders = {"image": (load_image, tf.uint8, 3), "segmentation": (load_labels, tf.int32, 1),
               "depth": (load_depth, tf.float32, 1)}

    def load(rec):
        out = {"id": rec["id"]}
        for key in ("image", *keys):
            fn, dtype, channels = loaders[key]
            value = tf.numpy_function(fn, [rec[key]], dtype, stateful=False)
            value.set_shape([None, None, channels])
            out[key] = value
        out = _check_same_size(out, rec["image"])
        return _resize(out, height, width, resize_method)

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)


# ----------------------------------------------------------------------------------------------------- PNG folders

def png_folder_files(base: str, labels: Sequence[str] | None = None) -> dict[str, list[str]]:
    """{"stem", "image", and the wanted label keys} -> file lists sorted by stem (layout "png")."""
    image_dir = next((os.path.join(base, f) for f in IMAGE_FOLDERS if os.path.isdir(os.path.join(base, f))), None)
    if image_dir is None:
        raise FileNotFoundError(f"no image folder ({', '.join(IMAGE_FOLDERS)}) in {base!r}; {_PNG_LAYOUT}.")
    images = {os.path.splitext(n)[0]: os.path.join(image_dir, n) for n in os.listdir(image_dir)
              if n.lower().endswith(IMAGE_SUFFIXES)}
    if not images:
        raise FileNotFoundError(f"no .png/.jpg images in {image_dir!r}; {_PNG_LAYOUT}.")
    folders = {"segmentation": os.path.join(base, "label"), "depth": os.path.join(base, "depth")}
    keys = _wanted(labels, {k: os.path.isdir(v) for k, v in folders.items()}, base)
    stems = sorted(images)
    out = {"stem": stems, "image": [images[s] for s in stems]}
    for key in keys:
        paths = [os.path.join(folders[key], f"{s}.png") for s in stems]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"missing {key} file {missing[0]!r} ({len(missing)} missing); {_PNG_LAYOUT}.")
        out[key] = paths
    if "depth" in out and png_bit_depth(out["depth"][0]) != 16:
        raise ValueError(f"{out['depth'][0]}: depth PNGs must be 16-bit (millimetres), got "
                         f"{png_bit_depth(out['depth'][0])}-bit.")
    return out


def png_folder_dataset(
    root, *, split: str | None = None, labels: Sequence[str] | None = None, label_encoding: str = "1_to_13",
    depth_scale: float = 1000.0, height: int | None = None, width: int | None = None, resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched {id, image, segmentation?, depth?} from image/label/depth files (layout "png"), sorted by stem.

    Ids are ``stable_id("nyuv2/<split>/<stem>")``.
    """
    import tensorflow as tf

    kitti.check_size(height, width, resize_method)
    if not depth_scale > 0:
        raise ValueError(f"depth_scale (stored units per metre) must be positive, got {depth_scale!r}.")
    lookup = tf.constant(label_png_table(label_encoding))
    files = png_folder_files(_base(root, split, _PNG_LAYOUT), labels)
    table = {k: np.array(v) for k, v in files.items() if k != "stem"}
    table["id"] = np.array([kitti.stable_id(f"nyuv2/{split or ''}/{s}") for s in files["stem"]], np.int64)
    keys = [k for k in LABEL_KEYS if k in table]

    def load(rec):
        out = {"id": rec["id"], "image": kitti.decode_image(rec["image"])}
        if "segmentation" in keys:
            raw = tf.io.decode_png(tf.io.read_file(rec["segmentation"]), channels=1)
            seg = tf.gather(lookup, tf.cast(raw, tf.int32))
            check = tf.debugging.Assert(tf.reduce_all(seg >= 0), [
                f"label values outside the {label_encoding} label_encoding in", rec["segmentation"]])
            with tf.control_dependencies([check]):
                out["segmentation"] = tf.identity(seg)
        if "depth" in keys:
            raw = tf.io.decode_png(tf.io.read_file(rec["depth"]), channels=1, dtype=tf.uint16)
            out["depth"] = tf.cast(raw, tf.float32) / float(depth_scale)
        out = _check_same_size(out, rec["image"])
        return _resize(out, height, width, resize_method)

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=calls, deterministic=True)


@gin.configurable("nyuv2")
def nyuv2_dataset(
    root=gin.REQUIRED,
    *,
    split: str | None = None,
    layout: str = "auto",
    labels: Sequence[str] | None = None,
    label_encoding: str = "1_to_13",
    depth_scale: float = 1000.0,
    height: int | None = None,
    width: int | None = None,
    resize_method: str = "area",
    num_parallel_calls: int | None = None,
):
    """Unbatched NYUv2 {id, image [H, W, 3] uint8, segmentation [H, W, 1] int32 (13 classes), depth [H, W, 1]
    float32 metres} from the "npy" or "png" layout (module doc). ``label_encoding`` and ``depth_scale`` apply
    to the "png" layout only.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if layout == "auto":
        layout = detect_layout(_base(root, split, f"{_NPY_LAYOUT}, or {_PNG_LAYOUT}"))
    if layout == "npy":
        return npy_folder_dataset(root, split=split, labels=labels, height=height, width=width,
                                  resize_method=resize_method, num_parallel_calls=num_parallel_calls)
    return png_folder_dataset(root, split=split, labels=labels, label_encoding=label_encoding,
                              depth_scale=depth_scale, height=height, width=width, resize_method=resize_method,
                              num_parallel_calls=num_parallel_calls)
