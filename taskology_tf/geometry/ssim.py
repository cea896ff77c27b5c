"""Per-pixel structural similarity (SSIM) with 3x3 mean windows, as used in photometric losses.

Local means, variances and covariance are 3x3 box averages over a
reflect-padded image, so the output has the input's size (H, W >= 2).
Images are expected in [0, 1] (the default constants assume a dynamic range of 1).
"""

from __future__ import annotations

from keras import ops


def _box3(x):
    """3x3 mean of [B, H, W, C] with reflect padding -> [B, H, W, C].

    As a 3x1 then a 1x3 mean: the same numbers for fewer additions (benchmarks/README.md "Relation step").
    """
    padded = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    rows = ops.average_pool(padded, pool_size=(3, 1), strides=1, padding="valid")
    return ops.average_pool(rows, pool_size=(1, 3), strides=1, padding="valid")


def ssim_map(x, y, c1: float = 0.01**2, c2: float = 0.03**2):
    """SSIM of every pixel's 3x3 neighbourhood.

    Args:
      x, y: [B, H, W, C] images in [0, 1].
      c1, c2: stabilising constants ``(k1 L)^2``, ``(k2 L)^2``.
    Returns:
      [B, H, W, C] SSIM in [-1, 1]; 1 where x and y agree.
    """
    if len(x.shape) != 4 or tuple(x.shape) != tuple(y.shape):
        raise ValueError(
            f"x and y must both have shape [B, H, W, C] and match, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    y = ops.cast(y, x.dtype)
    mu_x = _box3(x)
    mu_y = _box3(y)
    sigma_x = _box3(x * x) - mu_x * mu_x
    sigma_y = _box3(y * y) - mu_y * mu_y
    sigma_xy = _box3(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * sigma_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return numerator / denominator


def ssim_distance(x, y, c1: float = 0.01**2, c2: float = 0.03**2):
    """Photometric dissimilarity ``clip((1 - SSIM) / 2, 0, 1)``: [B, H, W, C] -> [B, H, W, C], 0 = identical."""
    return ops.clip((1.0 - ssim_map(x, y, c1, c2)) / 2.0, 0.0, 1.0)
