"""Geometry as pure ``keras.ops`` functions (no TensorFlow import): cameras, transforms, resampling, SSIM, normals, warping, rotated boxes.

Camera frame x right, y down, z forward (metres); pixels ``(u, v) = (column,
row)`` with centres at integer coordinates; 4x4 transforms act on column
vectors (``X' = R X + t``).
"""

from taskology_tf.geometry.boxes import bev_iou, box_corners_3d, box_corners_bev, heading_difference, iou_3d, rotated_nms, wrap_angle
from taskology_tf.geometry.camera import backproject, pixel_grid, project, scale_intrinsics
from taskology_tf.geometry.normals import cosine_distance, normals_from_depth
from taskology_tf.geometry.resample import bilinear_sample
from taskology_tf.geometry.ssim import ssim_distance, ssim_map
from taskology_tf.geometry.transforms import apply, compose, euler_angles, invert, rotation_matrix, rotation_y
from taskology_tf.geometry.warp import inverse_warp, reproject

__all__ = [
    "apply",
    "backproject",
    "bev_iou",
    "bilinear_sample",
    "box_corners_3d",
    "box_corners_bev",
    "compose",
    "euler_angles",
    "cosine_distance",
    "heading_difference",
    "inverse_warp",
    "invert",
    "iou_3d",
    "normals_from_depth",
    "pixel_grid",
    "project",
    "reproject",
    "rotation_matrix",
    "rotated_nms",
    "rotation_y",
    "scale_intrinsics",
    "ssim_distance",
    "ssim_map",
    "wrap_angle",
]
