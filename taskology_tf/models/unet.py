"""U-Net decoders and the dense-prediction model builder (encoder + decoder + heads).

``build_dense_model`` is what tasks use for per-pixel outputs (depth, normals,
segmentation, ...): its single input is ``{"image": uint8 [B, H, W, 3]}``, it
turns the image into floats in [0, 1], runs a ResNet encoder and a U-Net
decoder back to full resolution, and applies one head per named output. The
model returns a dict ``{head_name: tensor}``.

Mixed precision: every layer follows the global Keras dtype policy; the head
helpers here cast to float32 before their activation (softplus, L2 normalise,
...), and ``build_dense_model`` casts any other head output to float32, so model
outputs are always float32.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import keras
from keras import layers, ops

from taskology_tf.models.resnet import conv, get_encoder_config, norm_layer, resnet_encoder

SIZE_MULTIPLE = 32  # the encoder halves the resolution five times

DECODER_PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "resnet18": (256, 128, 64, 32, 16),
    "resnet34": (256, 128, 64, 32, 16),
    "resnet50": (256, 128, 64, 32, 16),
    "small": (64, 32, 32, 16, 16),
    "tiny": (32, 16, 16, 8, 8),
}

Head = Callable[[keras.KerasTensor], keras.KerasTensor]


@keras.saving.register_keras_serializable(package="taskology_tf")
class ImageToFloat(layers.Layer):
    """uint8 image [B, H, W, C] in 0..255 -> floats in [0, 1] of the layer's compute dtype."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, image):
        x = ops.cast(image, "float32") * (1.0 / 255.0)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="taskology_tf")
