"""Colour jitter: photometric augmentation of a labelled dataset's images.

A network trained on one photographic style and applied to another (Table 1's segmentation: trained on the
"coco" stand-in, used as the movable mask on the "city" video, whose palettes, light and tone curve differ)
meets colours it never saw. Drawing, per example, a channel order, a hue rotation, a saturation and contrast
factor, a brightness offset and (sometimes) greyscale makes colour an unreliable cue, so the network leans on
shape and layout, which the styles share. Labels and geometry are untouched.

``color_jitter`` wraps an unbatched ``tf.data.Dataset`` (bind it in gin around a dedicated source)::

    segmentation/TaskTrainer.dedicated = @seg_train/color_jitter()
    seg_train/color_jitter.dataset = @seg_train/synthetic()

Every frame of an example (``image`` and ``image_next``) gets the same draw, so a two-frame example stays a
consistent pair. The draws are a function of ``seed`` and the example's position in the repeated stream, so a
resumed run that skips the batches it drew sees the same augmented examples again.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import gin

# The six orders of the three colour channels; ``channel_order`` indexes this table.
CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))


def _check_range(name: str, value, low_bound: float) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"color_jitter.{name} must be a pair (low, high), got {value!r}.") from None
    if not low_bound <= low <= high:
        raise ValueError(f"color_jitter.{name} must satisfy {low_bound} <= low <= high, got {value!r}.")
    return low, high


def check_jitter_settings(hue: float, saturation, brightness: float, contrast, grayscale: float) -> None:
    """Raise ValueError naming the setting that is out of range."""
    if not 0.0 <= float(hue) <= 0.5:
        raise ValueError(f"color_jitter.hue must be in [0, 0.5] (a fraction of the colour circle), got {hue!r}.")
    if not 0.0 <= float(brightness) <= 1.0:
        raise ValueError(f"color_jitter.brightness must be in [0, 1] (offset on [0, 1] colours), got {brightness!r}.")
    if not 0.0 <= float(grayscale) <= 1.0:
        raise ValueError(f"color_jitter.grayscale must be a probability in [0, 1], got {grayscale!r}.")
    _check_range("saturation", saturation, 0.0)
    _check_range("contrast", contrast, 0.0)


def draw_jitter(seed, *, hue: float = 0.5, saturation=(0.5, 1.5), brightness: float = 0.2, contrast=(0.7, 1.3),
                channel_shuffle: bool = True, grayscale: float = 0.1) -> dict:
    """One example's draw from a stateless seed (int32/int64 [2]): a dict of scalar tensors.

    ``channel_order`` int32 in [0, 6) (0 = unchanged), ``hue`` in [-hue, hue] (fraction of the colour circle),
    ``saturation`` and ``contrast`` factors, ``brightness`` offset in [-brightness, brightness], ``grayscale``
    bool.
    """
    import tensorflow as tf

    u = tf.random.stateless_uniform([6], seed=seed, dtype=tf.float32)
    s_low, s_high = _check_range("saturation", saturation, 0.0)
    c_low, c_high = _check_range("contrast", contrast, 0.0)
    order = tf.cast(tf.floor(u[0] * len(CHANNEL_ORDERS)), tf.int32) if channel_shuffle else tf.constant(0, tf.int32)
    return {
        "channel_order": tf.minimum(order, len(CHANNEL_ORDERS) - 1),
        "hue": (2.0 * u[1] - 1.0) * float(hue),
        "saturation": s_low + u[2] * (s_high - s_low),
        "brightness": (2.0 * u[3] - 1.0) * float(brightness),
        "contrast": c_low + u[4] * (c_high - c_low),
        "grayscale": u[5] < float(grayscale),
    }


def apply_jitter(image, draw: dict):
    """uint8 [..., H, W, 3] -> uint8 of the same shape: the draw of ``draw_jitter`` applied (pure).

    Order: channel order, hue rotation, saturation, brightness, contrast (about the image's mean), greyscale;
    colours are clipped to [0, 1] before rounding back to uint8.
    """
    import tensorflow as tf

    if image.dtype != tf.uint8 or image.shape[-1] != 3:
        raise ValueError(f"color_jitter expects uint8 images [..., H, W, 3], got {image.dtype.name} {image.shape}.")
    x = tf.image.convert_image_dtype(image, tf.float32)
    x = tf.gather(x, tf.gather(tf.constant(CHANNEL_ORDERS, tf.int32), draw["channel_order"]), axis=-1)
    x = tf.image.adjust_hue(x, draw["hue"])
    x = tf.image.adjust_saturation(x, draw["saturation"])
    x = x + draw["brightness"]
    x = tf.image.adjust_contrast(x, draw["contrast"])
    x = tf.where(draw["grayscale"], tf.broadcast_to(tf.image.rgb_to_grayscale(x), tf.shape(x)), x)
    return tf.image.convert_image_dtype(tf.clip_by_value(x, 0.0, 1.0), tf.uint8, saturate=True)


@gin.configurable
def color_jitter(dataset=gin.REQUIRED, seed: int = 0, hue: float = 0.5, saturation: Sequence[float] = (0.5, 1.5),
                 brightness: float = 0.2, contrast: Sequence[float] = (0.7, 1.3), channel_shuffle: bool = True,
                 grayscale: float = 0.1, keys: Sequence[str] = ("image", "image_next"), copy_suffix: str | None = None):
    """The examples of ``dataset`` with colour-jittered ``keys`` (those present), repeated without end.

    Args:
      dataset: unbatched ``tf.data.Dataset`` of example dicts with uint8 [H, W, 3] images.
      seed: the draws' seed (an int >= 0); the draw of the n-th example of the repeated stream depends on
        (seed, n) only.
      hue: the largest hue rotation, a fraction of the colour circle (0.5: any hue).
      saturation, contrast: (low, high) factors; brightness: the largest offset on [0, 1] colours.
      channel_shuffle: draw one of the six orders of the RGB channels.
      grayscale: probability of turning the example grey.
      keys: the image keys to jitter (all with the same draw); at least one must be in the dataset.
      copy_suffix: None (the jittered images replace the originals), or a suffix: the jittered copy of ``key`` is
        added as ``key + copy_suffix`` and the original kept (e.g. a mediator whose student network reads the
        copies, ``TaskTrainer.mediator_inputs``).
    Returns:
      an infinite dataset (each pass over ``dataset`` gets new draws); other keys pass through.
    """
    import tensorflow as tf

    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"color_jitter.seed must be an int >= 0, got {seed!r}.")
    check_jitter_settings(hue, saturation, brightness, contrast, grayscale)
    spec = dataset.element_spec
    if not isinstance(spec, dict):
        raise ValueError("color_jitter.dataset must yield example dicts (e.g. @synthetic()).")
    if copy_suffix is not None and not str(copy_suffix):
        raise ValueError("color_jitter.copy_suffix must be None or a non-empty suffix (e.g. '_jittered').")
    present = [k for k in keys if k in spec]
    if not present:
        raise ValueError(f"color_jitter: none of the keys {tuple(keys)} is in the dataset (it has {sorted(spec)}).")
    settings = dict(hue=hue, saturation=saturation, brightness=brightness, contrast=contrast,
                    channel_shuffle=channel_shuffle, grayscale=grayscale)

    def jitter(index, example):
        draw = draw_jitter(tf.stack([tf.constant(int(seed), tf.int64), index]), **settings)
        out = dict(example)
        for key in present:
            out[key if copy_suffix is None else key + copy_suffix] = apply_jitter(example[key], draw)
        return out

    return dataset.repeat().enumerate().map(jitter, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
