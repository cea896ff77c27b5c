"""Resizing layers shared by the networks: bilinear upsampling that works with run-time sizes, and
cropping to a reference tensor's size. (No TensorFlow import.)"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="taskology_tf")
class BilinearUpsample(layers.Layer):
    """Bilinear upsampling of [B, H, W, C] by an integer ``factor`` -> [B, factor H, factor W, C].

    The same values as ``UpSampling2D(factor, interpolation="bilinear")`` (half-pixel centres,
    edge pixels clamped), written with shifts and a reshape so that it also works when H and W
    are only known at run time (``keras.ops.image.resize`` needs static sizes).
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        if int(factor) < 1:
            raise ValueError(f"BilinearUpsample.factor must be a positive integer, got {factor}.")
        self.factor = int(factor)

    def _upsample_axis(self, x, axis: int):
        f = self.factor
        if axis == 1:
            prev = ops.concatenate([x[:, :1], x[:, :-1]], axis=1)
            nxt = ops.concatenate([x[:, 1:], x[:, -1:]], axis=1)
        else:
            prev = ops.concatenate([x[:, :, :1], x[:, :, :-1]], axis=2)
            nxt = ops.concatenate([x[:, :, 1:], x[:, :, -1:]], axis=2)
        phases = []
        for r in range(f):
            # Output pixel f k + r samples the input at k + d (pixel units), |d| < 1/2.
            d = (2 * r + 1 - f) / (2 * f)
            if d > 0:
                phases.append(x * (1.0 - d) + nxt * d)
            elif d < 0:
                phases.append(x * (1.0 + d) + prev * (-d))
            else:
                phases.append(x)
        y = ops.stack(phases, axis=axis + 1)
        dims = [x.shape[i] if x.shape[i] is not None else ops.shape(x)[i] for i in range(4)]
        dims[0] = -1
        dims[axis] = dims[axis] * f
        return ops.reshape(y, dims)

    def call(self, x):
        if self.factor == 1:
            return x
        return self._upsample_axis(self._upsample_axis(x, 1), 2)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class CropToReference(layers.Layer):
    """[x, reference] -> x[:, :H, :W] with H, W the spatial size of ``reference`` (undoes ``PadToMultiple``)."""

    def call(self, inputs):
        x, reference = inputs
        height, width = reference.shape[1], reference.shape[2]
        if height is None or width is None:
            shape = ops.shape(reference)
            height, width = shape[1], shape[2]
        return x[:, :height, :width, :]

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])
