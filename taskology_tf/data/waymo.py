"""Waymo Open Dataset ``Frame`` records -> the project's TFRecords, and multi-frame LiDAR examples from them.

The ``waymo_open_dataset`` package is not needed: ``frame_messages`` builds message
classes for the subset of ``dataset.proto`` / ``label.proto`` the converter reads
(same field numbers, so the wire format is the dataset's; other fields, e.g. the
camera images, are skipped as unknown fields).

Frames (vehicle frame: x forward, y left, z up, origin on the ground at the rear
axle; metres, radians):

* points come from the range images of every laser (when present; the second
  return on request), with the dataset's documented conversion
  (``range_image_to_points``): row i has inclination ``inclinations[H - 1 - i]``
  (the calibration's beam inclinations, ascending, or ``beam_inclination_min/max``
  spread uniformly), column j azimuth ``pi (1 - 2 (j + 0.5) / W) - az_correction``
  with ``az_correction = atan2(E[1, 0], E[0, 0])`` of the laser extrinsic E; the
  point ``range (cos az cos inc, sin az cos inc, sin inc)`` goes through E to the
  vehicle frame, and for the TOP laser through its per-pixel pose (roll, pitch,
  yaw, x, y, z: vehicle-to-world while that pixel was scanned) and the inverse
  frame pose, which compensates the ego motion during the sweep.
* boxes are ``laser_labels`` (centre, length, width, height, heading, vehicle
  frame), with type, detection difficulty, ``num_lidar_points_in_box`` and a
  track id (a stable 63-bit hash of the label's id string, equal across frames).

``convert_file`` writes one record per frame with ``taskology_tf.data.tfrecord``
(keys in ``FRAME_KEYS``); ``waymo_lidar_dataset`` (gin name ``waymo_lidar``) reads
them back as multi-frame examples (``lidar_sequence.stack_sequence``).
"""

from __future__ import annotations

import collections
import functools
import os
import zlib
from typing import Iterable, Iterator, Sequence

import gin
import numpy as np

from taskology_tf.data import lidar_sequence
from taskology_tf.data.kitti import stable_id

