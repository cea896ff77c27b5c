"""The motion network of depth-from-videos-in-the-wild (Gordon et al. 2019), in Keras 3.

Two stacked RGB frames go through seven stride-2 3x3 convolutions; a global
average of the last one (the bottleneck) gives the camera's rotation and
translation between the frames. With ``object_motion`` a residual translation
field (the per-pixel motion ``delta_t`` of Eq. (2) of the Taskology paper,
before masking) starts from the bottleneck and is refined back to full
resolution through every encoder level. Rotation and translation (and the
field) are multiplied by learned scale factors that start at 0.01, so the
untrained network predicts almost no motion. An optional head predicts the
camera intrinsics.

With ``frame_difference`` the network also sees the difference of the two frames (three more input
channels). Not in the paper's network: at CPU scale (64x128 frames, a few thousand steps, tiny
widths) the plain network does not learn to read the speed from the stacked frames at all (it
predicts one translation for every clip), while with the difference it does (ladder step (b),
benchmarks/README.md).

``build_motion_model`` runs the same network on (t, t+1) and on (t+1, t), so
one model gives both directions (Eq. (3) warps both ways; the backward motion
also allows a cycle-consistency loss).

This module does not import TensorFlow.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

from taskology_tf.models.resize import BilinearUpsample, CropToReference
from taskology_tf.models.unet import ImageToFloat

# Channels of the seven stride-2 encoder convolutions.
MOTION_PRESETS: dict[str, tuple[int, ...]] = {
    "paper": (16, 32, 64, 128, 256, 512, 1024),
    "small": (16, 32, 64, 64, 128, 128, 256),
    "tiny": (8, 16, 16, 32, 32, 64, 64),
}


def get_motion_widths(preset: str | Sequence[int]) -> tuple[int, ...]:
    """Encoder widths of a preset name, or the given sequence of ints."""
    if isinstance(preset, str):
        if preset not in MOTION_PRESETS:
            raise ValueError(f"Unknown motion preset {preset!r}; choose one of {sorted(MOTION_PRESETS)} or give widths.")
        return MOTION_PRESETS[preset]
    widths = tuple(int(w) for w in preset)
    if not widths or min(widths) <= 0:
        raise ValueError(f"motion encoder widths must be positive ints, got {preset!r}.")
    return widths


@keras.saving.register_keras_serializable(package="taskology_tf")
class LearnedScale(layers.Layer):
    """Multiply by a trainable scalar that starts at ``initial`` and is kept >= ``minimum``."""

    def __init__(self, initial: float = 0.01, minimum: float = 0.001, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.initial = float(initial)
        self.minimum = float(minimum)

    def build(self, input_shape):
        minimum = self.minimum
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.initial),
            constraint=lambda w: ops.maximum(w, minimum),
        )

    def call(self, x):
        return ops.cast(x, "float32") * ops.maximum(self.scale, self.minimum)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(initial=self.initial, minimum=self.minimum)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class ResizeLike(layers.Layer):
    """Bring a motion field to the spatial size of ``reference``.

    A [B, 1, 1, C] field is broadcast; otherwise the field is upsampled 2x (bilinear,
    ``BilinearUpsample``) and cropped (``CropToReference``), which inverts a stride-2 "same"
    convolution (``ceil(s / 2) * 2 >= s``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._up = BilinearUpsample(2)
        self._crop = CropToReference()

    def build(self, field_shape, reference_shape):
        # The sub-layers hold no weights.
        self._up.build(field_shape)
        self._crop.built = True
        self.built = True

    def call(self, field, reference):
        if field.shape[1] == 1 and field.shape[2] == 1:
            return field + ops.zeros_like(reference[..., :1], dtype=field.dtype)
        return self._crop([self._up(field), reference])

    def compute_output_shape(self, field_shape, reference_shape):
        return tuple(reference_shape[:3]) + (field_shape[-1],)


@keras.saving.register_keras_serializable(package="taskology_tf")
class IntrinsicsFromBottleneck(layers.Layer):
    """Pinhole K [B, 3, 3] from a [B, 1, 1, 4] bottleneck projection and the image size.

    Focal lengths ``softplus(a) * (W, H)``, principal point ``(b + 0.5) * (W, H)`` (pixels),
    so an untrained head predicts a principal point near the image centre.
    """

    def call(self, raw, image):
        raw = ops.cast(ops.reshape(raw, (-1, 4)), "float32")
        shape = ops.shape(image)
        size = ops.cast(ops.stack([shape[2], shape[1]]), "float32")[None, :]  # (W, H)
        focal = ops.softplus(raw[:, :2]) * size
        centre = (raw[:, 2:] + 0.5) * size
        zero, one = ops.zeros_like(focal[:, 0]), ops.ones_like(focal[:, 0])
        rows = [
            ops.stack([focal[:, 0], zero, centre[:, 0]], axis=-1),
            ops.stack([zero, focal[:, 1], centre[:, 1]], axis=-1),
            ops.stack([zero, zero, one], axis=-1),
        ]
        return ops.stack(rows, axis=-2)

    def compute_output_shape(self, raw_shape, image_shape):
        return (raw_shape[0], 3, 3)


@keras.saving.register_keras_serializable(package="taskology_tf")
class FrameDifference(layers.Layer):
    """[B, H, W, 6] stacked frames -> [B, H, W, 3] second frame minus first."""

    def call(self, frames):
        return frames[..., 3:] - frames[..., :3]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)


