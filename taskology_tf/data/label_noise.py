"""Controlled label corruption, fixed before training (instance-level task parameters, Sec. 5).

The paper corrupts a fraction (20% or 40%) of the *training* labels of one task, "applied to
a subset of training dataset before training and kept fixed for the entire training run":

* segmentation: "a random permutation of semantic labels in the scene" (``permute_labels``);
* Cityscapes disparity: "uniform noise in the range 0.0 to 0.2" added to the labels
  (``add_uniform_noise``; the range is in the units of the ``depth`` key, e.g. the
  ``disparity_scaled`` target of ``taskology_tf.data.cityscapes7``).

Everything here is a deterministic function of the example ``id`` and a ``seed``, so the
same examples are corrupt, in the same way, in every epoch, every run and every process,
whatever the order in which the examples arrive:

* selection: example ``id`` is corrupt iff ``selection_score(id, seed) < threshold``, where the
  score is a uniform number in [0, 1) from a hash of (seed, id). ``threshold = fraction`` gives
  each example probability ``fraction`` (about that share of a dataset); ``selection_threshold``
  picks the threshold that selects exactly ``round(fraction * len(ids))`` of given ids
  (``corrupt_id_set``). Larger fractions select supersets for the same seed.
* corruption: drawn from a NumPy generator seeded with (seed, id, kind).

``corrupt_example`` is the pure NumPy function per example; ``corrupt_labels`` applies it to a
``tf.data`` dataset (through ``tf.numpy_function``, so both give identical labels) and adds a
boolean flag key (default ``"corrupt_<key>"``) so that a report can score how well the
corrupt examples are detected (``taskology_tf.metrics.noise_detection``).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import gin
import numpy as np

from taskology_tf.data.example import IGNORE_LABEL

KINDS = ("permutation", "uniform")
DEFAULT_KIND = {"segmentation": "permutation", "depth": "uniform"}
AMONG = ("present", "all")
_KIND_CODE = {"permutation": 1, "uniform": 2}


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def _check_fraction(fraction) -> float:
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}.")
    return float(fraction)


# ---------------------------------------------------------------------------------------------------- selection

def selection_score(example_id: int, seed: int) -> float:
    """Uniform number in [0, 1) (53-bit, exact in float64) from a hash of (seed, example_id)."""
    digest = hashlib.blake2b(f"label_noise/{_check_seed(seed)}/{int(example_id)}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def selection_threshold(ids: Iterable[int], fraction: float, seed: int) -> float:
    """Threshold under which exactly ``round(fraction * n)`` of the ``n`` distinct ``ids`` score."""
    fraction = _check_fraction(fraction)
    scores = np.sort(np.array([selection_score(i, seed) for i in set(int(i) for i in ids)], np.float64))
    k = int(round(fraction * scores.size))
    return 1.0 if k >= scores.size else float(scores[k])


def is_corrupt(example_id: int, threshold: float, seed: int) -> bool:
    """Whether ``example_id`` is selected: ``selection_score(example_id, seed) < threshold``."""
    return selection_score(example_id, seed) < threshold


def corrupt_id_set(ids: Iterable[int], fraction: float, seed: int, exact: bool = True) -> set[int]:
    """The ids ``corrupt_labels`` corrupts: with ``exact``, the ``round(fraction * n)`` of the ``n`` distinct
    ``ids`` with the lowest scores (``corrupt_labels(..., ids=ids)``); else those scoring below ``fraction``
    (``corrupt_labels(..., ids=None)``)."""
    ids = [int(i) for i in ids]
    threshold = selection_threshold(ids, fraction, seed) if exact else _check_fraction(fraction)
    return {i for i in ids if is_corrupt(i, threshold, seed)}


def example_rng(example_id: int, seed: int, kind: str) -> np.random.Generator:
    """The generator of ``kind``'s corruption of one example (same seed, id and kind -> same draws)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    i = int(example_id) & (2**64 - 1)
    return np.random.default_rng([_check_seed(seed), i & 0xFFFFFFFF, i >> 32, _KIND_CODE[kind]])


# --------------------------------------------------------------------------------------------------- corruptions

