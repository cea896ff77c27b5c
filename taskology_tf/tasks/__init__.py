"""Built-in tasks; importing this package registers them by name."""

from taskology_tf.tasks.depth import DepthTask
from taskology_tf.tasks.detection import DetectionTask
from taskology_tf.tasks.field import FieldTask
from taskology_tf.tasks.motion import MotionTask
from taskology_tf.tasks.normals import NormalsTask
from taskology_tf.tasks.segmentation import SegmentationTask
from taskology_tf.tasks.xtasc import XTasCTask

__all__ = ["DepthTask", "DetectionTask", "FieldTask", "MotionTask", "NormalsTask", "SegmentationTask", "XTasCTask"]
