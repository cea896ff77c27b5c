"""Toy tasks and data for the core tests: two tiny conv nets tied by a squared-difference relation."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from taskology_tf.core.relation import Relation
from taskology_tf.core.task import Task

H, W = 4, 6


class ToyTask(Task):
    """A 1x1-conv network from an image to ``channels`` outputs; squared-error supervised loss on ``label``."""

    input_keys = ("image",)

    def __init__(self, name, label, channels, seed, lr=0.05):
        super().__init__(name)
        self.label_keys = (label,)
        self.output_keys = (label,)
        self.label = label
        self.channels = channels
        self.seed = seed
        self.lr = lr

    def build_model(self):
        image = keras.Input((None, None, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1 / 255.0)(image)
        x = keras.layers.Conv2D(4, 1, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(self.seed))(x)
        out = keras.layers.Conv2D(self.channels, 1, kernel_initializer=keras.initializers.GlorotUniform(self.seed + 1))(x)
        return keras.Model({"image": image}, {self.label: out}, name=self.name)

    def loss(self, batch, predictions):
        y = batch[self.label]
        valid = tf.cast(tf.reduce_any(tf.not_equal(y, 0), axis=-1, keepdims=True), tf.float32)
        err = tf.reduce_sum(tf.square(predictions[self.label] - y), axis=-1, keepdims=True) * valid
        return tf.reduce_sum(err, axis=[1, 2, 3]) / tf.maximum(tf.reduce_sum(valid, axis=[1, 2, 3]), 1.0)

    def make_optimizer(self):
        return keras.optimizers.SGD(self.lr)

    def make_metrics(self):
        task = self

        class Mse:
            def __init__(self):
                self.errs = []

            def update(self, batch, preds):
                self.errs.append(np.mean((preds[task.label] - batch[task.label]) ** 2))

            def result(self):
                return {"mse": float(np.mean(self.errs))}

        return Mse()


def agreement_loss(inputs, predictions):
    """Per-example mean squared difference between a's depth and b's first normals channel."""
    a = predictions["a"]["depth"]
    b = predictions["b"]["normals"][..., :1]
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


def make_relation(weight=1.0):
    return Relation("agree", reads={"a": ("depth",), "b": ("normals",)}, loss_fn=agreement_loss, weight=weight)


def make_examples(n, seed=0, unlabelled=()):
    rng = np.random.default_rng(seed)
    ex = {
        "id": np.arange(n, dtype=np.int64) + 1000 * seed,
        "image": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "depth": rng.uniform(1, 2, (n, H, W, 1)).astype(np.float32),
        "normals": rng.normal(size=(n, H, W, 3)).astype(np.float32),
    }
    for key in unlabelled:
        ex[key] = np.zeros_like(ex[key])
    return ex


def dataset(n, seed=0, unlabelled=(), keys=None):
    ex = make_examples(n, seed, unlabelled)
    if keys is not None:
        ex = {k: v for k, v in ex.items() if k in keys}
    return tf.data.Dataset.from_tensor_slices(ex)


@pytest.fixture
def toy():
    class NS:
        pass

    ns = NS()
    ns.task_a = ToyTask("a", "depth", 1, seed=1)
    ns.task_b = ToyTask("b", "normals", 3, seed=3)
    ns.relation = make_relation
    ns.dataset = dataset
    ns.examples = make_examples
    return ns