# Enums of dataset.proto / label.proto.
LASER_NAMES = {0: "UNKNOWN", 1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
CAMERA_NAMES = {0: "UNKNOWN", 1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
LABEL_TYPES = {0: "TYPE_UNKNOWN", 1: "TYPE_VEHICLE", 2: "TYPE_PEDESTRIAN", 3: "TYPE_SIGN", 4: "TYPE_CYCLIST"}
TOP_LASER = 1
TYPE_VEHICLE = 1

FRAME_KEYS = {
    "id": "() int64: stable id of the frame (segment name and timestamp)",
    "segment": "() string: the run segment's context.name",
    "timestamp_micros": "() int64: frame start time",
    "vehicle_pose": "[4, 4] float64: vehicle-to-world transform (frame.pose)",
    "points": "[P, 4] float32: x, y, z (vehicle frame), intensity; P = 0 when the frame has no range images",
    "boxes": "[N, 7] float32: x, y, z, length, width, height, heading (vehicle frame)",
    "track_ids": "[N] int64: stable hash of each label's id string",
    "box_types": "[N] int32: Label.Type (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist)",
    "difficulty": "[N] int32: detection_difficulty_level (0 unknown, 1 LEVEL_1, 2 LEVEL_2)",
    "num_points_in_box": "[N] int32: num_lidar_points_in_box",
    "box_speed": "[N, 3] float32: label metadata speed_x, speed_y, speed_z (m/s, vehicle frame)",
    "laser_names": "[L] int32: LaserName of each laser calibration",
    "laser_extrinsics": "[L, 4, 4] float64: laser-to-vehicle transforms",
    "camera_names": "[C] int32: CameraName of each camera calibration",
    "camera_intrinsics": "[C, 9] float64: f_u, f_v, c_u, c_v, k1, k2, p1, p2, k3",
    "camera_extrinsics": "[C, 4, 4] float64: camera-to-vehicle transforms",
    "camera_sizes": "[C, 2] int32: width, height in pixels",
}

# (message, [(field name, number, type, label, message type)]): the subset of the dataset's protos we read.
# Enums are declared as int32 (the same varint wire format). Nested messages are flattened.
_D, _F, _I32, _I64, _S, _B, _M = "double", "float", "int32", "int64", "string", "bytes", "message"
_OPT, _REP, _PACKED = "optional", "repeated", "packed"
_PROTO = {
    "MatrixShape": [("dims", 1, _I32, _REP, None)],
    "MatrixFloat": [("data", 1, _F, _PACKED, None), ("shape", 2, _M, _OPT, "MatrixShape")],
    "MatrixInt32": [("data", 1, _I32, _PACKED, None), ("shape", 2, _M, _OPT, "MatrixShape")],
    "Transform": [("transform", 1, _D, _REP, None)],
    "CameraCalibration": [
        ("name", 1, _I32, _OPT, None), ("intrinsic", 2, _D, _REP, None), ("extrinsic", 3, _M, _OPT, "Transform"),
        ("width", 4, _I32, _OPT, None), ("height", 5, _I32, _OPT, None),
        ("rolling_shutter_direction", 6, _I32, _OPT, None),
    ],
    "LaserCalibration": [
        ("name", 1, _I32, _OPT, None), ("beam_inclinations", 2, _D, _REP, None),
        ("beam_inclination_min", 3, _D, _OPT, None), ("beam_inclination_max", 4, _D, _OPT, None),
        ("extrinsic", 5, _M, _OPT, "Transform"),
    ],
    "ContextStats": [("time_of_day", 2, _S, _OPT, None), ("location", 3, _S, _OPT, None),
                     ("weather", 4, _S, _OPT, None)],
    "Context": [
        ("name", 1, _S, _OPT, None), ("camera_calibrations", 2, _M, _REP, "CameraCalibration"),
        ("laser_calibrations", 3, _M, _REP, "LaserCalibration"), ("stats", 4, _M, _OPT, "ContextStats"),
    ],
    "RangeImage": [
        ("range_image_compressed", 2, _B, _OPT, None), ("camera_projection_compressed", 3, _B, _OPT, None),
        ("range_image_pose_compressed", 4, _B, _OPT, None),
    ],
    "Laser": [("name", 1, _I32, _OPT, None), ("ri_return1", 2, _M, _OPT, "RangeImage"),
              ("ri_return2", 3, _M, _OPT, "RangeImage")],
    "LabelBox": [
        ("center_x", 1, _D, _OPT, None), ("center_y", 2, _D, _OPT, None), ("center_z", 3, _D, _OPT, None),
        ("width", 4, _D, _OPT, None), ("length", 5, _D, _OPT, None), ("height", 6, _D, _OPT, None),
        ("heading", 7, _D, _OPT, None),
    ],
    "LabelMetadata": [
        ("speed_x", 1, _D, _OPT, None), ("speed_y", 2, _D, _OPT, None), ("accel_x", 3, _D, _OPT, None),
        ("accel_y", 4, _D, _OPT, None), ("speed_z", 5, _D, _OPT, None), ("accel_z", 6, _D, _OPT, None),
    ],
    "Label": [
        ("box", 1, _M, _OPT, "LabelBox"), ("metadata", 2, _M, _OPT, "LabelMetadata"), ("type", 3, _I32, _OPT, None),
        ("id", 4, _S, _OPT, None), ("detection_difficulty_level", 5, _I32, _OPT, None),
        ("tracking_difficulty_level", 6, _I32, _OPT, None), ("num_lidar_points_in_box", 7, _I32, _OPT, None),
        ("num_top_lidar_points_in_box", 13, _I32, _OPT, None),
    ],
    "Frame": [
        ("context", 1, _M, _OPT, "Context"), ("timestamp_micros", 2, _I64, _OPT, None),
        ("pose", 3, _M, _OPT, "Transform"), ("lasers", 5, _M, _REP, "Laser"), ("laser_labels", 6, _M, _REP, "Label"),
    ],
}
_PACKAGE = "taskology.waymo_subset"


@functools.lru_cache(maxsize=1)
def frame_messages() -> dict:
    """Message classes (by name: Frame, Label, LaserCalibration, MatrixFloat, ...) for the subset in ``_PROTO``.

    Built in a private descriptor pool (no clash with the real ``waymo_open_dataset`` protos).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="taskology_waymo_subset.proto", package=_PACKAGE, syntax="proto2")
    types = {_D: "TYPE_DOUBLE", _F: "TYPE_FLOAT", _I32: "TYPE_INT32", _I64: "TYPE_INT64", _S: "TYPE_STRING",
             _B: "TYPE_BYTES", _M: "TYPE_MESSAGE"}
    for message, fields in _PROTO.items():
        m = fd.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            f = m.field.add(name=name, number=number, type=getattr(descriptor_pb2.FieldDescriptorProto, types[kind]))
            f.label = (descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL if label == _OPT
                       else descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
            if label == _PACKED:
                f.options.packed = True
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _PROTO}


def parse_frame(data: bytes):
    """A serialized Waymo ``Frame`` -> message (the fields of ``_PROTO``)."""
    frame = frame_messages()["Frame"]()
    try:
        frame.ParseFromString(bytes(data))
    except Exception as err:  # google.protobuf.message.DecodeError
        raise ValueError(f"not a Waymo Open Dataset Frame record ({err}); the converter expects the dataset's "
                         "segment-*.tfrecord files (uncompressed TFRecords of Frame protos).") from None
    return frame


def transform_matrix(transform) -> np.ndarray:
    """[4, 4] float64 of a ``Transform`` message (16 row-major values); ValueError if it has another size."""
    values = np.asarray(transform.transform, np.float64)
    if values.size != 16:
        raise ValueError(f"a Waymo Transform holds 16 row-major values, got {values.size}.")
    return values.reshape(4, 4)


def decode_matrix(compressed: bytes, dtype: str = "float32") -> np.ndarray:
    """A zlib-compressed ``MatrixFloat`` (dtype float32) or ``MatrixInt32`` (int32) -> array of its shape."""
    name = {"float32": "MatrixFloat", "int32": "MatrixInt32"}[dtype]
    matrix = frame_messages()[name]()
    matrix.ParseFromString(zlib.decompress(compressed))
    data = np.asarray(matrix.data, dtype)
    dims = tuple(matrix.shape.dims)
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"{name}: shape {dims} does not match its {data.size} values.")
    return data.reshape(dims)


def encode_matrix(array: np.ndarray) -> bytes:
    """The inverse of ``decode_matrix`` (float arrays -> MatrixFloat, integer arrays -> MatrixInt32)."""
    array = np.asarray(array)
    name = "MatrixInt32" if np.issubdtype(array.dtype, np.integer) else "MatrixFloat"
    matrix = frame_messages()[name]()
    matrix.data.extend(array.reshape(-1).tolist())
    matrix.shape.dims.extend(array.shape)
    return zlib.compress(matrix.SerializeToString())


def uniform_inclinations(inclination_min: float, inclination_max: float, height: int) -> np.ndarray:
    """[height] inclinations spread uniformly (ascending, cell centres) as the dataset does without a table."""
    return inclination_min + (0.5 + np.arange(height)) / height * (inclination_max - inclination_min)


def laser_inclinations(calibration, height: int) -> np.ndarray:
    """[height] ascending beam inclinations (radians) of a ``LaserCalibration``, for a range image ``height`` rows."""
    if len(calibration.beam_inclinations):
        values = np.asarray(calibration.beam_inclinations, np.float64)
        if values.size != height:
            raise ValueError(f"laser {calibration.name}: {values.size} beam_inclinations for a range image of "
                             f"{height} rows.")
        return values
    return uniform_inclinations(calibration.beam_inclination_min, calibration.beam_inclination_max, height)


def rotation_from_euler(roll, pitch, yaw) -> np.ndarray:
    """[..., 3, 3] ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (the dataset's roll-pitch-yaw convention)."""
    roll, pitch, yaw = (np.asarray(a, np.float64) for a in (roll, pitch, yaw))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        np.stack([-sp, cp * sr, cp * cr], -1),
    ], -2)


def pixel_poses(pose_image: np.ndarray) -> np.ndarray:
    """[H, W, 4, 4] vehicle-to-world transforms from a range image pose [H, W, 6] (roll, pitch, yaw, x, y, z)."""
    pose_image = np.asarray(pose_image, np.float64)
    out = np.zeros(pose_image.shape[:-1] + (4, 4))
    out[..., :3, :3] = rotation_from_euler(pose_image[..., 0], pose_image[..., 1], pose_image[..., 2])
    out[..., :3, 3] = pose_image[..., 3:6]
    out[..., 3, 3] = 1.0
    return out


def range_image_to_points(range_image, extrinsic, inclinations, pixel_pose=None, frame_pose=None) -> np.ndarray:
    """[H, W, 3] vehicle-frame x, y, z of every cell of a range image (cells with range <= 0 are meaningless).

    range_image: [H, W] ranges (metres); extrinsic: [4, 4] laser-to-vehicle; inclinations: [H] ascending
    beam inclinations (row 0 of the image is the *highest* beam); pixel_pose: optional [H, W, 4, 4]
    vehicle-to-world transform per cell (TOP laser), then frame_pose [4, 4] (vehicle-to-world of the
    frame) is required and points end in the frame's vehicle frame.
    """
    ranges = np.asarray(range_image, np.float64)
    if ranges.ndim != 2:
        raise ValueError(f"range_image must have shape [H, W], got {ranges.shape}.")
    height, width = ranges.shape
    extrinsic = lidar_sequence.check_transform(extrinsic, "extrinsic")
    inclinations = np.asarray(inclinations, np.float64).reshape(-1)
    if inclinations.size != height:
        raise ValueError(f"inclinations must have one value per row ({height}), got {inclinations.size}.")
    az_correction = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    azimuth = np.pi * (1.0 - 2.0 * (np.arange(width) + 0.5) / width) - az_correction  # [W]
    inclination = inclinations[::-1]  # [H], row 0 = highest
    cos_inc = np.cos(inclination)[:, None]
    sensor = np.stack(np.broadcast_arrays(np.cos(azimuth)[None] * cos_inc * ranges,
                                          np.sin(azimuth)[None] * cos_inc * ranges,
                                          np.sin(inclination)[:, None] * ranges), axis=-1)
    points = sensor @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    if pixel_pose is not None:
        pixel_pose = np.asarray(pixel_pose, np.float64)
        if pixel_pose.shape != (height, width, 4, 4):
            raise ValueError(f"pixel_pose must have shape [{height}, {width}, 4, 4], got {pixel_pose.shape}.")
        if frame_pose is None:
            raise ValueError("frame_pose (vehicle-to-world of the frame) is required with pixel_pose.")
        world = np.einsum("hwij,hwj->hwi", pixel_pose[..., :3, :3], points) + pixel_pose[..., :3, 3]
        to_vehicle = lidar_sequence.invert_transform(frame_pose)
        points = world @ to_vehicle[:3, :3].T + to_vehicle[:3, 3]
    return points


def frame_points(frame, returns: Sequence[int] = (1,)) -> np.ndarray:
    """[P, 4] float32 x, y, z (vehicle frame), intensity of every laser's range image returns (range > 0).

    returns: which returns to include (1 = first, 2 = second). Frames without range images give [0, 4].
    """
    if not set(returns) <= {1, 2} or not returns:
        raise ValueError(f"returns must be a non-empty subset of (1, 2), got {returns!r}.")
    calibrations = {c.name: c for c in frame.context.laser_calibrations}
    frame_pose = transform_matrix(frame.pose) if frame.HasField("pose") else np.eye(4)
    chunks = []
    for laser in sorted(frame.lasers, key=lambda l: l.name):
        first = laser.ri_return1
        if not first.range_image_compressed:
            continue
        if laser.name not in calibrations:
            raise ValueError(f"frame has a range image of laser {laser.name} but no calibration for it.")
        calib = calibrations[laser.name]
        pose = None
        if laser.name == TOP_LASER and first.range_image_pose_compressed:
            pose = pixel_poses(decode_matrix(first.range_image_pose_compressed))
        for r in returns:
            image_msg = first if r == 1 else laser.ri_return2
            if not image_msg.range_image_compressed:
                continue
            image = decode_matrix(image_msg.range_image_compressed)  # [H, W, 4]: range, intensity, elongation, NLZ
            xyz = range_image_to_points(image[..., 0], transform_matrix(calib.extrinsic),
                                        laser_inclinations(calib, image.shape[0]), pose,
                                        frame_pose if pose is not None else None)
            valid = image[..., 0] > 0
            chunks.append(np.concatenate([xyz[valid], image[..., 1][valid][:, None]], axis=1))
    if not chunks:
        return np.zeros((0, 4), np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32)


def track_id(label_id: str) -> int:
    """Stable non-negative int64 id of a label id string (the same object keeps it across frames)."""
    return stable_id(f"waymo_track/{label_id}")


def frame_to_example(frame, returns: Sequence[int] = (1,)) -> dict[str, np.ndarray]:
    """One parsed ``Frame`` -> dict of NumPy arrays with the keys of ``FRAME_KEYS``."""
    labels = list(frame.laser_labels)
    boxes = np.array([[l.box.center_x, l.box.center_y, l.box.center_z, l.box.length, l.box.width, l.box.height,
                       l.box.heading] for l in labels], np.float64).reshape(-1, 7)
    lasers = sorted(frame.context.laser_calibrations, key=lambda c: c.name)
    cameras = sorted(frame.context.camera_calibrations, key=lambda c: c.name)
    intrinsics = np.zeros((len(cameras), 9))
    for i, c in enumerate(cameras):
        values = np.asarray(c.intrinsic, np.float64)[:9]
        intrinsics[i, :values.size] = values
    segment = frame.context.name
    return {
        "id": np.int64(stable_id(f"waymo/{segment}/{frame.timestamp_micros}")),
        "segment": np.asarray(segment.encode("utf-8"), dtype=object),
        "timestamp_micros": np.int64(frame.timestamp_micros),
        "vehicle_pose": transform_matrix(frame.pose) if frame.HasField("pose") else np.eye(4),
        "points": frame_points(frame, returns),
        "boxes": boxes.astype(np.float32),
        "track_ids": np.array([track_id(l.id) for l in labels], np.int64),
        "box_types": np.array([l.type for l in labels], np.int32),
        "difficulty": np.array([l.detection_difficulty_level for l in labels], np.int32),
        "num_points_in_box": np.array([l.num_lidar_points_in_box for l in labels], np.int32),
        "box_speed": np.array([[l.metadata.speed_x, l.metadata.speed_y, l.metadata.speed_z] for l in labels],
                              np.float32).reshape(-1, 3),
        "laser_names": np.array([c.name for c in lasers], np.int32),
        "laser_extrinsics": np.array([transform_matrix(c.extrinsic) for c in lasers], np.float64).reshape(-1, 4, 4),
        "camera_names": np.array([c.name for c in cameras], np.int32),
        "camera_intrinsics": intrinsics,
        "camera_extrinsics": np.array([transform_matrix(c.extrinsic) for c in cameras], np.float64).reshape(-1, 4, 4),
        "camera_sizes": np.array([[c.width, c.height] for c in cameras], np.int32).reshape(-1, 2),
    }


def read_frame_records(path) -> Iterator[bytes]:
    """The serialized ``Frame`` records of one (uncompressed) Waymo TFRecord file, in order."""
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Waymo file {path!r} does not exist; give segment-*.tfrecord files of the "
                                "Waymo Open Dataset (perception, v1 format).")
    for raw in tf.data.TFRecordDataset(path):
        yield raw.numpy()


