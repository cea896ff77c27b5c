"""XTasC-Net (Nakano et al., Sec. IV-A): shared ResNet encoder, one decoder per task, two TTNets.

    image -> ResNet encoder (5 features, strides 2..32)
          -> segmentation decoder -> 1x1 conv -> ``segmentation``  logits [B, H, W, C]   (direct)
          -> depth decoder        -> 1x1 conv -> ``depth``         [B, H, W, 1]          (direct)
    TTNet seg->depth(softmax(segmentation)) -> ``depth_from_segmentation`` [B, H, W, 1]  (transferred)
    TTNet depth->seg(depth)                 -> ``segmentation_from_depth`` logits [B, H, W, C]

Decoder (paper): 5 blocks; block 1 reads the stride-32 feature, block k > 1 the concatenation
of the previous block's output with the encoder feature of the same stride; each block is
``decoder_convs`` x (3x3 conv -> batch norm -> ReLU) of ``decoder_width`` channels (paper: 3 x
128) followed by a x2 upsampling, so block 5 ends at full resolution; a 1x1 conv gives the
task's channels.

Variants (the paper's baselines, Sec. V-D):
  "st"     Base ST-Net: encoder + one decoder (``single_task``: "segmentation" or "depth").
  "mt"     Base MT-Net: shared encoder, two decoders, no TTNets.
  "align"  Align-Net: the XTasC-Net architecture (differs only in its loss, see tasks/xtasc.py).
  "xtasc"  XTasC-Net.

The TTNets are nested models named ``{name}_ttnet_segmentation_to_depth`` and
``{name}_ttnet_depth_to_segmentation`` (``ttnets(model)``), so their weights can be saved,
loaded or frozen on their own. The paper trains them jointly with the rest (default
``train_ttnets=True``); ``train_ttnets=False`` freezes them (e.g. after ``load_ttnet_weights``).

Trainable parameters at paper size (ResNet-34, widths above, 7 classes): 31.5 M (paper: 3.15e7).

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import keras
from keras import layers

from taskology_tf.models.resnet import get_encoder_config, resnet_encoder
from taskology_tf.models.ttnet import PAPER_WIDTHS, build_ttnet
from taskology_tf.models.unet import ImageToFloat, check_image_size, conv_head, conv_norm_act

VARIANTS = ("st", "mt", "align", "xtasc")
TASKS = ("segmentation", "depth")
TRANSFERS = {"depth_from_segmentation": "segmentation_to_depth", "segmentation_from_depth": "depth_to_segmentation"}

# Decoder width and TTNet widths per encoder preset (paper sizes for the ResNets).
XTASC_PRESETS: dict[str, tuple[int, tuple[int, ...]]] = {
    "resnet18": (128, PAPER_WIDTHS),
    "resnet34": (128, PAPER_WIDTHS),
    "resnet50": (128, PAPER_WIDTHS),
    "small": (32, (16, 32, 64)),
    "tiny": (16, (8, 16, 32)),
}


def variant_outputs(variant: str, single_task: str = "segmentation") -> tuple[str, ...]:
    """Output names of a variant ("st" -> (single_task,), "mt" -> both tasks, else also the transfers)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if single_task not in TASKS:
        raise ValueError(f"single_task must be one of {TASKS}, got {single_task!r}.")
    if variant == "st":
        return (single_task,)
    if variant == "mt":
        return TASKS
    return TASKS + tuple(TRANSFERS)


