"""Standalone fit / evaluate loops for the detector ladder (``benchmarks/detection_ladder.py`` and the tests).

The ladder checks the PointPillars detector (``tasks.detection``) step by step, outside the Experiment
machinery: a ``tf.function`` step over the task's own model and loss, and the task's own metrics.

* ``fit``: Adam (optionally cosine-decayed) on batches from an iterator of numpy dicts (the task's example
  contract, batched); returns the per-step total loss.
* ``evaluate``: AP/APH of the task's ``make_metrics`` over padded arrays (``[E, ...]`` per key), in
  inference mode (BatchNormalization moving statistics).
* ``batches``: shuffled batches of padded arrays, forever (seeded).
* ``kitti_arrays``: the KITTI object frames of a folder as padded one-frame examples (``n_f`` = 1),
  points restricted to a grid.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, Mapping

import numpy as np


def batches(arrays: Mapping[str, np.ndarray], batch_size: int, seed: int = 0) -> Iterator[dict]:
    """Shuffled batches (``batch_size`` examples, each epoch a new permutation) of ``arrays`` [E, ...], forever."""
    count = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(count)
        for start in range(0, count - batch_size + 1, batch_size) if count >= batch_size else [0]:
            index = order[start:start + batch_size]
            yield {k: np.asarray(v)[index] for k, v in arrays.items()}


def make_optimizer(learning_rate: float, steps: int, final_fraction: float = 1.0):
    """Adam at ``learning_rate``, cosine-decayed over ``steps`` to ``final_fraction`` of it (1.0: constant)."""
    import keras

    if final_fraction >= 1.0:
        return keras.optimizers.Adam(learning_rate)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, int(steps)), alpha=final_fraction)
    return keras.optimizers.Adam(schedule)


def fit(task, model, data: Iterable[Mapping[str, np.ndarray]], steps: int, optimizer, log_every: int = 0,
        log=print) -> list[float]:
    """``steps`` optimizer steps of ``task.loss`` (mean over the batch) on batches drawn from ``data``.

    Returns the total loss of every step. ``log_every`` > 0 prints the loss terms every that many steps.
    """
    import tensorflow as tf

    keys = tuple(task.input_keys) + tuple(task.label_keys)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            predictions = model(task.model_inputs(batch), training=True)
            terms = task.loss_terms(batch, predictions)
            loss = tf.reduce_mean(tf.add_n(list(terms.values())))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, {k: tf.reduce_mean(v) for k, v in terms.items()}

    losses, start, it = [], time.monotonic(), iter(data)
    for i in range(int(steps)):
        batch = next(it)
        loss, terms = step({k: tf.convert_to_tensor(batch[k]) for k in keys})
        losses.append(float(loss))
        if log_every and (i % log_every == 0 or i == steps - 1):
            log(f"step {i:5d} {time.monotonic() - start:7.1f}s loss {float(loss):.4f} "
                + " ".join(f"{k.split('_', 1)[-1]} {float(v):.4f}" for k, v in terms.items()))
    return losses


def evaluate(task, model, arrays: Mapping[str, np.ndarray], batch_size: int = 8) -> dict:
    """The task's metrics (AP/APH, LEVEL_1/2, 3D and BEV; ``flow_epe``) over every example of ``arrays``."""
    import tensorflow as tf

    metrics = task.make_metrics()
    count = len(next(iter(arrays.values())))

    @tf.function
    def predict(inputs):
        return model(inputs, training=False)

    for start in range(0, count, batch_size):
        batch = {k: np.asarray(v)[start:start + batch_size] for k, v in arrays.items()}
        inputs = {k: tf.convert_to_tensor(batch[k]) for k in task.input_keys}
        predictions = {k: np.asarray(v) for k, v in predict(inputs).items()}
        metrics.update(batch, predictions)
    return metrics.result()


def kitti_arrays(root, grid, split: str = "training", classes=("Car", "Van"), max_boxes: int = 16) -> dict:
    """The frames of a KITTI object folder as padded one-frame examples ``[E, 1, ...]`` (``lidar_sequence``
    keys), keeping the points inside ``grid`` (a ``BevGrid``; camera field of view only) and the boxes whose
    centres lie in it. ``max_points`` is the largest such frame's point count."""
    from taskology_tf.data import kitti_object, lidar_sequence
    from taskology_tf.tasks.detection import in_grid

    frames = []
    for frame_id in kitti_object.kitti_object_frame_ids(root, split):
        frame = kitti_object.read_kitti_object_frame(root, frame_id, split=split, classes=classes, fov_only=True)
        p, b = frame["points"], frame["boxes"]
        keep, inside = np.asarray(in_grid(p, grid)), np.asarray(in_grid(b, grid))
        frame = dict(frame, points=p[keep], boxes=b[inside], track_ids=frame["track_ids"][inside],
                     num_points_in_box=frame["num_points_in_box"][inside])
        frames.append(frame)
    max_points = max(len(f["points"]) for f in frames)
    examples = [lidar_sequence.stack_sequence([f], 1, max_points, max_boxes) for f in frames]
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}