def convert_file(input_path, output_path, *, returns: Sequence[int] = (1,), compression: str | None = None) -> int:
    """Convert one Waymo TFRecord file into one project TFRecord file (one record per frame); returns the count."""
    from taskology_tf.data.tfrecord import write_examples

    if os.path.abspath(os.fspath(input_path)) == os.path.abspath(os.fspath(output_path)):
        raise ValueError(f"output {output_path!r} would overwrite the input; choose another output folder.")
    examples = (frame_to_example(parse_frame(raw), returns) for raw in read_frame_records(input_path))
    return write_examples(examples, output_path, compression=compression)


def convert_files(inputs: Iterable[str], output_dir, *, returns: Sequence[int] = (1,),
                  compression: str | None = None) -> list[str]:
    """Convert Waymo files (paths or glob patterns) into ``output_dir/<same name>``; returns the written paths."""
    import glob

    paths: list[str] = []
    for pattern in ([inputs] if isinstance(inputs, str) else list(inputs)):
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"no Waymo files match {pattern!r}.")
        paths += matches
    output_dir = os.fspath(output_dir)
    names = [os.path.basename(p) for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"inputs share file names {duplicates}; their outputs in {output_dir!r} would collide.")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for path, name in zip(paths, names):
        out = os.path.join(output_dir, name)
        convert_file(path, out, returns=returns, compression=compression)
        written.append(out)
    return written