def xtasc_decoder(features: Sequence, width: int = 128, convs: int = 3, norm: str = "batch",
                  upsampling: str = "bilinear", name: str = "decoder"):
    """The paper's decoder: 5 x ([concat skip] -> ``convs`` x conv-norm-ReLU -> upsample x2).

    features: encoder features at strides 2, 4, 8, 16, 32. Returns [B, H, W, width] at stride 1.
    """
    if len(features) != 5:
        raise ValueError(f"xtasc_decoder needs 5 features (strides 2, 4, 8, 16, 32), got {len(features)}.")
    if width < 1 or convs < 1:
        raise ValueError(f"decoder width and convs must be >= 1, got width={width}, convs={convs}.")
    skips = [None] + list(features[-2::-1])  # none for block 1, then strides 16, 8, 4, 2
    x = features[-1]
    for block, skip in enumerate(skips, start=1):
        prefix = f"{name}_block{block}"
        if skip is not None:
            x = layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, skip])
        for i in range(1, convs + 1):
            x = conv_norm_act(x, width, norm, f"{prefix}_{i}")
        x = layers.UpSampling2D(2, interpolation=upsampling, name=f"{prefix}_upsample")(x)
    return x


def _depth_bias(initial_depth: float, activation: str) -> float:
    if activation == "softplus":
        if initial_depth <= 0:
            raise ValueError(f"initial_depth must be > 0 with a softplus depth output, got {initial_depth}.")
        return math.log(math.expm1(initial_depth))
    return float(initial_depth)


