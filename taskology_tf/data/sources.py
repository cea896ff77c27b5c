"""Gin-configurable data sources: each returns an unbatched ``tf.data.Dataset`` of example dicts.

Bind them in experiment files with scopes, e.g.::

    TaskTrainer.dedicated = @sim_train/synthetic()
    sim_train/synthetic.style = 'sim'
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import gin

# Real-data readers register themselves with gin (kitti_raw, kitti_triplets, kitti_clips, cityscapes_sequence,
# cityscapes_labelled, coco_panoptic); importing them does not load TensorFlow.
from taskology_tf.data import cityscapes, cityscapes7, coco, kitti, label_noise, nyuv2  # noqa: F401
# Dataset transforms that register themselves with gin: color_jitter (photometric augmentation).
from taskology_tf.data import color_jitter  # noqa: F401
# LiDAR sources register themselves with gin: synthetic_lidar, kitti_object, waymo_lidar.
from taskology_tf.data import kitti_object, waymo  # noqa: F401
from taskology_tf.data.synthetic import lidar as _synthetic_lidar  # noqa: F401
from taskology_tf.data.synthetic.dataset import synthetic_dataset

# The built-in synthetic street world (rendering is NumPy; TensorFlow loads when a dataset is made).
synthetic = gin.external_configurable(synthetic_dataset, name="synthetic")


@gin.configurable
def tfrecords(paths: str | Sequence[str] = gin.REQUIRED, compression: str | None = None):
    """Records written by ``taskology data synth`` (or any writer of the project's record format).

    ``paths``: a file, a glob pattern or a list of them.
    """
    from taskology_tf.data.tfrecord import read_examples

    patterns = [paths] if isinstance(paths, str) else list(paths)
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(
                f"No dataset files match {pattern!r}. Create them with `taskology data synth --out_dir DIR ...` "
                "or point tfrecords.paths at existing records."
            )
        files += matches
    return read_examples(files, compression=compression)


@gin.configurable
def mix(sources=gin.REQUIRED, weights: Sequence[float] | None = None, seed: int = 0):
    """Sample examples from several datasets of the same structure (e.g. sim labels + partially labelled real).

    Each source is repeated; with ``weights`` None they are drawn equally often.
    """
    import tensorflow as tf

    sources = list(sources)
    if not sources:
        raise ValueError("mix.sources is empty: give at least one dataset.")
    specs = [s.element_spec for s in sources]
    for i, spec in enumerate(specs[1:], 1):
        if set(spec) != set(specs[0]):
            raise ValueError(
                f"mix: source {i} has keys {sorted(spec)} but source 0 has {sorted(specs[0])}; give them the same "
                "keys (mask missing labels with synthetic.unlabelled instead of dropping them)."
            )
    return tf.data.Dataset.sample_from_datasets([s.repeat() for s in sources], weights=weights, seed=seed)
