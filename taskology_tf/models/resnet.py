"""ResNet encoders (He et al. 2016) built with the Keras 3 functional API.

One code path gives the paper-size encoders (ResNet-18/34/50) and tiny ones for
tests, chosen by an ``EncoderConfig``. Images are NHWC; the encoder returns five
feature maps at strides 2, 4, 8, 16 and 32 for a U-Net style decoder.

Layout (torchvision-compatible parameter counts, ResNet v1.5: the stride of a
bottleneck block sits on its 3x3 conv):
  stem: 7x7 conv stride 2 -> norm -> relu                 (stride 2 feature)
        3x3 max-pool stride 2
  stage k (k = 1..4): ``blocks[k-1]`` residual blocks of width ``widths[k-1]``;
        stages 2..4 start with stride 2                   (strides 4, 8, 16, 32)
A block gets a 1x1 projection shortcut (+ norm) when its stride or its number of
channels changes.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras
from keras import layers

from taskology_tf.models.normalization import RandomizedLayerNormalization

BlockType = Literal["basic", "bottleneck"]
NormType = Literal["batch", "group", "randomized_layer", "none"]

_BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
_NORMS = ("batch", "group", "randomized_layer", "none")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a ResNet encoder.

    Attributes:
      block: "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1 with 4x expansion).
      blocks: number of residual blocks in each of the four stages.
      widths: base number of channels of each stage (a bottleneck stage outputs 4x that).
      stem_width: channels of the 7x7 stem conv.
      norm: "batch" (BatchNormalization), "group" (GroupNormalization), "randomized_layer" (the depth-from-videos
        paper's per-example normalization with noisy statistics, ``models.normalization``) or "none"
        (convs get biases).
    """

    block: BlockType = "basic"
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    norm: NormType = "batch"

    def __post_init__(self):
        if self.block not in _BLOCK_EXPANSION:
            raise ValueError(f"EncoderConfig.block must be one of {sorted(_BLOCK_EXPANSION)}, got {self.block!r}.")
        if self.norm not in _NORMS:
            raise ValueError(f"EncoderConfig.norm must be one of {_NORMS}, got {self.norm!r}.")
        if len(self.blocks) != 4 or len(self.widths) != 4:
            raise ValueError(
                f"EncoderConfig needs 4 stages: got blocks={self.blocks} and widths={self.widths}; "
                "give exactly four entries to each."
            )
        if min(self.blocks) < 1 or min(self.widths) < 1 or self.stem_width < 1:
            raise ValueError(f"EncoderConfig sizes must be positive, got {self}.")

    @property
    def expansion(self) -> int:
        """Output channels of a block divided by its base width (1 basic, 4 bottleneck)."""
        return _BLOCK_EXPANSION[self.block]

    @property
    def feature_channels(self) -> tuple[int, int, int, int, int]:
        """Channels of the five encoder features (strides 2, 4, 8, 16, 32)."""
        return (self.stem_width,) + tuple(w * self.expansion for w in self.widths)