def build_xtasc_model(
    num_classes: int,
    variant: str = "xtasc",
    preset: str = "tiny",
    *,
    single_task: str = "segmentation",
    decoder_width: int | None = None,
    decoder_convs: int = 3,
    ttnet_widths: Sequence[int] | None = None,
    ttnet_skip_connections: bool = True,
    depth_activation: str = "softplus",
    initial_depth: float = 1.0,
    depth_input_scale: float = 1.0,
    segmentation_input: str = "probabilities",
    norm: str | None = None,
    upsampling: str = "bilinear",
    train_ttnets: bool = True,
    height: int | None = None,
    width: int | None = None,
    name: str = "xtasc",
) -> keras.Model:
    """Build XTasC-Net or one of its baselines.

    Args:
      num_classes: segmentation classes C.
      variant: "st", "mt", "align" or "xtasc" (module docstring).
      preset: encoder preset of ``models.resnet`` ("tiny", "small", "resnet18", "resnet34", "resnet50");
        also picks the decoder and TTNet widths of ``XTASC_PRESETS`` unless given.
      single_task: the task of the "st" variant.
      decoder_width, decoder_convs: channels and 3x3 convs per decoder block (paper: 128, 3).
      ttnet_widths, ttnet_skip_connections: TTNet levels (paper: 64, 128, 256) and U-Net skips.
      depth_activation: "softplus" (positive depth) or "linear" (the paper's plain 1x1 conv output).
      initial_depth: what the untrained depth output (and seg->depth TTNet) predicts, in the depth
        target's units (metres, or 1/metres for an inverse-depth target).
      depth_input_scale: multiplies the depth fed to the depth->seg TTNet (bring it to ~1).
      segmentation_input: what the seg->depth TTNet reads: "probabilities" (softmax of the logits,
        eq. 13's y_hat_1) or "logits" (the reference code's raw decoder output).
      norm: override the encoder preset's normalisation ("batch", "group", "none"), also in decoders.
      upsampling: "bilinear" (reference code) or "nearest", in decoders and TTNets.
      train_ttnets: False freezes both TTNets (``trainable = False``).
      height, width: static image size (multiples of 32) or None.
      name: model name and layer-name prefix.

    Returns:
      ``keras.Model``: ``{"image": uint8 [B, H, W, 3]}`` -> dict of float32 outputs named by
      ``variant_outputs(variant, single_task)``: ``segmentation`` logits [B, H, W, C], ``depth`` and
      ``depth_from_segmentation`` [B, H, W, 1], ``segmentation_from_depth`` logits [B, H, W, C].
    """
    outputs_wanted = variant_outputs(variant, single_task)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if depth_activation not in ("softplus", "linear"):
        raise ValueError(f"depth_activation must be 'softplus' or 'linear', got {depth_activation!r}.")
    if segmentation_input not in ("probabilities", "logits"):
        raise ValueError(f"segmentation_input must be 'probabilities' or 'logits', got {segmentation_input!r}.")
    check_image_size(height, width)
    config = get_encoder_config(preset)
    if norm is not None:
        config = dataclasses.replace(config, norm=norm)
    default_width, default_ttnet = XTASC_PRESETS.get(preset if isinstance(preset, str) else "", (None, None))
    decoder_width = decoder_width or default_width
    ttnet_widths = tuple(ttnet_widths or default_ttnet or ())
    if decoder_width is None or not ttnet_widths:
        raise ValueError(f"No XTasC preset for {preset!r}; pass decoder_width and ttnet_widths.")
    bias = _depth_bias(initial_depth, depth_activation)

    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    x = ImageToFloat(name=f"{name}_image_to_float")(image)
    features = resnet_encoder(x, config, name=f"{name}_encoder")

    out = {}
    if "segmentation" in outputs_wanted:
        y = xtasc_decoder(features, decoder_width, decoder_convs, config.norm, upsampling, f"{name}_segmentation_decoder")
        out["segmentation"] = conv_head(num_classes, None, name=f"{name}_segmentation", kernel_size=1)(y)
    if "depth" in outputs_wanted:
        y = xtasc_decoder(features, decoder_width, decoder_convs, config.norm, upsampling, f"{name}_depth_decoder")
        out["depth"] = conv_head(1, depth_activation, name=f"{name}_depth",
                                 bias_initializer=keras.initializers.Constant(bias), kernel_size=1)(y)
    if "depth_from_segmentation" in outputs_wanted:
        common = dict(widths=ttnet_widths, skip_connections=ttnet_skip_connections, upsampling=upsampling,
                      height=height, width=width)
        seg_to_depth = build_ttnet(
            num_classes, 1, input_key="segmentation", output_key="depth",
            input_transform="softmax" if segmentation_input == "probabilities" else "none",
            output_activation=None if depth_activation == "linear" else depth_activation, output_bias=bias,
            name=f"{name}_ttnet_segmentation_to_depth", **common,
        )
        depth_to_seg = build_ttnet(
            1, num_classes, input_key="depth", output_key="segmentation", input_scale=depth_input_scale,
            name=f"{name}_ttnet_depth_to_segmentation", **common,
        )
        for net in (seg_to_depth, depth_to_seg):
            net.trainable = bool(train_ttnets)
        out["depth_from_segmentation"] = seg_to_depth({"segmentation": out["segmentation"]})["depth"]
        out["segmentation_from_depth"] = depth_to_seg({"depth": out["depth"]})["segmentation"]
    return keras.Model(inputs={"image": image}, outputs={k: out[k] for k in outputs_wanted}, name=name)


def ttnets(model: keras.Model) -> dict[str, keras.Model]:
    """The nested TTNets of an XTasC model: transferred output name -> TTNet model (empty for st/mt)."""
    found = {}
    for output, direction in TRANSFERS.items():
        for layer in model.layers:
            if isinstance(layer, keras.Model) and layer.name.endswith(f"_ttnet_{direction}"):
                found[output] = layer
    return found


def load_ttnet_weights(model: keras.Model, paths: Mapping[str, str], freeze: bool = False) -> None:
    """Load TTNet weights (``.weights.h5`` files saved with ``ttnet.save_weights``) into an XTasC model.

    paths: transferred output name ("depth_from_segmentation", "segmentation_from_depth") -> file.
    freeze: also set those TTNets non-trainable.
    """
    nets = ttnets(model)
    unknown = sorted(set(paths) - set(nets))
    if unknown:
        raise ValueError(f"Model {model.name!r} has TTNets for {sorted(nets)}; cannot load weights for {unknown}.")
    for output, path in paths.items():
        nets[output].load_weights(path)
        if freeze:
            nets[output].trainable = False
