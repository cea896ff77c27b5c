"""Ego-motion errors (numpy): rotation and translation of predicted vs true camera motion.

Motions are 4x4 transforms mapping camera-t points to camera-(t+1) points
(``X' = R X + t``, the example contract's ``ego_motion``); the camera itself
moves by ``c = -R^T t`` (in camera-t axes), so a camera driving forward has
``c_z > 0``.
"""

from __future__ import annotations

import numpy as np

MOTION_METRICS = ("rotation_error_deg", "translation_error_m", "translation_error_rel", "translation_angle_deg",
                  "forward_fraction")
MIN_RELATIVE_TRANSLATION = 0.1  # metres: examples whose camera moved less have no relative translation error


def camera_displacement(transform: np.ndarray) -> np.ndarray:
    """[B, 4, 4] point transforms -> [B, 3] displacement of the camera centre, metres, camera-t axes."""
    rot, t = transform[:, :3, :3], transform[:, :3, 3]
    return -np.einsum("bji,bj->bi", rot, t)


def motion_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example errors of [B, 4, 4] predicted vs true motions -> name -> [B].

    rotation_error_deg: angle of ``R_pred^T R_gt``; translation_error_m: ``|c_pred - c_gt|``;
    translation_error_rel: ``|c_pred - c_gt| / |c_gt|`` (NaN where the camera moved under
    ``MIN_RELATIVE_TRANSLATION``: a standing camera has no scale to be relative to);
    translation_angle_deg: angle between ``c_pred`` and ``c_gt`` (scale-free, for monocular models;
    180 when one of them is zero); forward_fraction: 1 where the predicted camera moves forward (c_z > 0).
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (4, 4) or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be [B, 4, 4] transforms, got {pred.shape} and {gt.shape}.")
    relative = np.einsum("bji,bjk->bik", pred[:, :3, :3], gt[:, :3, :3])
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    c_pred, c_gt = camera_displacement(pred), camera_displacement(gt)
    norms = np.linalg.norm(c_pred, axis=-1) * np.linalg.norm(c_gt, axis=-1)
    cos_t = np.where(norms > 0, np.sum(c_pred * c_gt, axis=-1) / np.maximum(norms, 1e-12), -1.0)
    return {
        "rotation_error_deg": np.degrees(np.arccos(cos)),
        "translation_error_m": np.linalg.norm(c_pred - c_gt, axis=-1),
        "translation_error_rel": np.where(
            np.linalg.norm(c_gt, axis=-1) >= MIN_RELATIVE_TRANSLATION,
            np.linalg.norm(c_pred - c_gt, axis=-1) / np.maximum(np.linalg.norm(c_gt, axis=-1), 1e-12), np.nan),
        "translation_angle_deg": np.degrees(np.arccos(np.clip(cos_t, -1.0, 1.0))),
        "forward_fraction": (c_pred[:, 2] > 0).astype(np.float64),
    }


class MotionMetrics:
    """Means over examples of ``motion_errors``; ``result()`` -> {name: float} (empty before any update)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._errors: dict[str, list[np.ndarray]] = {k: [] for k in MOTION_METRICS}

    def update(self, pred, gt) -> None:
        for k, v in motion_errors(pred, gt).items():
            self._errors[k].append(v)

    @property
    def num_examples(self) -> int:
        return int(sum(len(v) for v in self._errors["rotation_error_deg"]))

    def result(self) -> dict[str, float]:
        if not self.num_examples:
            return {}
        out = {}
        for k, v in self._errors.items():
            values = np.concatenate(v)
            finite = values[np.isfinite(values)]
            out[k] = float(np.mean(finite)) if len(finite) else float("nan")
        return out