def _refine(field, feature, name: str):
    """One refinement level: resize the field to ``feature``'s size, add a correction computed from both."""
    up = ResizeLike(name=f"{name}_resize")(field, feature)
    both = layers.Concatenate(name=f"{name}_concat")([feature, up])
    width = max(4, int(feature.shape[-1]))
    a = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_a")(both)
    b = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_b1")(both)
    b = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_b2")(b)
    delta = layers.Conv2D(3, 1, use_bias=False, name=f"{name}_delta")(layers.Concatenate(name=f"{name}_ab")([a, b]))
    return layers.Add(name=f"{name}_add")([up, delta])


def motion_network(
    widths: Sequence[int],
    object_motion: bool = False,
    learn_intrinsics: bool = False,
    name: str = "motion_net",
    rotation_scale: float = 0.01,
    translation_scale: float = 0.01,
    frame_difference: bool = False,
) -> keras.Model:
    """The one-direction network: stacked frames [B, H, W, 6] floats in [0, 1] -> motion.

    Returns a model with outputs ``rotation`` [B, 3] (Euler angles, radians, see
    ``geometry.rotation_matrix``), ``translation`` [B, 3] (metres, camera-t axes -> camera-(t+1)),
    and, when enabled, ``residual_translation`` [B, H, W, 3] (metres) and ``intrinsics`` [B, 3, 3].
    ``rotation_scale`` / ``translation_scale``: initial values of the learned output scales (the
    paper's network: 0.01; larger values let a short training reach metre-sized motions sooner).
    ``frame_difference``: the convolutions also see ``second - first`` frame (channels 3:6 minus 0:3).
    """
    frames = keras.Input(shape=(None, None, 6), name="frames")
    x = frames
    if frame_difference:
        x = layers.Concatenate(name=f"{name}_with_difference")([frames, FrameDifference(name=f"{name}_difference")(frames)])
    features = [frames]
    for i, width in enumerate(widths):
        # He initialisation keeps the ReLU activations' scale through the seven layers (no normalisation
        # here), so the bottleneck starts with features of order one and the motion can grow quickly.
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer="he_normal",
                          name=f"{name}_conv{i + 1}")(x)
        features.append(x)
    bottleneck = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_bottleneck")(x)
    background = layers.Conv2D(6, 1, use_bias=False, name=f"{name}_background_motion")(bottleneck)
    rotation = layers.Reshape((3,), name=f"{name}_rotation_flat")(background[..., :3])
    translation = layers.Reshape((3,), name=f"{name}_translation_flat")(background[..., 3:])
    rot_scale = LearnedScale(rotation_scale, name=f"{name}_rotation_scale")
    trans_scale = LearnedScale(translation_scale, name=f"{name}_translation_scale")
    outputs = {"rotation": rot_scale(rotation), "translation": trans_scale(translation)}
    if object_motion:
        field = layers.Conv2D(3, 1, use_bias=False, name=f"{name}_residual_seed")(background)
        for level in range(len(features) - 1, -1, -1):
            field = _refine(field, features[level], f"{name}_refine{level}")
        outputs["residual_translation"] = trans_scale(field)
    if learn_intrinsics:
        raw = layers.Conv2D(4, 1, name=f"{name}_intrinsics_raw")(bottleneck)
        outputs["intrinsics"] = IntrinsicsFromBottleneck(name=f"{name}_intrinsics")(raw, frames)
    return keras.Model(frames, outputs, name=name)


def build_motion_model(
    name: str = "motion",
    preset: str | Sequence[int] = "tiny",
    object_motion: bool = False,
    learn_intrinsics: bool = False,
    height: int | None = None,
    width: int | None = None,
    rotation_scale: float = 0.01,
    translation_scale: float = 0.01,
    frame_difference: bool = False,
) -> keras.Model:
    """Both directions of the motion network from a pair of uint8 frames.

    Inputs ``{"image": uint8 [B, H, W, 3], "image_next": uint8 [B, H, W, 3]}``; outputs (float32)
    ``rotation``/``translation`` [B, 3] (t -> t+1) and ``rotation_backward``/``translation_backward``
    (t+1 -> t); with ``object_motion`` also ``residual_translation`` [B, H, W, 3] (points of frame t,
    camera-(t+1) axes) and ``residual_translation_backward`` (points of frame t+1); with
    ``learn_intrinsics`` also ``intrinsics`` [B, 3, 3] (mean of both directions). ``frame_difference``:
    see ``motion_network``.
    """
    widths = get_motion_widths(preset)
    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    image_next = keras.Input(shape=(height, width, 3), dtype="uint8", name="image_next")
    a = ImageToFloat(name=f"{name}_image_to_float")(image)
    b = ImageToFloat(name=f"{name}_image_next_to_float")(image_next)
    net = motion_network(widths, object_motion, learn_intrinsics, name=f"{name}_net",
                         rotation_scale=rotation_scale, translation_scale=translation_scale,
                         frame_difference=frame_difference)
    forward = net(layers.Concatenate(name=f"{name}_stack_forward")([a, b]))
    backward = net(layers.Concatenate(name=f"{name}_stack_backward")([b, a]))
    outputs = {}
    for key in forward:
        if key == "intrinsics":
            outputs[key] = layers.Average(name=f"{name}_intrinsics")([forward[key], backward[key]])
            continue
        outputs[key] = layers.Activation("linear", dtype="float32", name=f"{name}_{key}")(forward[key])
        outputs[f"{key}_backward"] = layers.Activation("linear", dtype="float32", name=f"{name}_{key}_backward")(backward[key])
    return keras.Model({"image": image, "image_next": image_next}, outputs, name=name)
