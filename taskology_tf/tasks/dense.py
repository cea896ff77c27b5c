"""Shared parts of the dense (per-pixel) image tasks: image-size checks, picture panels, label colours."""

from __future__ import annotations

import colorsys
from typing import Any, Mapping, Sequence

import numpy as np

from taskology_tf.data.example import IGNORE_LABEL
from taskology_tf.models.unet import check_image_size


def frame_keys(owner: str, frames: int, outputs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input_keys, output_keys) of a dense task run on 1 frame or on 2 (``image_next`` -> ``*_next``).

    ``owner`` names the task class in the error, e.g. ``"DepthTask"``.
    """
    if frames not in (1, 2):
        raise ValueError(f"{owner}.frames must be 1 (image) or 2 (image and image_next), got {frames!r}.")
    if frames == 1:
        return ("image",), tuple(outputs)
    return ("image", "image_next"), tuple(outputs) + tuple(f"{k}_next" for k in outputs)


def check_image_spec(task_name: str, element_spec: Mapping[str, Any]) -> None:
    """Raise ValueError when the dataset's static image size does not suit the U-Net (multiples of 32)."""
    spec = element_spec.get("image")
    if spec is None or len(spec.shape) != 3:
        return
    height, width = spec.shape[0], spec.shape[1]
    try:
        check_image_size(height, width)
    except ValueError as e:
        raise ValueError(f"Task {task_name!r}: {e}") from None


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """[B, H, W, 1] metres -> [B, H, W, 3] in [0, 1]: inverse depth, normalised per image (near = bright)."""
    inv = 1.0 / np.maximum(depth[..., 0], 1e-3)
    if valid is not None:
        inv = np.where(valid[..., 0], inv, 0.0)
    top = np.percentile(inv.reshape(inv.shape[0], -1), 95, axis=1)[:, None, None]
    t = np.clip(inv / np.maximum(top, 1e-6), 0.0, 1.0)
    # A small perceptual ramp (dark blue -> red -> yellow).
    r = np.clip(1.5 * t, 0, 1)
    g = np.clip(1.5 * t - 0.5, 0, 1)
    b = np.clip(0.6 - 1.2 * np.abs(t - 0.25), 0, 1)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """[B, H, W, 3] unit vectors -> [B, H, W, 3] in [0, 1] ((n + 1) / 2; zero vectors -> grey)."""
    return np.clip((normals + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)


def side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Concatenate [B, H, W, 3] panels along the width."""
    return np.concatenate(panels, axis=2)


def image_to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


# Cityscapes colours for the classes of the example contract; other classes get generated hues.
_NAMED_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60),
    "pedestrian": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100),
    "train": (0, 80, 100), "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}


def label_palette(class_names: Sequence[str]) -> np.ndarray:
    """[C, 3] float32 colours in [0, 1]: Cityscapes colours for known names, spread hues otherwise."""
    colours = []
    for i, name in enumerate(class_names):
        if name in _NAMED_COLOURS:
            colours.append(np.asarray(_NAMED_COLOURS[name], np.float32) / 255.0)
        else:
            hue = (i * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
            colours.append(np.asarray(colorsys.hsv_to_rgb(hue, 0.65, 0.9), np.float32))
    return np.stack(colours).astype(np.float32)


def colorize_labels(labels: np.ndarray, class_names: Sequence[str], ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """int labels [B, H, W, 1] or [B, H, W] -> [B, H, W, 3] in [0, 1]; ignored or unknown ids black."""
    labels = np.asarray(labels)
    if labels.ndim == 4:
        labels = labels[..., 0]
    palette = np.concatenate([label_palette(class_names), np.zeros((1, 3), np.float32)])
    index = np.where((labels >= 0) & (labels < len(class_names)) & (labels != ignore_label), labels, len(class_names))
    return palette[index]
