"""Instance-level task parameters (Vasu et al., "Instance-Level Task Parameters", Sec. 3).

Every training example i and loss term k has a learned s_ik = log sigma_ik^2 (init 0, clamped to [-4, 4]):

    L = mean_i sum_k  c_k exp(-s_ik) l_ik + s_ik,      c = 1/2 for regression, 1 for classification,

i.e. l / (2 sigma^2) + log sigma^2 (Eq. 2) and l / sigma^2 + log sigma^2 (Eq. 4). A high s_ik slows the
learning of term k from example i; noisy labels end with high s, so ``ranking`` exposes them.

The s are optimised by SGD with momentum applied *sparsely* (Sec. 3.1): only the rows of the examples in
the batch move, and rows absent from the batch get no momentum drift. Their gradient is that of the batch
loss above (autodiff through a gather; one row per example). They live in a CPU-resident table (Sec. 4.4:
only the batch's rows go to the accelerator), keyed by the examples' stable int64 ``id`` through a hash
table that assigns the next free row to an id on first sight. Everything is a ``tf.train.Checkpoint``
dependency. Training only: nothing here is used at inference.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import gin
import numpy as np
import tensorflow as tf
from keras import ops

from taskology_tf.weighting.task_level import Weighting, kind_scales

_TABLE_DEVICE = "/CPU:0"


def instance_loss(losses, log_variances, scales):
    """Per-example instance-parameter loss, [B].

    losses: [B, K] per-example term losses; log_variances: [B, K] s = log sigma^2; scales: [K] c
    (1/2 regression, 1 classification). Returns sum_k c_k exp(-s_k) l_k + s_k.
    """
    return ops.sum(scales * ops.exp(-log_variances) * losses + log_variances, axis=-1)


def sparse_momentum_step(values, momentum, grads, learning_rate: float, momentum_rate: float, bound: float):
    """One SGD-with-momentum step of some rows (as ``torch.optim.SGD``: m <- mu m + g; v <- v - lr m), clamped.

    values, momentum, grads: [R, K] the rows' current values, momentum buffers and gradients.
    Returns (new values clamped to [-bound, bound], new momentum).
    """
    m = momentum_rate * momentum + grads
    return ops.clip(values - learning_rate * m, -bound, bound), m


@gin.configurable(denylist=["terms", "kinds"])
class InstanceParameters(Weighting):
    """Learned log sigma^2 per training example and loss term.

    Args:
      terms, kinds: see ``Weighting``.
      capacity: rows of the table (distinct example ids it can hold); 4 bytes x 2 x terms per row on the
        host (e.g. 2**20 rows x 2 terms = 16 MiB).
      learning_rate, momentum: of the sparse SGD (the paper uses learning rates 0.4 to 4).
      bound: s is clamped to [-bound, bound] (the paper: 4).
      epoch_steps: see ``Weighting``; at each epoch end a snapshot is written to ``snapshot_dir`` (if set).
      snapshot_dir: folder for per-epoch snapshots ``epoch-<k>.npz`` (see ``snapshot``); None = none.
    """

    uses_ids = True

    def __init__(self, terms, kinds=None, capacity: int = 2**20, learning_rate: float = 2.0, momentum: float = 0.9,
                 bound: float = 4.0, epoch_steps=None, snapshot_dir: str | None = None):
        super().__init__(terms, kinds, epoch_steps)
        if int(capacity) <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}.")
        if learning_rate <= 0 or not 0 <= momentum < 1 or bound <= 0:
            raise ValueError(
                f"need learning_rate > 0, 0 <= momentum < 1 and bound > 0; got learning_rate={learning_rate}, "
                f"momentum={momentum}, bound={bound}."
            )
        self.capacity = int(capacity)
        self.learning_rate = float(learning_rate)
        self.momentum_rate = float(momentum)
        self.bound = float(bound)
        self.snapshot_dir = snapshot_dir
        self._scales = kind_scales(self.kinds)
        with tf.device(_TABLE_DEVICE):
            shape = [self.capacity, self.num_terms]
            self.log_variances = tf.Variable(tf.zeros(shape), trainable=True, name="log_variances")
            self.momentum = tf.Variable(tf.zeros(shape), trainable=False, name="momentum")
            self.rows_by_id = tf.lookup.experimental.MutableHashTable(tf.int64, tf.int64, default_value=-1,
                                                                      name="rows_by_id")

    @property
    def trainable_variables(self):
        return [self.log_variances]

    @property
    def size(self) -> int:
        """Number of example ids seen so far (rows in use)."""
        return int(self.rows_by_id.size().numpy())

    # --- rows ----------------------------------------------------------------------------------
    def rows(self, ids):
        """Table rows [B] int64 of example ids [B] (any integer dtype), assigning free rows to new ids."""
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise ValueError(f"InstanceParameters: example ids must be integers (the example 'id' key), got {ids.dtype.name}.")
        ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
        with tf.device(_TABLE_DEVICE):
            found = self.rows_by_id.lookup(ids)
            new = tf.unique(tf.gather(ids, tf.reshape(tf.where(found < 0), [-1]))).y
            start = self.rows_by_id.size()
            count = tf.size(new, out_type=tf.int64)
            check = tf.debugging.assert_less_equal(
                start + count, tf.constant(self.capacity, tf.int64),
                message=(f"InstanceParameters: more distinct example ids than capacity={self.capacity}; raise "
                         "InstanceParameters.capacity to at least the number of training examples"),
            )
            with tf.control_dependencies([check]):
                insert = self.rows_by_id.insert(new, start + tf.range(count, dtype=tf.int64))
            with tf.control_dependencies([insert]):
                return tf.reshape(self.rows_by_id.lookup(ids), tf.shape(ids))

    def gather(self, ids):
        """Current s = log sigma^2 of example ids [B]: [B, K] (new ids get rows, at 0)."""
        return tf.gather(self.log_variances, self.rows(ids))

    # --- the loss ------------------------------------------------------------------------------
    def combine(self, losses, *, ids=None):
        """losses: term -> [B] per-example loss; ids: [B] example ids. Returns (mean instance loss, term ->
        mean weight c exp(-s) over the batch)."""
        if ids is None:
            raise ValueError("InstanceParameters.combine needs ids: the batch's example 'id' values ([B] int64).")
        self._check_terms(losses)
        stacked = []
        for t in self.terms:
            x = tf.cast(losses[t], tf.float32)
            if x.shape.rank == 0:
                raise ValueError(f"InstanceParameters needs per-example losses [B]; term {t!r} is a scalar.")
            stacked.append(tf.reduce_mean(x, axis=list(range(1, x.shape.rank))) if x.shape.rank > 1 else x)
        stacked = tf.stack(stacked, axis=-1)  # [B, K]
        s = self.gather(ids)
        total = tf.reduce_mean(instance_loss(stacked, s, self._scales))
        weights = tf.reduce_mean(tf.stop_gradient(self._scales * tf.exp(-s)), axis=0)
        return total, self._weights_dict(weights)

    # --- the sparse SGD --------------------------------------------------------------------------
    def apply_gradients(self, grads, update_inputs=None):
        """``grads``: [gradient of the loss w.r.t. ``log_variances``], an ``IndexedSlices`` (or None: no-op)."""
        (grad,) = grads
        if grad is None:
            return
        if not isinstance(grad, tf.IndexedSlices):
            raise TypeError(
                "InstanceParameters expects a sparse (IndexedSlices) gradient of log_variances, from a gather of "
                f"the batch's rows; got {type(grad).__name__}."
            )
        self.apply_row_gradients(grad.indices, grad.values)

    def apply_row_gradients(self, rows, grads) -> None:
        """Sparse momentum step of ``rows`` [R] with gradients [R, K] (repeated rows are summed first)."""
        rows = tf.cast(rows, tf.int64)
        unique, index = tf.unique(rows)
        grads = tf.math.unsorted_segment_sum(tf.cast(grads, tf.float32), index, tf.shape(unique)[0])
        with tf.device(_TABLE_DEVICE):
            values, momentum = sparse_momentum_step(
                tf.gather(self.log_variances, unique), tf.gather(self.momentum, unique), grads,
                self.learning_rate, self.momentum_rate, self.bound,
            )
            self.momentum.scatter_update(tf.IndexedSlices(momentum, unique))
            self.log_variances.scatter_update(tf.IndexedSlices(values, unique))

    # --- reports -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Current values of every id seen: ``id`` [N] int64, ``log_variance`` [N, K] (row order), ``terms`` [K]."""
        ids, rows = (x.numpy() for x in self.rows_by_id.export())
        order = np.argsort(rows)
        ids, rows = ids[order], rows[order]
        values = tf.gather(self.log_variances, rows).numpy() if rows.size else np.zeros([0, self.num_terms], np.float32)
        return {"id": ids, "log_variance": values, "terms": np.asarray(self.terms)}

    def ranking(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids sorted by decreasing log sigma^2 of ``term`` (likely noisy labels first), with those values."""
        if term not in self.terms:
            raise ValueError(f"term must be one of {list(self.terms)}, got {term!r}.")
        snap = self.snapshot()
        values = snap["log_variance"][:, self.terms.index(term)]
        order = np.argsort(-values, kind="stable")
        return snap["id"][order], values[order]

    def write_snapshot(self, path: str) -> str:
        """Write ``snapshot()`` to ``path`` (.npz) atomically; returns the path."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, epoch=np.int64(self.epoch.numpy()), **self.snapshot())
        os.replace(tmp, path)
        return path

    def end_epoch(self, mean_losses: Mapping[str, Any]) -> None:
        super().end_epoch(mean_losses)
        if self.snapshot_dir:
            self.write_snapshot(os.path.join(self.snapshot_dir, f"epoch-{int(self.epoch.numpy())}.npz"))

    def __repr__(self) -> str:
        return f"InstanceParameters(terms={list(self.terms)}, capacity={self.capacity}, size={self.size})"
