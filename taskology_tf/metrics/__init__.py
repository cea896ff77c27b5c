"""Evaluation metrics (numpy): depth errors, surface-normal angular errors, 3D detection AP/APH, and accumulators."""

from taskology_tf.metrics.accumulate import DepthMetrics, NormalsMetrics
from taskology_tf.metrics.detection import DetectionMetrics, average_precision
from taskology_tf.metrics.depth import DEPTH_METRICS, depth_errors, valid_depth_mask
from taskology_tf.metrics.normals import NORMALS_METRICS, angular_error_deg, normals_summary

__all__ = [
    "DetectionMetrics",
    "average_precision",
    "DEPTH_METRICS",
    "NORMALS_METRICS",
    "DepthMetrics",
    "NormalsMetrics",
    "angular_error_deg",
    "depth_errors",
    "normals_summary",
    "valid_depth_mask",
]