ENCODER_PRESETS: dict[str, EncoderConfig] = {
    "resnet18": EncoderConfig("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet34": EncoderConfig("basic", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet50": EncoderConfig("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "small": EncoderConfig("basic", (1, 1, 1, 1), (16, 32, 64, 128), 16),
    "tiny": EncoderConfig("basic", (1, 1, 1, 1), (8, 16, 32, 64), 8),
}

FEATURE_STRIDES = (2, 4, 8, 16, 32)


def get_encoder_config(preset: str | EncoderConfig) -> EncoderConfig:
    """Return the ``EncoderConfig`` of a preset name (or the config itself)."""
    if isinstance(preset, EncoderConfig):
        return preset
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"Unknown encoder preset {preset!r}; choose one of {sorted(ENCODER_PRESETS)}.")
    return ENCODER_PRESETS[preset]


def _group_count(channels: int, max_groups: int = 32) -> int:
    """Largest power-of-two number of groups <= max_groups that divides ``channels``."""
    groups = max_groups
    while groups > 1 and channels % groups:
        groups //= 2
    return groups


def conv(filters: int, kernel_size: int, strides: int, norm: str, name: str) -> layers.Conv2D:
    """A 'same'-padded, He-initialised conv; biased only when no normalisation follows."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=norm == "none",
        kernel_initializer="he_normal",
        name=name,
    )


def norm_layer(norm: str, channels: int, name: str) -> layers.Layer:
    """Normalisation layer for ``norm`` in ``_NORMS`` (identity for "none")."""
    if norm == "batch":
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)
    if norm == "group":
        return layers.GroupNormalization(groups=_group_count(channels), epsilon=1e-5, name=name)
    if norm == "randomized_layer":
        return RandomizedLayerNormalization(name=name)
    if norm == "none":
        return layers.Identity(name=name)
    raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}.")


def _basic_block(x, width: int, strides: int, norm: str, name: str):
    in_channels = x.shape[-1]
    y = conv(width, 3, strides, norm, f"{name}_conv1")(x)
    y = norm_layer(norm, width, f"{name}_norm1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(width, 3, 1, norm, f"{name}_conv2")(y)
    y = norm_layer(norm, width, f"{name}_norm2")(y)
    shortcut = x
    if strides != 1 or in_channels != width:
        shortcut = conv(width, 1, strides, norm, f"{name}_proj")(x)
        shortcut = norm_layer(norm, width, f"{name}_proj_norm")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(x, width: int, strides: int, norm: str, name: str):
    in_channels = x.shape[-1]
    out_channels = width * _BLOCK_EXPANSION["bottleneck"]
    y = conv(width, 1, 1, norm, f"{name}_conv1")(x)
    y = norm_layer(norm, width, f"{name}_norm1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(width, 3, strides, norm, f"{name}_conv2")(y)
    y = norm_layer(norm, width, f"{name}_norm2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = conv(out_channels, 1, 1, norm, f"{name}_conv3")(y)
    y = norm_layer(norm, out_channels, f"{name}_norm3")(y)
    shortcut = x
    if strides != 1 or in_channels != out_channels:
        shortcut = conv(out_channels, 1, strides, norm, f"{name}_proj")(x)
        shortcut = norm_layer(norm, out_channels, f"{name}_proj_norm")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_encoder(x, config: str | EncoderConfig = "resnet18", name: str = "encoder") -> list:
    """Apply a ResNet encoder to a float image tensor.

    Args:
      x: Keras tensor [B, H, W, 3], float in [0, 1] (H, W multiples of 32 for a U-Net decoder).
      config: an ``EncoderConfig`` or the name of one in ``ENCODER_PRESETS``.
      name: prefix of every layer name (must be unique within the model).

    Returns:
      Five feature maps at strides 2, 4, 8, 16, 32: shapes [B, H/s, W/s, C_s] with
      C_s = ``config.feature_channels``.
    """
    config = get_encoder_config(config)
    norm = config.norm
    block_fn = _basic_block if config.block == "basic" else _bottleneck_block

    y = conv(config.stem_width, 7, 2, norm, f"{name}_stem_conv")(x)
    y = norm_layer(norm, config.stem_width, f"{name}_stem_norm")(y)
    y = layers.ReLU(name=f"{name}_stem_relu")(y)
    features = [y]
    y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_stem_pool")(y)
    for stage, (num_blocks, width) in enumerate(zip(config.blocks, config.widths), start=1):
        for block in range(num_blocks):
            strides = 2 if (stage > 1 and block == 0) else 1
            y = block_fn(y, width, strides, norm, f"{name}_s{stage}_b{block}")
        features.append(y)
    return features


def build_encoder(
    preset: str | EncoderConfig = "resnet18", height: int | None = None, width: int | None = None,
    name: str = "encoder",
) -> keras.Model:
    """A standalone encoder model: float image [B, H, W, 3] -> list of 5 features (strides 2..32)."""
    inputs = keras.Input(shape=(height, width, 3), name=f"{name}_image")
    return keras.Model(inputs, resnet_encoder(inputs, preset, name), name=name)
