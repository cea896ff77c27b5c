"""Task-transfer network (TTNet, Nakano et al., XTasC-Net Sec. IV-A): one task's prediction -> another's.

A small U-Net without normalisation layers, as the paper describes it:

  contracting path, level k = 1..L (widths w_1..w_L; paper: 64, 128, 256):
      2 x (3x3 conv -> ReLU), then 2x2 max-pool stride 2          -> c_k at stride 2^k
  expansive path, level k = L..1 (symmetric):
      input: c_L at the bottom, else concat(previous output, c_k)  (U-Net skip)
      2 x (3x3 conv -> ReLU) to width w_{k-1} (w_1 at the top), then upsample x2
  1x1 conv to the output channels (+ optional output activation, float32)

With the paper's widths the skip connections make the XTasC-Net parameter counts
of the paper's Tables II/V (3.15e7 with ResNet-34, 2.14e7 with ResNet-18, 4.04e7
with ResNet-50) come out right; ``skip_connections=False`` gives the plain
encoder-decoder. Input height and width must be multiples of 2^L (8 for 3 levels).

Inputs are transformed first: ``input_transform="softmax"`` turns segmentation
logits into class probabilities (so that a TTNet trained on one-hot labels accepts
predictions, and vice versa); ``input_scale`` multiplies the input (e.g. 0.1 for
depth in metres). Models take a dict ``{input_key: [B, H, W, C_in]}`` and return
``{output_key: float32 [B, H, W, C_out]}``.

``train_ttnet`` fits a TTNet on pairs of labels (one-hot segmentation -> depth, or
depth -> segmentation) with plain ``keras`` ``compile``/``fit`` (any backend); the
``task_transfer`` relation then loads and freezes it.

This module does not import TensorFlow.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers, ops

PAPER_WIDTHS = (64, 128, 256)
INPUT_TRANSFORMS = ("none", "softmax")
KINDS = ("regression", "classification")


def check_ttnet_size(height: int | None, width: int | None, levels: int) -> None:
    """Raise ValueError unless each static size (None = not checked) is a positive multiple of 2**levels."""
    multiple = 2**levels
    for arg, size in (("height", height), ("width", width)):
        if size is not None and (int(size) <= 0 or int(size) % multiple):
            raise ValueError(
                f"A TTNet with {levels} levels needs {arg} to be a multiple of {multiple} (it max-pools {levels} times), "
                f"got {arg}={size}."
            )


def _conv_relu(x, filters: int, name: str):
    return layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=name)(x)


def build_ttnet(
    in_channels: int,
    out_channels: int,
    widths: Sequence[int] = PAPER_WIDTHS,
    *,
    input_key: str = "source",
    output_key: str = "target",
    input_transform: str = "none",
    input_scale: float = 1.0,
    output_activation: str | None = None,
    output_bias: float = 0.0,
    skip_connections: bool = True,
    upsampling: str = "bilinear",
    height: int | None = None,
    width: int | None = None,
    name: str = "ttnet",
) -> keras.Model:
    """Build a TTNet.

    Args:
      in_channels: channels of the source prediction (C classes for segmentation, 1 for depth).
      out_channels: channels of the target prediction space.
      widths: channels of the contracting levels (paper: 64, 128, 256); the expansive path mirrors them.
      input_key, output_key: names of the model's input and output.
      input_transform: "none" or "softmax" (logits -> probabilities along the last axis).
      input_scale: multiplies the (transformed) input, e.g. 1/10 for depth in metres.
      output_activation: None (linear: logits or raw values) or a Keras activation ("softplus", ...),
        applied in float32.
      output_bias: initial bias of the output 1x1 conv (e.g. softplus^-1 of a typical depth).
      skip_connections: U-Net skips from the contracting to the expansive path (paper: yes).
      upsampling: "bilinear" or "nearest".
      height, width: static input size (multiples of 2**len(widths)) or None for dynamic.
      name: model name and layer-name prefix.

    Returns:
      ``keras.Model``: ``{input_key: [B, H, W, in_channels]} -> {output_key: float32 [B, H, W, out_channels]}``.
    """
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be one or more positive ints, got {widths}.")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
    if input_transform not in INPUT_TRANSFORMS:
        raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {input_transform!r}.")
    if upsampling not in ("bilinear", "nearest"):
        raise ValueError(f"upsampling must be 'bilinear' or 'nearest', got {upsampling!r}.")
    if input_key == output_key:
        raise ValueError(f"input_key and output_key must differ, both are {input_key!r}.")
    levels = len(widths)
    check_ttnet_size(height, width, levels)

    source = keras.Input(shape=(height, width, in_channels), name=input_key)
    x = source
    if input_transform == "softmax":
        x = layers.Softmax(axis=-1, name=f"{name}_input_softmax")(x)
    if input_scale != 1.0:
        x = layers.Rescaling(float(input_scale), name=f"{name}_input_scale")(x)

    contracted = []
    for level, filters in enumerate(widths, start=1):
        x = _conv_relu(x, filters, f"{name}_down{level}_conv1")
        x = _conv_relu(x, filters, f"{name}_down{level}_conv2")
        x = layers.MaxPooling2D(2, strides=2, name=f"{name}_down{level}_pool")(x)
        contracted.append(x)

    out_widths = list(widths[-2::-1]) + [widths[0]]  # e.g. 128, 64, 64 for (64, 128, 256)
    for step, filters in enumerate(out_widths):
        level = levels - step
        if step > 0 and skip_connections:
            x = layers.Concatenate(axis=-1, name=f"{name}_up{level}_concat")([x, contracted[level - 1]])
        x = _conv_relu(x, filters, f"{name}_up{level}_conv1")
        x = _conv_relu(x, filters, f"{name}_up{level}_conv2")
        x = layers.UpSampling2D(2, interpolation=upsampling, name=f"{name}_up{level}_upsample")(x)

    x = layers.Conv2D(
        out_channels, 1, bias_initializer=keras.initializers.Constant(output_bias), name=f"{name}_out_conv"
    )(x)
    y = layers.Activation(output_activation or "linear", dtype="float32", name=output_key)(x)
    return keras.Model({input_key: source}, {output_key: y}, name=name)


def ttnet_keys(model: keras.Model) -> tuple[str, str]:
    """(input_key, output_key) of a model built by ``build_ttnet`` (one dict input, one dict output)."""
    inputs = model.input if isinstance(model.input, dict) else None
    outputs = model.output if isinstance(model.output, dict) else None
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"Expected a TTNet with one named dict input and one named dict output, got model {model.name!r} "
            f"with inputs {model.input} and outputs {model.output}."
        )
    return next(iter(inputs)), next(iter(outputs))


# --- training from label pairs -------------------------------------------------------------------

def one_hot_labels(labels, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """int labels [N, H, W(, 1)] -> float32 probabilities [N, H, W, C]; ignored/unknown ids uniform 1/C.

    The TTNet input for a segmentation source when training from labels (a prediction's softmax
    plays that role at inference).
    """
    labels = np.asarray(labels)
    if labels.ndim == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be int [N, H, W] or [N, H, W, 1], got {labels.dtype} {labels.shape}.")
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
    out = np.full(labels.shape + (num_classes,), 1.0 / num_classes, np.float32)
    out[valid] = np.eye(num_classes, dtype=np.float32)[labels[valid]]
    return out


def masked_l1_loss(y_true, y_pred):
    """Mean |y_pred - y_true| over pixels with y_true > 0 (0 = no label), per example [B]."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    valid = ops.cast(y_true > 0.0, "float32")
    err = ops.abs(y_pred - y_true) * valid
    return ops.sum(err, axis=(1, 2, 3)) / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0)


