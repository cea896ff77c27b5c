"""Built-in relations; importing this package registers them by name."""

from taskology_tf.relations.box_flow import box_flow, box_flow_loss
from taskology_tf.relations.depth_motion import depth_motion, depth_motion_loss
from taskology_tf.relations.depth_motion_segmentation import depth_motion_segmentation, video_consistency_loss
from taskology_tf.relations.depth_normals import depth_normals, depth_normals_loss
from taskology_tf.relations.field_consistency import affine_l1_loss, field_consistency, field_relations
from taskology_tf.relations.task_transfer import task_transfer, task_transfer_loss

__all__ = [
    "box_flow", "box_flow_loss", "depth_motion", "depth_motion_loss", "depth_motion_segmentation",
    "video_consistency_loss", "depth_normals", "depth_normals_loss",
    "affine_l1_loss", "field_consistency", "field_relations", "task_transfer", "task_transfer_loss",
]
