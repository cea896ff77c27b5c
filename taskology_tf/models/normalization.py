"""Randomized layer normalization of "Depth from videos in the wild" (Gordon et al. 2019, Sec. 5.1).

The depth network of that paper replaces batch normalization by a normalization with per-example
statistics whose mean and variance are multiplied, in training, by Gaussian noise of mean 1: it keeps
the per-example behaviour of layer-style normalization (no dependence on the batch, identical in
training and inference up to the noise) and regularises like batch norm's batch-to-batch noise.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="taskology_tf")
class RandomizedLayerNormalization(keras.layers.Layer):
    """[B, H, W, C] -> [B, H, W, C]: (x - mean) / sqrt(var + eps) * gamma + beta.

    ``mean`` and ``var`` are taken per example and channel over the spatial axes (1, 2); in training
    each is multiplied by ``1 + n`` with ``n`` drawn from a normal distribution truncated at two
    standard deviations (``stddev``, default 0.5 as in the paper), independently per example and channel.
    Statistics are computed in float32 (safe under mixed precision).
    """

    def __init__(self, stddev: float = 0.5, epsilon: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if stddev < 0:
            raise ValueError(f"RandomizedLayerNormalization.stddev must be >= 0, got {stddev}.")
        self.stddev = float(stddev)
        self.epsilon = float(epsilon)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"RandomizedLayerNormalization expects [B, H, W, C] inputs with known C, got {input_shape}.")
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x, training=None):
        x32 = ops.cast(x, "float32")
        mean, var = ops.moments(x32, axes=(1, 2), keepdims=True)
        if training and self.stddev > 0:
            shape = ops.shape(mean)
            mean = mean * (1.0 + keras.random.truncated_normal(shape, stddev=self.stddev, seed=self.seed_generator))
            var = var * (1.0 + keras.random.truncated_normal(shape, stddev=self.stddev, seed=self.seed_generator))
        y = (x32 - mean) * ops.rsqrt(var + self.epsilon) * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        return ops.cast(y, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "epsilon": self.epsilon, "seed": self.seed}
