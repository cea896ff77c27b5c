"""Keras optimizers and learning-rate schedules made available to gin (``@keras.optimizers.Adam()``).

``gin.tf`` does not import on current TensorFlow, so the few we need are registered here, once.
Example: ``depth/TaskTrainer.optimizer = @keras.optimizers.Adam()`` with
``depth/keras.optimizers.Adam.learning_rate = 2e-4``.
"""

from __future__ import annotations

import gin
import keras

_OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Lion")
_SCHEDULES = ("CosineDecay", "ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay")


def register_with_gin() -> None:
    """Idempotently register optimizers as ``keras.optimizers.X`` and schedules as ``keras.optimizers.schedules.X``."""
    for name in _OPTIMIZERS:
        if hasattr(keras.optimizers, name):
            _register(getattr(keras.optimizers, name), "keras.optimizers")
    for name in _SCHEDULES:
        _register(getattr(keras.optimizers.schedules, name), "keras.optimizers.schedules")


def _register(cls, module: str) -> None:
    try:
        gin.external_configurable(cls, module=module)
    except ValueError:
        pass  # already registered in this process


register_with_gin()
