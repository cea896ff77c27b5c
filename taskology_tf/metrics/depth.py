"""Depth evaluation metrics (Eigen et al. 2014), per image, in numpy.

Errors are computed over the valid pixels of each image: ground truth above
``min_depth`` (and at most ``max_depth`` when given), finite, and inside the
optional mask. Predictions are clipped to [min_depth, max_depth] as in Eigen et
al.'s protocol. With ``median_scaling`` (for monocular, scale-ambiguous models)
each prediction is first multiplied by median(gt) / median(pred) over its valid
pixels.

Deltas (a1, a2, a3) are fractions in [0, 1] (the convention of the KITTI depth
literature); abs_rel and sq_rel are relative errors, rmse in metres.
"""

from __future__ import annotations

import numpy as np

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def _as_bhw(name: str, x) -> np.ndarray:
    """Depth-like array [B, H, W, 1] or [B, H, W] -> float64 [B, H, W]."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"`{name}` must have shape [B, H, W, 1] or [B, H, W], got {x.shape}.")
    return x


def valid_depth_mask(gt, mask=None, min_depth: float = 1e-3, max_depth: float | None = None) -> np.ndarray:
    """Boolean [B, H, W]: gt finite, > min_depth, <= max_depth (if given) and inside ``mask``."""
    gt = _as_bhw("gt", gt).astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > min_depth)
        if max_depth is not None:
            valid &= gt <= max_depth
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 4 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        try:
            valid &= np.broadcast_to(mask.astype(bool), valid.shape)
        except ValueError:
            raise ValueError(f"`mask` of shape {mask.shape} does not match gt of shape {gt.shape}.") from None
    return valid


def depth_errors(
    pred,
    gt,
    mask=None,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    median_scaling: bool = False,
    region=None,
) -> dict[str, np.ndarray]:
    """Per-image depth errors.

    Args:
      pred: predicted depth [B, H, W, 1] (or [B, H, W]) in metres.
      gt: ground-truth depth, same shape, metres; <= min_depth means invalid.
      mask: optional boolean [B, H, W, 1] (or broadcastable); False pixels are ignored.
      min_depth, max_depth: valid gt range in metres; predictions are clipped to it.
      median_scaling: multiply each prediction by median(gt) / median(pred) over its valid pixels.
      region: optional boolean [B, H, W, 1] (or broadcastable): errors only over the valid pixels inside
        it (e.g. moving objects), while the median scale still comes from every valid pixel of the image.

    Returns:
      Dict of float64 arrays [B] with keys ``DEPTH_METRICS``; NaN for images without a valid pixel (in
      ``region``).
    """
    pred = _as_bhw("pred", pred).astype(np.float64)
    gt = _as_bhw("gt", gt).astype(np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {pred.shape} and {gt.shape}.")
    if max_depth is not None and max_depth <= min_depth:
        raise ValueError(f"max_depth ({max_depth}) must be greater than min_depth ({min_depth}).")
    valid = valid_depth_mask(gt, mask, min_depth, max_depth)
    scored = valid if region is None else valid_depth_mask(gt, region, min_depth, max_depth) & valid
    upper = np.inf if max_depth is None else max_depth

    out = {key: np.full(pred.shape[0], np.nan) for key in DEPTH_METRICS}
    for i in range(pred.shape[0]):
        g = gt[i][scored[i]]
        p = pred[i][scored[i]]
        if g.size == 0:
            continue
        if median_scaling:
            scale_g, scale_p = gt[i][valid[i]], pred[i][valid[i]]
            p = p * (np.median(scale_g) / max(np.median(scale_p), np.finfo(np.float64).tiny))
        p = np.clip(np.nan_to_num(p, nan=min_depth), min_depth, upper)
        ratio = np.maximum(g / p, p / g)
        diff = g - p
        out["abs_rel"][i] = np.mean(np.abs(diff) / g)
        out["sq_rel"][i] = np.mean(diff**2 / g)
        out["rmse"][i] = np.sqrt(np.mean(diff**2))
        out["rmse_log"][i] = np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))
        out["a1"][i] = np.mean(ratio < 1.25)
        out["a2"][i] = np.mean(ratio < 1.25**2)
        out["a3"][i] = np.mean(ratio < 1.25**3)
    return out