def make_masked_cross_entropy(num_classes: int, ignore_label: int = 255):
    """Loss fn(labels int [B,H,W,1], logits [B,H,W,C]) -> [B]: softmax cross-entropy over labelled pixels."""

    def masked_cross_entropy(y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == 4:
            labels = labels[..., 0]
        valid = ops.logical_and(ops.not_equal(labels, ignore_label),
                                ops.logical_and(labels >= 0, labels < num_classes))
        safe = ops.where(valid, labels, ops.zeros_like(labels))
        nll = ops.sparse_categorical_crossentropy(safe, ops.cast(y_pred, "float32"), from_logits=True)
        valid = ops.cast(valid, "float32")
        return ops.sum(nll * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)

    return masked_cross_entropy


def train_ttnet(
    model: keras.Model,
    sources,
    targets,
    kind: str,
    *,
    epochs: int = 10,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    ignore_label: int = 255,
    verbose: int = 0,
) -> list[float]:
    """Fit a TTNet on label pairs (Adam; the paper's learning rate by default) and return the epoch losses.

    Args:
      model: a ``build_ttnet`` model (its variables are updated in place).
      sources: float [N, H, W, C_in]: the source task's labels in its prediction space (e.g.
        ``one_hot_labels(segmentation, C)`` for a segmentation source, depth [N, H, W, 1] in metres).
      targets: the target task's labels: depth float [N, H, W, 1] (0 = invalid; masked L1) for
        ``kind="regression"``, int class ids [N, H, W, 1] (``ignore_label`` masked; cross-entropy on
        the TTNet's logits) for ``kind="classification"``.
      kind: "regression" or "classification".

    Save the result with ``model.save_weights("x.weights.h5")`` for the ``task_transfer`` relation.
    Note that depth labels have holes (0) where a predicted depth has none; a TTNet that reads depth
    generalises better when trained on predicted depth (e.g. the TTNets of a trained XTasC model).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    in_key, out_key = ttnet_keys(model)
    out_channels = model.output[out_key].shape[-1]
    loss = masked_l1_loss if kind == "regression" else make_masked_cross_entropy(out_channels, ignore_label)
    sources = np.asarray(sources, np.float32)
    targets = np.asarray(targets, np.float32 if kind == "regression" else np.int32)
    if targets.ndim == 3:
        targets = targets[..., None]
    if sources.shape[:3] != targets.shape[:3]:
        raise ValueError(f"sources {sources.shape} and targets {targets.shape} must share [N, H, W].")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss={out_key: loss}, jit_compile=False)
    history = model.fit({in_key: sources}, {out_key: targets}, epochs=epochs, batch_size=batch_size,
                        verbose=verbose, shuffle=True)
    return [float(v) for v in history.history["loss"]]
