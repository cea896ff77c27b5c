"""A procedural street world rendered by NumPy ray casting.

Modules: ``scene`` (geometry sampler), ``render`` (ray casting of one frame), ``style``
(appearance: "sim" and "real"), ``dataset`` (contract examples and in-memory tf.data datasets).
"""

from taskology_tf.data.synthetic.dataset import render_example, split_seed, synthetic_dataset
from taskology_tf.data.synthetic.scene import Scene, sample_scene

__all__ = ["Scene", "render_example", "sample_scene", "split_seed", "synthetic_dataset"]