class L2Normalize(layers.Layer):
    """Scale vectors to unit length along ``axis``: x / sqrt(sum(x^2) + epsilon).

    Runs in float32 unless another ``dtype`` is given (inputs are cast), so
    normals heads stay accurate under a mixed-precision policy.
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = epsilon

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        return x * ops.rsqrt(ops.sum(ops.square(x), axis=self.axis, keepdims=True) + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config


def check_image_size(height: int | None, width: int | None) -> None:
    """Raise ValueError unless each static size (None = dynamic, not checked) is a multiple of 32."""
    for arg, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if int(size) <= 0 or int(size) % SIZE_MULTIPLE:
            lower = max(SIZE_MULTIPLE, int(size) // SIZE_MULTIPLE * SIZE_MULTIPLE)
            upper = (int(size) // SIZE_MULTIPLE + 1) * SIZE_MULTIPLE
            raise ValueError(
                f"The image size must be a multiple of {SIZE_MULTIPLE} (the encoder downsamples 5 times by 2), "
                f"got {arg}={size}. Resize or crop the images to {arg}={lower} or pad/resize to {upper}."
            )


def conv_norm_act(x, filters: int, norm: str, name: str, activation: str = "relu"):
    """3x3 conv -> norm -> activation (the conv has a bias only when norm == "none")."""
    x = conv(filters, 3, 1, norm, f"{name}_conv")(x)
    x = norm_layer(norm, filters, f"{name}_norm")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def unet_decoder(
    features: Sequence,
    widths: Sequence[int] = DECODER_PRESETS["resnet18"],
    name: str = "decoder",
    norm: str = "batch",
    upsampling: str = "nearest",
):
    """U-Net decoder from five encoder features back to full input resolution.

    Starting from the deepest feature, each of the five steps upsamples by 2,
    concatenates the encoder feature of the same stride (none at the last step),
    and applies two 3x3 conv -> norm -> relu of width ``widths[i]``.

    Args:
      features: Keras tensors at strides 2, 4, 8, 16, 32 (as ``resnet_encoder`` returns).
      widths: channels after each of the 5 steps (output strides 16, 8, 4, 2, 1).
      name: prefix of every layer name.
      norm: a normalisation of ``resnet.norm_layer`` ("batch", "group", "randomized_layer", "none").
      upsampling: "nearest" or "bilinear".

    Returns:
      Keras tensor [B, H, W, widths[-1]] at the input resolution (2x the first feature).
    """
    if len(features) != 5:
        raise ValueError(f"unet_decoder needs 5 features (strides 2, 4, 8, 16, 32), got {len(features)}.")
    if len(widths) != 5:
        raise ValueError(f"unet_decoder needs 5 widths (one per upsampling step), got widths={tuple(widths)}.")
    if upsampling not in ("nearest", "bilinear"):
        raise ValueError(f"upsampling must be 'nearest' or 'bilinear', got {upsampling!r}.")
    skips = list(features[-2::-1]) + [None]  # strides 16, 8, 4, 2, then none at full resolution
    x = features[-1]
    for step, (skip, filters) in enumerate(zip(skips, widths)):
        prefix = f"{name}_up{step}"
        x = layers.UpSampling2D(2, interpolation=upsampling, name=f"{prefix}_upsample")(x)
        if skip is not None:
            x = layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, skip])
        x = conv_norm_act(x, filters, norm, f"{prefix}_a")
        x = conv_norm_act(x, filters, norm, f"{prefix}_b")
    return x


def conv_head(
    channels: int,
    activation: str | None = None,
    name: str = "head",
    bias_initializer="zeros",
    kernel_size: int = 3,
) -> Head:
    """A head: ``kernel_size`` conv to ``channels`` -> cast to float32 -> ``activation`` (float32).

    The returned callable maps the decoder output [B, H, W, C] to [B, H, W, channels]
    float32; its last layer is named ``name``.
    """

    def head(x):
        x = layers.Conv2D(
            channels, kernel_size, padding="same", bias_initializer=bias_initializer, name=f"{name}_conv"
        )(x)
        return layers.Activation(activation or "linear", dtype="float32", name=name)(x)

    return head


def normals_head(name: str = "normals", kernel_size: int = 3) -> Head:
    """A head predicting unit 3-vectors: conv to 3 channels -> float32 -> ``L2Normalize``."""

    def head(x):
        x = layers.Conv2D(3, kernel_size, padding="same", name=f"{name}_conv")(x)
        return L2Normalize(name=name)(x)

    return head


def build_dense_model(
    name: str,
    heads: Mapping[str, Head],
    preset: str = "tiny",
    height: int | None = None,
    width: int | None = None,
    norm: str | None = None,
    decoder_widths: Sequence[int] | None = None,
    upsampling: str = "nearest",
) -> keras.Model:
    """Encoder-decoder model with named dense heads.

    Args:
      name: model name, also the prefix of its layer names.
      heads: output name -> callable building layers on the decoder output [B, H, W, C]
        (e.g. ``conv_head(1, "softplus", name="depth")``).
      preset: encoder preset in ``ENCODER_PRESETS`` (also picks ``DECODER_PRESETS[preset]``).
      height, width: static image size (multiples of 32), or None for dynamic sizes (which
        must then be multiples of 32 at run time).
      norm: override the preset's normalisation ("batch", "group", "randomized_layer", "none") in encoder
        and decoder.
      decoder_widths: override ``DECODER_PRESETS[preset]``.
      upsampling: "nearest" or "bilinear" decoder upsampling.

    Returns:
      ``keras.Model`` with input ``{"image": uint8 [B, H, W, 3]}`` and outputs
      ``{head_name: float32 [B, H, W, C_head]}``.
    """
    check_image_size(height, width)
    if not heads:
        raise ValueError(f"build_dense_model({name!r}) needs at least one head in `heads`, got none.")
    config = get_encoder_config(preset)
    if norm is not None:
        config = dataclasses.replace(config, norm=norm)
    if decoder_widths is None:
        if preset not in DECODER_PRESETS:
            raise ValueError(f"No decoder preset for {preset!r}; pass decoder_widths (5 ints).")
        decoder_widths = DECODER_PRESETS[preset]

    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    x = ImageToFloat(name=f"{name}_image_to_float")(image)
    features = resnet_encoder(x, config, name=f"{name}_encoder")
    x = unet_decoder(features, decoder_widths, name=f"{name}_decoder", norm=config.norm, upsampling=upsampling)

    outputs = {}
    for head_name, head in heads.items():
        y = head(x)
        if y.dtype != "float32":
            y = layers.Activation("linear", dtype="float32", name=f"{name}_{head_name}_float32")(y)
        outputs[head_name] = y
    return keras.Model(inputs={"image": image}, outputs=outputs, name=name)


def build_frame_pair_model(single: keras.Model, name: str | None = None) -> keras.Model:
    """Run a one-image dense model on two frames at once (one batch of 2B, so one pass and shared
    normalisation statistics).

    Args:
      single: model ``{"image": uint8 [B, H, W, 3]} -> {key: [B, H, W, C]}``.
    Returns:
      model ``{"image", "image_next"} -> {key: ..., f"{key}_next": ...}`` (same weights for both frames).
    """
    name = name or single.name
    spec = single.inputs[0] if not isinstance(single.input, dict) else single.input["image"]
    height, width = spec.shape[1], spec.shape[2]
    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    image_next = keras.Input(shape=(height, width, 3), dtype="uint8", name="image_next")
    both = layers.Concatenate(axis=0, name=f"{name}_frames_as_batch")([image, image_next])
    out = single({"image": both})
    outputs = {}
    for key, value in out.items():
        first, second = SplitBatch(name=f"{name}_{key}_split")(value)
        outputs[key] = layers.Activation("linear", dtype="float32", name=f"{name}_{key}")(first)
        outputs[f"{key}_next"] = layers.Activation("linear", dtype="float32", name=f"{name}_{key}_next")(second)
    return keras.Model({"image": image, "image_next": image_next}, outputs, name=name)


@keras.saving.register_keras_serializable(package="taskology_tf")
class SplitBatch(layers.Layer):
    """[2B, ...] -> ([B, ...], [B, ...]): the first and the second half of the batch."""

    def call(self, x):
        half = ops.shape(x)[0] // 2
        return x[:half], x[half:]

    def compute_output_shape(self, input_shape):
        shape = (None,) + tuple(input_shape[1:])
        return shape, shape
