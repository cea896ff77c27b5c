"""Built-in tasks; importing this package registers them by name."""

from taskology_tf.tasks.depth import DepthTask
from taskology_tf.tasks.normals import NormalsTask

__all__ = ["DepthTask", "NormalsTask"]
