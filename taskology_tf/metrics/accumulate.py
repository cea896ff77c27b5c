"""Accumulators of evaluation metrics over many batches (numpy; eager tensors are accepted).

``DepthMetrics`` averages per-image errors over images (the KITTI/Eigen
convention), skipping images without a valid pixel. ``NormalsMetrics`` pools
the angular errors of all valid pixels of all images, so its median is the
median over every pixel, not a mean of per-image medians. It keeps the errors
(float32, 4 bytes per valid pixel) until ``reset``.
"""

from __future__ import annotations

import numpy as np

from taskology_tf.metrics.depth import DEPTH_METRICS, depth_errors
from taskology_tf.metrics.normals import angular_error_deg, normals_summary


class DepthMetrics:
    """Mean over images of ``depth_errors``; ``result()`` -> {abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3}."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None, median_scaling: bool = False):
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.median_scaling = median_scaling
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._per_image: dict[str, list[np.ndarray]] = {key: [] for key in DEPTH_METRICS}

    def update(self, pred, gt, mask=None, region=None) -> None:
        """Add a batch: pred, gt [B, H, W, 1] metres, optional boolean mask and region [B, H, W, 1]
        (``region``: score only its pixels, median-scale with all; see ``depth_errors``)."""
        errors = depth_errors(
            np.asarray(pred), np.asarray(gt), None if mask is None else np.asarray(mask),
            self.min_depth, self.max_depth, self.median_scaling, None if region is None else np.asarray(region),
        )
        for key in DEPTH_METRICS:
            self._per_image[key].append(errors[key])

    @property
    def num_images(self) -> int:
        """Number of images with at least one valid pixel seen so far."""
        if not self._per_image["abs_rel"]:
            return 0
        return int(np.sum(~np.isnan(np.concatenate(self._per_image["abs_rel"]))))

    def result(self) -> dict[str, float]:
        """Mean of each metric over the valid images (NaN when there are none)."""
        out = {}
        for key in DEPTH_METRICS:
            values = np.concatenate(self._per_image[key]) if self._per_image[key] else np.zeros(0)
            values = values[~np.isnan(values)]
            out[key] = float(np.mean(values)) if values.size else float("nan")
        return out


class NormalsMetrics:
    """Angular-error summary pooled over all valid pixels; ``result()`` -> ``normals_summary`` keys."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self._errors: list[np.ndarray] = []

    def update(self, pred, gt, mask=None) -> None:
        """Add a batch: pred, gt [B, H, W, 3] normals, optional boolean mask [B, H, W, 1]."""
        errors = angular_error_deg(np.asarray(pred), np.asarray(gt), None if mask is None else np.asarray(mask))
        self._errors.append(errors.astype(np.float32))

    @property
    def num_pixels(self) -> int:
        """Number of valid pixels seen so far."""
        return int(sum(e.size for e in self._errors))

    def result(self) -> dict[str, float]:
        """``normals_summary`` of all pooled errors (NaN values when there are none)."""
        errors = np.concatenate(self._errors) if self._errors else np.zeros(0)
        return normals_summary(errors)
