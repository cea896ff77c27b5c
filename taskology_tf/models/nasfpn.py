"""NAS-FPN (Ghiasi et al., CVPR 2019) on a ResNet backbone, with a semantic segmentation head.

The segmentation network of the Taskology paper (Sec. 4.1, ref. [21]).

Pyramid. Backbone features C3, C4, C5 (strides 8, 16, 32) are projected to
``num_filters`` channels by 1x1 conv + norm; P6 and P7 come from 2x2 stride-2
max-pooling of P5 and P6 (strides 64, 128). The NAS-FPN module then maps the
pyramid P3..P7 to a new pyramid P3..P7 with seven *merging cells*
(``NASFPN_CELLS``, the architecture published by the paper). A cell takes two
feature maps of the current list, resizes both to its output level (max-pool
to go down, nearest-neighbour upsampling to go up), merges them with a binary
op, applies ReLU -> 3x3 conv -> norm, and appends the result to the list:

  * ``sum``: a + b.
  * ``global_pool`` (the paper's global-pooling op): with c the input that comes
    from the coarser level and f the other one, c + f * sigmoid(max_{h,w} c);
    the attention weights are per channel.

The last five cells are output cells (levels 3, 4, 5, 7, 6); an output cell
also adds any earlier node of its level that no cell has consumed yet (this is
how the original P5 and P7 reach the outputs). The module's outputs are fed to
the next repetition; ``num_repeats`` modules are stacked. The NAS-FPN paper's
main RetinaNet models stack 7 modules of 256 filters ("7 @ 256"); the
segmentation configuration of the authors' TPU reference code
(tensorflow/tpu, models/official/detection) stacks 5, the default here
(``PAPER_NUM_REPEATS``). The Taskology paper does not state its value.

Head. ``head_convs`` 3x3 conv -> norm -> ReLU layers on P3 (optionally with
higher levels, bilinearly upsampled to level 3, added first), a 1x1 conv to
class logits, cast to float32, and bilinear upsampling by 8 to the input
resolution. With the default P3-only head, the last module's cells that only
feed P4..P7 (cells 3..6) do not reach the output, so the functional model does
not contain them (as in a reference segmentation head reading level 3 alone):
the paper-size model (ResNet-50, 256 filters, 5 repeats, 8 classes) has
44,008,328 parameters, 23,587,712 of them in the backbone.

Backbones. ``"resnet50"`` is ``keras.applications.ResNet50`` (the paper's
backbone; ImageNet weights optional, never required, with its "caffe"
preprocessing: BGR, ImageNet channel means subtracted, 0..255 range). The
project's own ResNet encoders (``taskology_tf.models.resnet`` presets "tiny",
"small", "resnet18", "resnet34"; inputs in [0, 1]) give small models from the
same code for tests and CPU runs.

Image size. The pyramid reaches stride 128, so the network works on heights
and widths that are multiples of 128 (``SIZE_MULTIPLE``). By default
(``pad_to_multiple=True``) the preprocessed image is zero-padded at the bottom
and right up to the next multiple (e.g. 64 x 128 -> 128 x 128, 128 x 416 ->
128 x 512) and the logits are cropped back, so any size works at the cost of
the padded pixels (zero after preprocessing: black for the project's encoders,
the ImageNet mean colour for ResNet-50; they also enter batch-norm statistics). With ``pad_to_multiple=False`` other sizes are an error
(static sizes when the model is built, others when it is called).

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping, Sequence

import keras
from keras import layers, ops

from taskology_tf.models.resize import BilinearUpsample, CropToReference  # noqa: F401  (re-exported)
from taskology_tf.models.resnet import conv, get_encoder_config, norm_layer, resnet_encoder
from taskology_tf.models.unet import conv_norm_act

MIN_LEVEL = 3
MAX_LEVEL = 7
LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
SIZE_MULTIPLE = 2**MAX_LEVEL  # P7 has stride 128

MergeOp = Literal["sum", "global_pool"]


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One merging cell.

    Attributes:
      level: output pyramid level (stride 2**level).
      op: binary op, "sum" or "global_pool".
      inputs: indices of the two inputs in the module's node list (0..4 are the input
        P3..P7; cell k appends node 5 + k).
      is_output: whether the cell produces one of the module's output levels.
    """

    level: int
    op: MergeOp
    inputs: tuple[int, int]
    is_output: bool


