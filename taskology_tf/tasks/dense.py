"""Shared parts of the dense (per-pixel) image tasks: image-size checks and picture panels."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

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
