"""A plain stack of 'same'-padded convolutions: the smallest dense network, for scaling studies.

    image uint8 [B, H, W, 3] -> [0, 1] -> (conv 3x3 -> ReLU) x num_layers -> conv 1x1 -> named outputs

No down-sampling, so any image size works and every output has the input's height and width. With the
defaults (8 channels, 2 layers) a network has under a thousand parameters: many of them train side by
side on one CPU, which is what ``tasks/field.py`` needs to study how the framework scales with the
number of tasks rather than with the size of one network.
"""

from __future__ import annotations

from typing import Mapping

import keras
from keras import layers

from taskology_tf.models.unet import ImageToFloat


def build_plain_conv(name: str, outputs: Mapping[str, int], width: int = 8, num_layers: int = 2) -> keras.Model:
    """A plain convolutional model with linear named outputs.

    Args:
      name: model name, also the prefix of its layer names.
      outputs: output name -> channels, e.g. ``{"field": 1}``.
      width: channels of every hidden 3x3 convolution (>= 1).
      num_layers: hidden 3x3 convolutions (>= 0; 0 = a per-pixel linear map of the image).

    Returns:
      ``keras.Model``: ``{"image": uint8 [B, H, W, 3]}`` -> ``{name: float32 [B, H, W, channels]}``.
    """
    if not outputs:
        raise ValueError(f"build_plain_conv({name!r}) needs at least one output, got none.")
    bad = {k: c for k, c in outputs.items() if not isinstance(c, int) or isinstance(c, bool) or c < 1}
    if bad:
        raise ValueError(f"build_plain_conv({name!r}): output channels must be positive integers, got {bad}.")
    if not isinstance(width, int) or width < 1 or not isinstance(num_layers, int) or num_layers < 0:
        raise ValueError(f"build_plain_conv({name!r}) needs width >= 1 and num_layers >= 0, got {width}, {num_layers}.")
    image = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = ImageToFloat(name=f"{name}_image_to_float")(image)
    for i in range(num_layers):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                          name=f"{name}_conv{i}")(x)
    heads = {key: layers.Conv2D(channels, 1, dtype="float32", name=f"{name}_{key}")(x)
             for key, channels in outputs.items()}
    return keras.Model({"image": image}, heads, name=name)
