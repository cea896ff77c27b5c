"""Built-in relations; importing this package registers them by name."""

from taskology_tf.relations.depth_normals import depth_normals, depth_normals_loss

__all__ = ["depth_normals", "depth_normals_loss"]