# The NAS-FPN architecture found by the paper's architecture search (as in the reference
# TensorFlow implementation): cells 2..6 output P3, P4, P5, P7, P6.
NASFPN_CELLS: tuple[CellSpec, ...] = (
    CellSpec(4, "global_pool", (1, 3), False),
    CellSpec(4, "sum", (1, 5), False),
    CellSpec(3, "sum", (0, 6), True),
    CellSpec(4, "sum", (6, 7), True),
    CellSpec(5, "global_pool", (7, 8), True),
    CellSpec(7, "global_pool", (6, 9), True),
    CellSpec(6, "global_pool", (9, 10), True),
)

PAPER_NUM_FILTERS = 256
PAPER_NUM_REPEATS = 5

KERAS_RESNET50 = "resnet50"
# keras.applications.ResNet50 layers giving C3, C4, C5.
_RESNET50_FEATURE_LAYERS = {3: "conv3_block4_out", 4: "conv4_block6_out", 5: "conv5_block3_out"}
# Project encoder presets usable as backbones (their "resnet50" is shadowed by keras.applications).
ENCODER_BACKBONES = ("tiny", "small", "resnet18", "resnet34")
BACKBONES = (KERAS_RESNET50,) + ENCODER_BACKBONES

# Defaults per backbone: (num_filters, num_repeats).
BACKBONE_DEFAULTS: dict[str, tuple[int, int]] = {
    KERAS_RESNET50: (PAPER_NUM_FILTERS, PAPER_NUM_REPEATS),
    "resnet34": (PAPER_NUM_FILTERS, PAPER_NUM_REPEATS),
    "resnet18": (PAPER_NUM_FILTERS, PAPER_NUM_REPEATS),
    "small": (32, 3),
    "tiny": (16, 2),
}

# keras.applications.resnet50.preprocess_input ("caffe" mode): BGR means subtracted, 0..255 range.
_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