def read_converted(path, compression: str | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The records of one file written by ``convert_file``, in order, as dicts of NumPy arrays.

    Decodes the project's record format (a ``tf.train.Example`` of serialized tensors per key) in Python,
    without the example-contract checks of ``tfrecord.read_examples`` (these frames are per-frame data).
    """
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"converted Waymo file {path!r} does not exist; create it with "
                                "`taskology data convert-waymo --input ... --output DIR`.")
    for raw in tf.data.TFRecordDataset(path, compression_type=(compression or "").upper()):
        example = tf.train.Example.FromString(raw.numpy())
        record = {}
        for key, feature in example.features.feature.items():
            proto = tensor_pb2.TensorProto()
            proto.ParseFromString(feature.bytes_list.value[0])
            record[key] = tf.make_ndarray(proto)
        missing = [k for k in ("segment", "timestamp_micros", "vehicle_pose", "points", "boxes", "track_ids",
                               "box_types", "num_points_in_box") if k not in record]
        if missing:
            raise ValueError(f"{path}: a record lacks {missing}; is it a file written by the Waymo converter?")
        yield record


def _as_frame(record: dict, classes, min_points: int, label_fraction: float, label_seed: int) -> dict:
    """A converted record (NumPy values) -> the per-frame dict ``stack_sequence`` takes."""
    segment = np.asarray(record["segment"]).item()
    segment = segment.decode("utf-8") if isinstance(segment, bytes) else str(segment)
    keep = np.isin(record["box_types"], classes) & (record["num_points_in_box"] >= min_points)
    key = f"waymo/{segment}/{int(record['timestamp_micros'])}"
    return {
        "id": record["id"],
        "segment": segment,
        "points": record["points"],
        "boxes": record["boxes"][keep],
        "track_ids": record["track_ids"][keep],
        "num_points_in_box": record["num_points_in_box"][keep],
        "pose": record["vehicle_pose"],
        "timestamp": float(record["timestamp_micros"]) * 1e-6,
        "labelled": float(lidar_sequence.frame_labelled(key, label_fraction, label_seed)),
    }


def sequence_examples(records: Iterable[dict], *, n_f: int = 3, stride: int = 5, max_points: int = 200000,
                      max_boxes: int = 128, classes: Sequence[int] = (TYPE_VEHICLE,), min_points: int = 1,
                      label_fraction: float = 1.0, label_seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Multi-frame examples from converted frame records in file order (segments contiguous, time-ordered).

    Every frame that has ``(n_f - 1) * stride`` earlier frames of its segment becomes the latest frame of
    one example (frames ``stride`` apart: 5 = 0.5 s at 10 Hz). Boxes of ``classes`` (Label.Type ids) with
    at least ``min_points`` LiDAR points are kept; ``label_fraction`` keeps the labels of that fraction
    of frames (fixed per frame with ``label_seed``).
    """
    span = (n_f - 1) * stride + 1
    buffer: collections.deque = collections.deque(maxlen=span)
    classes = np.asarray(list(classes), np.int32)
    for record in records:
        frame = _as_frame(record, classes, min_points, label_fraction, label_seed)
        if buffer and (buffer[-1]["segment"] != frame["segment"] or buffer[-1]["timestamp"] >= frame["timestamp"]):
            buffer.clear()
        buffer.append(frame)
        if len(buffer) == span:
            window = [buffer[k * stride] for k in range(n_f)]
            yield lidar_sequence.stack_sequence(window, n_f, max_points, max_boxes)


@gin.configurable("waymo_lidar")
def waymo_lidar_dataset(
    paths=gin.REQUIRED,
    *,
    n_f: int = 3,
    stride: int = 5,
    max_points: int = 200000,
    max_boxes: int = 128,
    classes: Sequence[int] = (TYPE_VEHICLE,),
    min_points: int = 1,
    label_fraction: float = 1.0,
    label_seed: int = 0,
    compression: str | None = None,
):
    """Multi-frame LiDAR examples (``lidar_sequence.SEQUENCE_KEYS``) from records written by ``convert_files``.

    paths: a file, a glob pattern or a list of them (files are read in sorted order). See
    ``sequence_examples`` for the other arguments.
    """
    import glob

    import tensorflow as tf

    patterns = [paths] if isinstance(paths, str) else list(paths)
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"no converted Waymo records match {pattern!r}; create them with "
                                    "`taskology data convert-waymo --input ... --output DIR`.")
        files += matches
    options = dict(n_f=int(n_f), stride=int(stride), max_points=int(max_points), max_boxes=int(max_boxes),
                   classes=tuple(classes), min_points=int(min_points), label_fraction=float(label_fraction),
                   label_seed=int(label_seed))

    def generate():
        for path in files:  # one file at a time: a window never spans two files
            yield from sequence_examples(read_converted(path, compression), **options)

    sizes = {"n_f": options["n_f"], "max_points": options["max_points"], "max_boxes": options["max_boxes"]}
    signature = {k: tf.TensorSpec(tuple(sizes.get(d, d) for d in shape), tf.as_dtype(dtype))
                 for k, (shape, dtype, _) in lidar_sequence.SEQUENCE_KEYS.items()}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)
