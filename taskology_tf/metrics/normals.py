"""Surface-normal evaluation metrics (angular errors in degrees), in numpy.

A pixel is valid where the ground-truth normal has length > 0.5 (the example
contract stores the zero vector for "no label") and the optional mask is True.
Predictions are normalised to unit length first (a zero prediction counts as
90 degrees off). The summary follows Eigen & Fergus (2015): mean, median and
RMS angular error, and the percentage of pixels below 11.25, 22.5 and 30
degrees.
"""

from __future__ import annotations

import numpy as np

ANGLE_THRESHOLDS_DEG = (11.25, 22.5, 30.0)
NORMALS_METRICS = ("mean", "median", "rmse") + tuple(f"within_{t:g}" for t in ANGLE_THRESHOLDS_DEG)


def angular_error_deg(pred, gt, mask=None) -> np.ndarray:
    """Angles between predicted and ground-truth normals at valid pixels.

    Args:
      pred: predicted normals [B, H, W, 3] (any length; normalised here).
      gt: ground-truth unit normals [B, H, W, 3]; vectors of length <= 0.5 are invalid.
      mask: optional boolean [B, H, W, 1] or [B, H, W]; False pixels are ignored.

    Returns:
      float64 [N] angular errors in degrees (0..180) of the N valid pixels, in row-major order.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim < 1 or pred.shape[-1] != 3:
        raise ValueError(
            f"`pred` and `gt` must both have shape [B, H, W, 3], got {pred.shape} and {gt.shape}."
        )
    gt_norm = np.linalg.norm(gt, axis=-1)
    valid = gt_norm > 0.5
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.ndim == valid.ndim + 1 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        try:
            valid &= np.broadcast_to(mask, valid.shape)
        except ValueError:
            raise ValueError(f"`mask` of shape {mask.shape} does not match normals of shape {gt.shape}.") from None
    p = pred[valid]
    g = gt[valid] / gt_norm[valid][:, None]
    p_norm = np.linalg.norm(p, axis=-1)
    p = p / np.maximum(p_norm, 1e-12)[:, None]
    cos = np.clip(np.sum(p * g, axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def normals_summary(errors_deg) -> dict[str, float]:
    """Summary of angular errors (degrees): mean, median, rmse, and within_{11.25,22.5,30} in percent.

    All values are NaN when ``errors_deg`` is empty.
    """
    e = np.asarray(errors_deg, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return {key: float("nan") for key in NORMALS_METRICS}
    out = {
        "mean": float(np.mean(e)),
        "median": float(np.median(e)),
        "rmse": float(np.sqrt(np.mean(e**2))),
    }
    for t in ANGLE_THRESHOLDS_DEG:
        out[f"within_{t:g}"] = float(100.0 * np.mean(e < t))
    return out