def check_image_size(height: int | None, width: int | None, multiple: int = SIZE_MULTIPLE) -> None:
    """Raise ValueError unless each static size (None = dynamic, not checked) is a multiple of ``multiple``."""
    for arg, size in (("height", height), ("width", width)):
        if size is None:
            continue
        size = int(size)
        if size <= 0 or size % multiple:
            lower = max(multiple, size // multiple * multiple)
            upper = (size // multiple + 1) * multiple
            raise ValueError(
                f"NAS-FPN needs image sizes that are multiples of {multiple} (its pyramid reaches level "
                f"{MAX_LEVEL}, stride {multiple}), got {arg}={size}. Crop or resize the images to "
                f"{arg}={lower}, or pad/resize them to {upper}."
            )


@keras.saving.register_keras_serializable(package="taskology_tf")
class ImagePreprocess(layers.Layer):
    """uint8 image [B, H, W, 3] -> floats of the layer's compute dtype, checking the image size.

    Args:
      mode: "unit" (x / 255, in [0, 1]; the project's encoders) or "caffe" (RGB -> BGR, minus
        the ImageNet channel means, 0..255 range; what ``keras.applications.ResNet50`` expects).
      size_multiple: static height and width must be multiples of this (1 = no check).
    """

    def __init__(self, mode: str = "unit", size_multiple: int = 1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("unit", "caffe"):
            raise ValueError(f"ImagePreprocess.mode must be 'unit' or 'caffe', got {mode!r}.")
        self.mode = mode
        self.size_multiple = int(size_multiple)

    def call(self, image):
        if len(image.shape) != 4 or image.shape[-1] != 3:
            raise ValueError(f"Expected an RGB image batch [B, H, W, 3], got shape {tuple(image.shape)}.")
        if self.size_multiple > 1:
            check_image_size(image.shape[1], image.shape[2], self.size_multiple)
        x = ops.cast(image, "float32")
        if self.mode == "unit":
            x = x * (1.0 / 255.0)
        else:
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_IMAGENET_BGR_MEAN, dtype="float32")
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, size_multiple=self.size_multiple)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class GlobalPoolingMerge(layers.Layer):
    """NAS-FPN's global-pooling binary op: [coarse, fine] -> coarse + fine * sigmoid(max_{h,w} coarse).

    Both inputs are [B, H, W, C] at the cell's output resolution; ``coarse`` is the one
    that came from the coarser pyramid level. The gate is per example and channel.
    """

    def call(self, inputs):
        coarse, fine = inputs
        gate = ops.sigmoid(ops.max(coarse, axis=(1, 2), keepdims=True))
        return coarse + fine * gate

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def _padded(size: int | None, multiple: int) -> int | None:
    return None if size is None else -(-int(size) // multiple) * multiple


@keras.saving.register_keras_serializable(package="taskology_tf")
class PadToMultiple(layers.Layer):
    """Zero-pad [B, H, W, C] at the bottom and right so that H and W become multiples of ``multiple``."""

    def __init__(self, multiple: int = SIZE_MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            shape = ops.shape(x)
            height, width = shape[1], shape[2]
        pad_h = (-height) % self.multiple
        pad_w = (-width) % self.multiple
        if isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == 0 and pad_w == 0:
            return x
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, _padded(h, self.multiple), _padded(w, self.multiple), c)

    def get_config(self):
        config = super().get_config()
        config.update(multiple=self.multiple)
        return config


# --- backbones ----------------------------------------------------------------------------------


def _check_backbone(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown NAS-FPN backbone {backbone!r}; choose {KERAS_RESNET50!r} (keras.applications ResNet-50, "
            f"the paper's) or one of the project's encoders {ENCODER_BACKBONES}."
        )


def preprocessing_mode(backbone: str) -> str:
    """``ImagePreprocess`` mode a backbone expects: "caffe" for keras.applications ResNet-50, else "unit"."""
    _check_backbone(backbone)
    return "caffe" if backbone == KERAS_RESNET50 else "unit"


def backbone_features(
    x, backbone: str = KERAS_RESNET50, backbone_weights: str | None = None, name: str = "backbone"
) -> dict[int, keras.KerasTensor]:
    """Backbone features {3: C3, 4: C4, 5: C5} (strides 8, 16, 32) of a preprocessed image tensor.

    Args:
      x: Keras tensor [B, H, W, 3] as ``ImagePreprocess(preprocessing_mode(backbone))`` returns it
        (H, W multiples of 128, or None).
      backbone: "resnet50" (keras.applications) or one of ``ENCODER_BACKBONES``.
      backbone_weights: for "resnet50": None (random init), "imagenet" (downloaded by Keras on
        first use) or a path to a weights file; must be None for the project's encoders.
      name: prefix of the layer names.
    """
    _check_backbone(backbone)
    if backbone == KERAS_RESNET50:
        base = keras.applications.ResNet50(
            include_top=False, weights=backbone_weights, input_shape=(x.shape[1], x.shape[2], 3)
        )
        extractor = keras.Model(
            base.inputs, [base.get_layer(_RESNET50_FEATURE_LAYERS[level]).output for level in (3, 4, 5)],
            name=f"{name}_resnet50",
        )
        c3, c4, c5 = extractor(x)
        return {3: c3, 4: c4, 5: c5}
    if backbone_weights is not None:
        raise ValueError(
            f"backbone_weights={backbone_weights!r} is only supported for the {KERAS_RESNET50!r} backbone; "
            f"the project's {backbone!r} encoder starts from random weights. Pass backbone_weights=None."
        )
    features = resnet_encoder(x, get_encoder_config(backbone), name=f"{name}_encoder")
    return {3: features[2], 4: features[3], 5: features[4]}


# --- NAS-FPN ------------------------------------------------------------------------------------


def resample_to_level(x, from_level: int, to_level: int, name: str):
    """Resize a feature map between pyramid levels: max-pool down, nearest-neighbour up, identity if equal."""
    if from_level == to_level:
        return x
    factor = 2 ** abs(to_level - from_level)
    if to_level > from_level:
        return layers.MaxPooling2D(factor, strides=factor, padding="same", name=name)(x)
    return layers.UpSampling2D(factor, interpolation="nearest", name=name)(x)


def input_pyramid(
    features: Mapping[int, keras.KerasTensor], num_filters: int, norm: str = "batch", name: str = "nasfpn"
) -> list:
    """P3..P7 at ``num_filters`` channels from backbone features {3: C3, 4: C4, 5: C5}.

    Each C_l is projected by 1x1 conv + norm (skipped when it already has ``num_filters``
    channels); P6 = maxpool(P5), P7 = maxpool(P6) (2x2, stride 2).
    """
    missing = [level for level in (3, 4, 5) if level not in features]
    if missing:
        raise ValueError(f"input_pyramid needs backbone features at levels 3, 4, 5; missing {missing}.")
    pyramid = []
    for level in LEVELS:
        if level in features:
            x = features[level]
            if x.shape[-1] != num_filters:
                x = conv(num_filters, 1, 1, norm, f"{name}_lateral{level}")(x)
                x = norm_layer(norm, num_filters, f"{name}_lateral{level}_norm")(x)
        else:
            x = resample_to_level(pyramid[-1], level - 1, level, f"{name}_p{level}_pool")
        pyramid.append(x)
    return pyramid


def nasfpn_module(
    pyramid: Sequence, num_filters: int, norm: str = "batch", cells: Sequence[CellSpec] = NASFPN_CELLS,
    name: str = "nasfpn_m0",
) -> list:
    """One NAS-FPN module: pyramid P3..P7 (list of 5 tensors, ``num_filters`` channels) -> new P3..P7."""
    if len(pyramid) != len(LEVELS):
        raise ValueError(f"nasfpn_module needs {len(LEVELS)} levels P3..P7, got {len(pyramid)} feature maps.")
    nodes = list(pyramid)
    node_levels = list(LEVELS)
    consumed = [0] * len(nodes)
    for k, cell in enumerate(cells):
        prefix = f"{name}_c{k}"
        for i in cell.inputs:
            if not 0 <= i < len(nodes):
                raise ValueError(f"Cell {k} reads node {i} but only nodes 0..{len(nodes) - 1} exist; check the cell specs.")
        (i0, i1) = cell.inputs
        a = resample_to_level(nodes[i0], node_levels[i0], cell.level, f"{prefix}_in0_resize")
        b = resample_to_level(nodes[i1], node_levels[i1], cell.level, f"{prefix}_in1_resize")
        consumed[i0] += 1
        consumed[i1] += 1
        if cell.op == "sum":
            x = layers.Add(name=f"{prefix}_sum")([a, b])
        elif cell.op == "global_pool":
            coarse, fine = (a, b) if node_levels[i0] >= node_levels[i1] else (b, a)
            x = GlobalPoolingMerge(name=f"{prefix}_global_pool")([coarse, fine])
        else:
            raise ValueError(f"Cell {k}: unknown op {cell.op!r}; use 'sum' or 'global_pool'.")
        if cell.is_output:
            # Nodes of this level that no cell consumed join the output (the original P5, P7).
            extra = [j for j in range(len(nodes)) if consumed[j] == 0 and node_levels[j] == cell.level]
            for j in extra:
                consumed[j] += 1
            if extra:
                x = layers.Add(name=f"{prefix}_unused_sum")([x] + [nodes[j] for j in extra])
        x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = conv(num_filters, 3, 1, norm, f"{prefix}_conv")(x)
        x = norm_layer(norm, num_filters, f"{prefix}_norm")(x)
        nodes.append(x)
        node_levels.append(cell.level)
        consumed.append(0)
    outputs = {}
    for x, level in zip(nodes[-len(LEVELS):], node_levels[-len(LEVELS):]):
        outputs[level] = x
    if sorted(outputs) != list(LEVELS):
        raise ValueError(f"The last {len(LEVELS)} cells must output levels {LEVELS}, got {sorted(outputs)}.")
    return [outputs[level] for level in LEVELS]


def nasfpn(
    features: Mapping[int, keras.KerasTensor],
    num_filters: int = PAPER_NUM_FILTERS,
    num_repeats: int = PAPER_NUM_REPEATS,
    norm: str = "batch",
    name: str = "nasfpn",
) -> dict[int, keras.KerasTensor]:
    """NAS-FPN on backbone features {3: C3, 4: C4, 5: C5} -> {level: [B, H/2^l, W/2^l, num_filters]}, l = 3..7."""
    if num_repeats < 1 or num_filters < 1:
        raise ValueError(f"NAS-FPN needs num_repeats >= 1 and num_filters >= 1, got {num_repeats} and {num_filters}.")
    pyramid = input_pyramid(features, num_filters, norm, name)
    for r in range(num_repeats):
        pyramid = nasfpn_module(pyramid, num_filters, norm, name=f"{name}_m{r}")
    return dict(zip(LEVELS, pyramid))


# --- segmentation -------------------------------------------------------------------------------


def segmentation_head(
    pyramid: Mapping[int, keras.KerasTensor],
    num_classes: int,
    filters: int,
    num_convs: int = 2,
    fuse_levels: Sequence[int] = (),
    norm: str = "batch",
    name: str = "head",
):
    """Class logits at the input resolution, float32 [B, 8 h3, 8 w3, num_classes], from the pyramid.

    P3 plus the levels in ``fuse_levels`` (bilinearly upsampled to level 3) are summed, then
    ``num_convs`` 3x3 conv -> norm -> ReLU of ``filters`` channels, a 1x1 conv to logits, a cast
    to float32 and bilinear upsampling by 8 (the stride of P3).
    """
    bad = [level for level in fuse_levels if level not in LEVELS or level == MIN_LEVEL]
    if bad:
        raise ValueError(f"fuse_levels must be pyramid levels in 4..{MAX_LEVEL}, got {tuple(fuse_levels)}.")
    x = pyramid[MIN_LEVEL]
    if fuse_levels:
        ups = [
            BilinearUpsample(2 ** (level - MIN_LEVEL), name=f"{name}_up{level}")(pyramid[level])
            for level in sorted(set(fuse_levels))
        ]
        x = layers.Add(name=f"{name}_fuse")([x] + ups)
    for i in range(num_convs):
        x = conv_norm_act(x, filters, norm, f"{name}_{i}")
    x = layers.Conv2D(num_classes, 1, name=f"{name}_logits_conv")(x)
    x = layers.Activation("linear", dtype="float32", name=f"{name}_logits_float32")(x)
    return BilinearUpsample(2**MIN_LEVEL, dtype="float32", name=f"{name}_logits_upsample")(x)


def build_segmentation_model(
    name: str = "segmentation",
    num_classes: int = 8,
    backbone: str = KERAS_RESNET50,
    num_filters: int | None = None,
    num_repeats: int | None = None,
    backbone_weights: str | None = None,
    head_convs: int = 2,
    head_filters: int | None = None,
    fuse_levels: Sequence[int] = (),
    norm: str = "batch",
    height: int | None = None,
    width: int | None = None,
    pad_to_multiple: bool = True,
) -> keras.Model:
    """NAS-FPN semantic segmentation network.

    Args:
      name: model name and prefix of its layer names.
      num_classes: number of semantic classes (logit channels).
      backbone: "resnet50" (keras.applications ResNet-50, the paper's) or a project encoder preset
        in ``ENCODER_BACKBONES`` ("tiny" for tests and CPU runs).
      num_filters: pyramid channels (None: ``BACKBONE_DEFAULTS``; 256 for the paper's model).
      num_repeats: stacked NAS-FPN modules (None: ``BACKBONE_DEFAULTS``; 5 for "resnet50").
      backbone_weights: None (random), "imagenet" or a weights path; only for "resnet50".
      head_convs: 3x3 conv -> norm -> ReLU layers of the head.
      head_filters: channels of the head convs (None: ``num_filters``).
      fuse_levels: pyramid levels (4..7) upsampled and added to P3 before the head.
      norm: "batch", "group" or "none" in the pyramid and head (the backbone keeps its own).
      height, width: static image size, or None for dynamic sizes.
      pad_to_multiple: zero-pad the (preprocessed) image at the bottom and right to multiples of 128
        and crop the logits back, so that any image size works; if False, sizes that are not
        multiples of 128 are an error (checked at build time for static sizes, else when called).

    Returns:
      ``keras.Model``: ``{"image": uint8 [B, H, W, 3]}`` -> ``{"segmentation_logits": float32 [B, H, W, num_classes]}``.
    """
    _check_backbone(backbone)
    if not pad_to_multiple:
        check_image_size(height, width)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    default_filters, default_repeats = BACKBONE_DEFAULTS[backbone]
    num_filters = default_filters if num_filters is None else num_filters
    num_repeats = default_repeats if num_repeats is None else num_repeats
    head_filters = num_filters if head_filters is None else head_filters

    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    mode = preprocessing_mode(backbone)
    x = ImagePreprocess(mode, 1 if pad_to_multiple else SIZE_MULTIPLE, name=f"{name}_preprocess")(image)
    if pad_to_multiple:
        x = PadToMultiple(SIZE_MULTIPLE, name=f"{name}_pad")(x)
    features = backbone_features(x, backbone, backbone_weights, name=f"{name}_backbone")
    pyramid = nasfpn(features, num_filters, num_repeats, norm, name=f"{name}_nasfpn")
    logits = segmentation_head(pyramid, num_classes, head_filters, head_convs, fuse_levels, norm, name=f"{name}_head")
    if pad_to_multiple:
        logits = CropToReference(dtype="float32", name=f"{name}_crop")([logits, image])
    return keras.Model(inputs={"image": image}, outputs={"segmentation_logits": logits}, name=name)
