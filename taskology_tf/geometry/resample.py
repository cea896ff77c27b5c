"""Bilinear resampling of an image at arbitrary pixel coordinates, differentiable in both.

Pixel centres are at integer coordinates ``(u, v) = (column, row)``; the
sample at ``(u, v)`` blends the four pixel centres around it. Gradients flow
to the image (through a gather) and to the coordinates (through the bilinear
weights; at exactly integer coordinates the derivative is one-sided).
"""

from __future__ import annotations

from keras import ops

PADDING_MODES = ("zeros", "border")


def bilinear_sample(image, coords, padding: str = "zeros"):
    """Sample ``image`` at pixel coordinates ``coords``.

    Args:
      image: [B, H, W, C] source image.
      coords: [B, h, w, 2] sample positions (u, v) in the source image's pixels.
      padding: "zeros": pixels outside the image contribute 0 (a sample half a
        pixel outside gets half the edge value); "border": coordinates are
        clamped to the image, so outside samples repeat the edge (the gradient
        w.r.t. clamped coordinates is 0).
    Returns:
      values: [B, h, w, C];
      valid: [B, h, w, 1] float 1 where the sample lies in [0, W-1] x [0, H-1], else 0.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}.")
    if len(image.shape) != 4:
        raise ValueError(f"image must have shape [B, H, W, C], got {tuple(image.shape)}.")
    if len(coords.shape) != 4 or coords.shape[-1] != 2:
        raise ValueError(f"coords must have shape [B, h, w, 2] holding (u, v), got {tuple(coords.shape)}.")
    channels = image.shape[-1]
    if channels is None:
        raise ValueError("image must have a static channel count (last axis).")
    dtype = image.dtype
    coords = ops.cast(coords, dtype)
    shape = ops.shape(image)
    batch, height, width = shape[0], shape[1], shape[2]
    w_max = ops.cast(width - 1, dtype)
    h_max = ops.cast(height - 1, dtype)

    u, v = coords[..., 0], coords[..., 1]  # [B, h, w]
    inside = ops.logical_and(
        ops.logical_and(u >= 0.0, u <= w_max), ops.logical_and(v >= 0.0, v <= h_max)
    )
    valid = ops.cast(inside, dtype)[..., None]

    if padding == "border":
        u = ops.clip(u, 0.0, w_max)
        v = ops.clip(v, 0.0, h_max)
    # Clip before the integer cast so far-away (or huge) coordinates cannot overflow;
    # anything beyond one pixel outside has all four corners outside anyway.
    u0 = ops.clip(ops.floor(u), -2.0, w_max + 1.0)
    v0 = ops.clip(ops.floor(v), -2.0, h_max + 1.0)
    wu1 = u - u0  # weight of the right column; carries the gradient w.r.t. u
    wv1 = v - v0
    wu0 = 1.0 - wu1
    wv0 = 1.0 - wv1
    # (For coordinates clipped above the weights no longer sum to one, but then all
    # four corners are outside and masked, so "zeros" still yields 0.)

    u0i = ops.cast(u0, "int32")
    v0i = ops.cast(v0, "int32")
    width_i = ops.cast(width, "int32")
    height_i = ops.cast(height, "int32")
    flat = ops.reshape(image, (-1, channels))  # [B*H*W, C]
    offset = ops.arange(batch, dtype="int32") * (height_i * width_i)
    offset = offset[:, None, None]  # [B, 1, 1]

    def corner(du: int, dv: int, weight):
        ui = u0i + du
        vi = v0i + dv
        index = offset + ops.clip(vi, 0, height_i - 1) * width_i + ops.clip(ui, 0, width_i - 1)
        values = ops.take(flat, index, axis=0)  # [B, h, w, C]
        if padding == "zeros":
            ok = ops.logical_and(
                ops.logical_and(ui >= 0, ui <= width_i - 1), ops.logical_and(vi >= 0, vi <= height_i - 1)
            )
            weight = weight * ops.cast(ok, dtype)
        return values * weight[..., None]

    out = (
        corner(0, 0, wu0 * wv0)
        + corner(1, 0, wu1 * wv0)
        + corner(0, 1, wu0 * wv1)
        + corner(1, 1, wu1 * wv1)
    )
    return out, valid
