"""The example contract: one vocabulary of named tensors shared by every dataset.

Every dataset yields dicts of these keys (unbatched shapes below; batching adds
a leading ``B``). A label that an example does not have is either an absent key
(the whole dataset lacks it) or *masked* (the key is present but holds the
invalid value, so that labelled and unlabelled examples can share one
``tf.data`` structure): depth 0, normals the zero vector, segmentation
``IGNORE_LABEL``.

Units and frames: metres and radians. Camera frame x right, y down, z forward.
Images are uint8 on disk, in datasets and on the wire; models turn them into
float32 in [0, 1].

This module does not import TensorFlow: ``check_element_spec`` accepts any
mapping of name -> object with ``.shape`` and ``.dtype`` (``tf.TensorSpec``,
numpy arrays, Keras tensors).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """Shape (unbatched; None = any size) and dtype of one example key."""

    shape: tuple[int | None, ...]
    dtype: str
    doc: str
    frames: bool = False  # may also carry a leading frame axis n_f (LiDAR sequence examples, oldest first)


H, W = None, None
KEYS: dict[str, KeySpec] = {
    "id": KeySpec((), "int64", "stable integer id of the example (instance-level weighting keys on it)"),
    "image": KeySpec((H, W, 3), "uint8", "RGB frame t"),
    "image_next": KeySpec((H, W, 3), "uint8", "RGB frame t+1"),
    "intrinsics": KeySpec((3, 3), "float32", "pinhole matrix K in pixels"),
    "depth": KeySpec((H, W, 1), "float32", "camera-frame z in metres; 0 = invalid/unlabelled"),
    "normals": KeySpec((H, W, 3), "float32", "unit surface normals in the camera frame; 0 = invalid"),
    "segmentation": KeySpec((H, W, 1), "int32", f"semantic class ids; {IGNORE_LABEL} = ignore"),
    "instance_ids": KeySpec((H, W, 1), "int32", "per-pixel object instance id; 0 = background"),
    "pose": KeySpec((4, 4), "float32", "camera-to-world transform of frame t"),
    "pose_next": KeySpec((4, 4), "float32", "camera-to-world transform of frame t+1"),
    "ego_motion": KeySpec((4, 4), "float32", "maps camera-t points to camera-(t+1) points"),
    # Ground truth of frame t+1 and of the scene's own motion (the synthetic world knows them; ground-truth
    # peers answer with them, and evaluation splits errors by moving and static pixels).
    "depth_next": KeySpec((H, W, 1), "float32", "camera-frame z of frame t+1 in metres; 0 = invalid"),
    "segmentation_next": KeySpec((H, W, 1), "int32", f"semantic class ids of frame t+1; {IGNORE_LABEL} = ignore"),
    "object_motion": KeySpec((H, W, 3), "float32",
                             "displacement (metres, camera-(t+1) axes) of frame t's surface point from t to t+1 "
                             "beyond the camera's motion; 0 on static surfaces"),
    "object_motion_backward": KeySpec((H, W, 3), "float32",
                                      "the same for frame t+1's points from t+1 to t, in camera-t axes"),
    "points": KeySpec((None, 4), "float32", "LiDAR points x, y, z (sensor frame), intensity", frames=True),
    "boxes": KeySpec((None, 7), "float32", "3D boxes x, y, z, length, width, height, heading", frames=True),
    "track_ids": KeySpec((None,), "int64", "track id of each box (-1 = padding)", frames=True),
    # Padded multi-frame LiDAR examples ([n_f, ...]; see tasks/detection.py and data/lidar_sequence.py).
    "points_mask": KeySpec((None,), "float32", "1 = real point, 0 = padding", frames=True),
    "box_mask": KeySpec((None,), "float32", "1 = real labelled box, 0 = padding or unlabelled frame", frames=True),
    "labelled": KeySpec((), "float32", "1 = the frame's boxes are labels, 0 = unlabelled frame", frames=True),
    "num_points_in_box": KeySpec((None,), "int32", "LiDAR points inside each box", frames=True),
}

# The semantic classes of the synthetic world (a Cityscapes-like subset).
CLASS_NAMES = ("road", "sidewalk", "building", "vegetation", "pole", "sky", "car", "pedestrian")
MOVABLE_CLASSES = ("car", "pedestrian")


class ExampleSpecError(ValueError):
    """A dataset does not provide what a task or relation needs."""


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    return str(name).replace("<dtype: '", "").replace("'>", "")


def check_element_spec(
    spec: Mapping[str, Any], required: Iterable[str], who: str, batched: bool = False
) -> None:
    """Raise ``ExampleSpecError`` if ``spec`` lacks a required key or has a wrong dtype/rank.

    Args:
      spec: name -> object with ``.shape`` and ``.dtype`` (e.g. ``dataset.element_spec``).
      required: keys that must be present.
      who: who needs them (used in the message), e.g. ``"task 'depth' (dedicated data)"``.
      batched: whether ``spec`` has a leading batch dimension.
    """
    if not isinstance(spec, Mapping):
        raise ExampleSpecError(f"{who}: expected a dataset of example dicts, got elements of type {type(spec).__name__}.")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ExampleSpecError(
            f"{who} needs example keys {sorted(missing)} but the dataset only has {sorted(spec)}. "
            "Provide a dataset with those keys, or remove the task/relation that needs them."
        )
    for key in required:
        if key not in KEYS:
            continue
        want = KEYS[key]
        got = spec[key]
        rank = len(got.shape) - (1 if batched else 0)
        with_frames = want.frames and rank == len(want.shape) + 1
        if rank != len(want.shape) and not with_frames:
            frames = " (or with a leading frame axis n_f)" if want.frames else ""
            raise ExampleSpecError(
                f"{who}: key '{key}' has shape {tuple(got.shape)} but the example contract says "
                f"{'(B, ' if batched else '('}{', '.join('?' if d is None else str(d) for d in want.shape)})"
                f"{frames} ({want.doc})."
            )
        dims = list(got.shape)[(1 if batched else 0) + (1 if with_frames else 0):]
        for d_got, d_want in zip(dims, want.shape):
            if d_want is not None and d_got is not None and int(d_got) != d_want:
                raise ExampleSpecError(
                    f"{who}: key '{key}' has shape {tuple(got.shape)}; expected trailing dims {want.shape}."
                )
        if _dtype_name(got.dtype) != want.dtype:
            raise ExampleSpecError(
                f"{who}: key '{key}' has dtype {_dtype_name(got.dtype)} but the example contract says {want.dtype} "
                f"({want.doc}). Convert it in the dataset reader."
            )