def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(n) without fixed points (n >= 2), by rejection."""
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def permute_labels(labels, num_classes: int, rng: np.random.Generator, *, among: str = "present",
                   derangement: bool = True, ignore_label: int = IGNORE_LABEL) -> tuple[np.ndarray, dict[int, int]]:
    """Relabel every pixel through one random permutation of class ids; ``ignore_label`` pixels are untouched.

    Args:
      labels: integer class ids, any shape (e.g. [H, W, 1]), values in [0, num_classes) or ``ignore_label``.
      among: "present" permutes the classes present in this image among themselves ("a random
        permutation of semantic labels in the scene"); when only one class is present it is mapped to
        another class drawn from [0, num_classes). "all" permutes all ``num_classes`` ids.
      derangement: no class keeps its id (every labelled pixel changes); False allows fixed points.
    Returns:
      (corrupted labels of the same shape and dtype, {old class id: new class id} for the classes present).
    """
    if among not in AMONG:
        raise ValueError(f"among must be one of {AMONG}, got {among!r}.")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must hold integer class ids, got dtype {labels.dtype}.")
    valid = labels != ignore_label
    present = np.unique(labels[valid]).astype(np.int64)
    bad = present[(present < 0) | (present >= num_classes)]
    if bad.size:
        raise ValueError(f"labels must be in [0, {num_classes}) or {ignore_label}, found {bad.tolist()[:10]}.")
    table = np.arange(num_classes)
    if among == "all":
        table = _derangement(num_classes, rng) if derangement else rng.permutation(num_classes)
    elif present.size == 1:
        others = [c for c in range(num_classes) if c != present[0]] if derangement else list(range(num_classes))
        table[present[0]] = rng.choice(others)
    elif present.size > 1:
        perm = _derangement(present.size, rng) if derangement else rng.permutation(present.size)
        table[present] = present[perm]
    out = labels.copy()
    out[valid] = table[labels[valid]].astype(labels.dtype)
    return out, {int(c): int(table[c]) for c in present}


def add_uniform_noise(values, low: float, high: float, rng: np.random.Generator, *,
                      floor: float = 1e-6) -> np.ndarray:
    """Add i.i.d. uniform noise in [low, high) to every valid (> 0, finite) value; invalid values stay as they are.

    A valid value pushed to or below 0 (possible only when ``low`` < 0) is clipped to ``floor``, so valid
    pixels stay valid. Returns float32 of the same shape.
    """
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"need finite low <= high for the uniform noise, got low={low!r}, high={high!r}.")
    values = np.asarray(values, np.float32)
    valid = np.isfinite(values) & (values > 0)
    noise = rng.uniform(low, high, size=values.shape)
    noisy = np.maximum(values.astype(np.float64) + noise, floor)
    return np.where(valid, noisy, values).astype(np.float32)


def corrupt_example(labels, example_id: int, seed: int, kind: str, *, num_classes: int | None = None,
                    low: float = 0.0, high: float = 0.2, among: str = "present", derangement: bool = True,
                    ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """The corrupted labels of one example (always corrupts; selection is ``is_corrupt``'s job).

    ``kind`` "permutation" (needs ``num_classes``; see ``permute_labels``) or "uniform" (see
    ``add_uniform_noise``), drawn from ``example_rng(example_id, seed, kind)``.
    """
    rng = example_rng(example_id, seed, kind)
    if kind == "permutation":
        if num_classes is None:
            raise ValueError("kind='permutation' needs num_classes (the number of segmentation classes).")
        return permute_labels(labels, num_classes, rng, among=among, derangement=derangement,
                              ignore_label=ignore_label)[0]
    return add_uniform_noise(labels, low, high, rng)


def maybe_corrupt(labels, example_id: int, threshold: float, seed: int, kind: str, **params):
    """(labels, False) for a clean example, (``corrupt_example(...)``, True) for a selected one."""
    if not is_corrupt(example_id, threshold, seed):
        return np.asarray(labels), False
    return corrupt_example(labels, example_id, seed, kind, **params), True


# ------------------------------------------------------------------------------------------------------ tf.data

@gin.configurable("corrupt_labels")
def corrupt_labels(dataset, key: str, fraction: float, seed: int, kind: str | None = None, *,
                   ids: Iterable[int] | str | None = None, num_classes: int | None = None, low: float = 0.0,
                   high: float = 0.2, among: str = "present", derangement: bool = True,
                   flag_key: str | None = "", num_parallel_calls: int | None = None):
    """Corrupt the ``key`` labels of a fixed subset of an unbatched dataset of example dicts.

    Args:
      dataset: unbatched ``tf.data.Dataset`` of dicts with a scalar int64 ``id`` and ``key``.
      key: the label to corrupt, e.g. "segmentation" or "depth".
      fraction: share of examples to corrupt, in [0, 1].
      seed: non-negative integer; the same seed selects and corrupts the same ids in every run.
      kind: "permutation" or "uniform"; default by key (segmentation -> permutation, depth -> uniform).
      ids: all ids of the dataset (e.g. from the reader's file listing): the exact
        ``round(fraction * len(ids))`` of them are corrupted. None: each id independently with
        probability ``fraction``. ``"dataset"``: read all ids from ``dataset`` itself (one pass over its
        ``id`` key; the dataset must be finite), then as for a list.
      num_classes, among, derangement: for "permutation" (``permute_labels``).
      low, high: the uniform noise range for "uniform", in the units of ``key``.
      flag_key: name of the added bool scalar key telling whether the example is corrupt; "" means
        ``"corrupt_<key>"``, None adds none.
    Returns:
      the dataset with ``key`` corrupted where selected (other keys untouched), in the same order. The
      corrupt ids are ``corrupt_id_set(all ids, fraction, seed, exact=ids is not None)``.

    In gin: ``noisy/corrupt_labels.dataset = @cityscapes7()``, ``noisy/corrupt_labels.key = 'segmentation'``,
    ..., then use ``@noisy/corrupt_labels()`` as a data source.
    """
    import tensorflow as tf

    fraction = _check_fraction(fraction)
    seed = _check_seed(seed)
    kind = DEFAULT_KIND.get(key) if kind is None else kind
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (no default for key {key!r}), got {kind!r}.")
    if kind == "permutation" and num_classes is None:
        raise ValueError("kind='permutation' needs num_classes (the number of segmentation classes).")
    spec = dataset.element_spec
    if not isinstance(spec, dict) or key not in spec or "id" not in spec:
        have = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"corrupt_labels needs a dataset of example dicts with keys 'id' and {key!r}; got {have}.")
    if len(spec["id"].shape) != 0:
        raise ValueError(f"corrupt_labels needs an unbatched dataset (scalar 'id'), got id shape {spec['id'].shape}; "
                         "corrupt before batching.")
    flag_key = f"corrupt_{key}" if flag_key == "" else flag_key
    if flag_key is not None and flag_key in spec:
        raise ValueError(f"the dataset already has a key {flag_key!r}; pass another flag_key.")
    if isinstance(ids, str):
        if ids != "dataset":
            raise ValueError(f"ids must be a list of example ids, 'dataset' or None, got {ids!r}.")
        if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError("corrupt_labels(ids='dataset') needs a finite dataset (corrupt before repeat()).")
        ids = [int(i) for i in dataset.map(lambda e: e["id"]).as_numpy_iterator()]
    threshold = fraction if ids is None else selection_threshold(ids, fraction, seed)
    label_spec = spec[key]
    params = dict(num_classes=num_classes, low=low, high=high, among=among, derangement=derangement)

    def fn(labels, example_id):
        out, flag = maybe_corrupt(labels, int(example_id), threshold, seed, kind, **params)
        return np.asarray(out, label_spec.dtype.as_numpy_dtype), np.bool_(flag)

    def apply(example):
        labels, flag = tf.numpy_function(fn, [example[key], example["id"]], [label_spec.dtype, tf.bool],
                                         stateful=False)
        labels.set_shape(label_spec.shape)
        flag.set_shape([])
        out = dict(example)
        out[key] = labels
        if flag_key is not None:
            out[flag_key] = flag
        return out

    calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    return dataset.map(apply, num_parallel_calls=calls, deterministic=True)
