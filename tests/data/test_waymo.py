"""Tests of the Waymo converter: range-image geometry, Frame parsing, records and multi-frame examples."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.data import lidar_sequence as ls
from taskology_tf.data import waymo
from taskology_tf.data.tfrecord import read_examples
from taskology_tf.testing import load_script

ROOT = Path(__file__).resolve().parents[2]
WAYMO = ROOT.parent / "shared" / "data" / "waymo"
needs_waymo = pytest.mark.skipif(
    not (WAYMO / "val_boxes_only.tfrecord").is_file(),
    reason=f"real Waymo frames not found at {WAYMO} (../shared/data is absent on fresh clones)",
)
REAL_FILES = {"pvps_data_one_frame.tfrecord": (75, 37), "val_boxes_only.tfrecord": (18, 1)}  # labels, vehicles


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _transform(rotation, translation):
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotation, translation
    return t


# ----------------------------------------------------------------------------------------------
# Range-image geometry (the dataset's documented conventions).


def test_rotation_from_euler_is_yaw_pitch_roll():
    roll, pitch, yaw = 0.1, -0.2, 0.7
    np.testing.assert_allclose(waymo.rotation_from_euler(roll, pitch, yaw), _rz(yaw) @ _ry(pitch) @ _rx(roll),
                               atol=1e-12)
    grid = waymo.rotation_from_euler(np.zeros((2, 3)), np.zeros((2, 3)), np.full((2, 3), 0.5))
    assert grid.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(grid[1, 2], _rz(0.5), atol=1e-12)


def test_columns_sweep_clockwise_from_behind_and_rows_from_the_top():
    # W = 4: column c looks at azimuth pi (1 - 2 (c + 0.5) / 4) = 135, 45, -45, -135 degrees.
    inclinations = np.array([-0.2, 0.0, 0.1])  # ascending, as in the calibration
    ranges = np.zeros((3, 4))
    ranges[1, 1] = 10.0  # middle row: inclination 0
    ranges[0, 2] = 10.0  # top row: the highest beam, +0.1
    points = waymo.range_image_to_points(ranges, np.eye(4), inclinations)
    s = 10.0 / np.sqrt(2)
    np.testing.assert_allclose(points[1, 1], [s, s, 0.0], atol=1e-9)  # forward-left
    np.testing.assert_allclose(points[0, 2], [np.cos(0.1) * s, -np.cos(0.1) * s, 10 * np.sin(0.1)], atol=1e-9)
    # A laser turned about z sees the same vehicle-frame directions (columns are vehicle azimuths) ...
    turned = waymo.range_image_to_points(ranges, _transform(_rz(np.pi / 2), [0, 0, 0]), inclinations)
    np.testing.assert_allclose(turned[1, 1], points[1, 1], atol=1e-9)
    # ... and a laser mounted elsewhere shifts them by its position.
    moved = waymo.range_image_to_points(ranges, _transform(np.eye(3), [1.5, -0.5, 2.0]), inclinations)
    np.testing.assert_allclose(moved[1, 1], points[1, 1] + [1.5, -0.5, 2.0], atol=1e-9)


def _ground_range_image(inclinations, width, laser_height):
    """Ranges at which each row (row 0 = highest beam) meets the ground ``laser_height`` below the laser."""
    rows = np.asarray(inclinations)[::-1]
    ranges = np.where(rows < 0, laser_height / np.sin(-np.minimum(rows, -1e-9)), 0.0)
    return np.repeat(ranges[:, None], width, axis=1)


def test_ground_plane_range_image_lands_on_the_ground():
    inclinations = np.array([-0.45, -0.3, -0.22, -0.1, -0.04, 0.02])  # not symmetric: a row flip would show
    ranges = _ground_range_image(inclinations, 16, laser_height=2.1)
    extrinsic = _transform(_rz(0.4), [1.2, 0.3, 2.1])  # laser 2.1 m above the vehicle origin (on the ground)
    points = waymo.range_image_to_points(ranges, extrinsic, inclinations)
    valid = ranges > 0
    assert valid.sum() == 5 * 16
    np.testing.assert_allclose(points[valid][:, 2], 0.0, atol=1e-9)
    horizontal = np.linalg.norm(points[..., :2] - [1.2, 0.3], axis=-1)
    np.testing.assert_allclose(horizontal[1:], np.broadcast_to((2.1 / np.tan(-inclinations[::-1][1:]))[:, None],
                                                               (5, 16)), rtol=1e-9)
    flipped = waymo.range_image_to_points(ranges, extrinsic, inclinations[::-1])
    assert np.abs(flipped[valid][:, 2]).max() > 0.5


def test_pixel_poses_compensate_ego_motion():
    inclinations = np.array([-0.3, -0.2, -0.1])
    ranges = _ground_range_image(inclinations, 8, laser_height=2.0)
    extrinsic = _transform(np.eye(3), [0, 0, 2.0])
    frame_pose = _transform(waymo.rotation_from_euler(0.01, -0.02, 1.1), [100.0, -40.0, 5.0])
    plain = waymo.range_image_to_points(ranges, extrinsic, inclinations)
    euler = np.array([0.01, -0.02, 1.1, 100.0, -40.0, 5.0])
    same = np.broadcast_to(euler, (3, 8, 6))
    np.testing.assert_allclose(
        waymo.range_image_to_points(ranges, extrinsic, inclinations, waymo.pixel_poses(same), frame_pose), plain,
        atol=1e-8)
    # Columns scanned when the vehicle was 0.8 m further along its heading land 0.8 m further forward.
    later = np.array(same)
    later[:, 4:, 3:6] += frame_pose[:3, :3] @ [0.8, 0.0, 0.0]  # 0.8 m along the vehicle's own x
    shifted = waymo.range_image_to_points(ranges, extrinsic, inclinations, waymo.pixel_poses(later), frame_pose)
    np.testing.assert_allclose(shifted[:, :4], plain[:, :4], atol=1e-8)
    np.testing.assert_allclose(shifted[:, 4:] - plain[:, 4:], np.broadcast_to([0.8, 0, 0], (3, 4, 3)), atol=1e-8)
    with pytest.raises(ValueError, match="frame_pose"):
        waymo.range_image_to_points(ranges, extrinsic, inclinations, waymo.pixel_poses(same))


def test_uniform_inclinations_and_matrix_codec():
    np.testing.assert_allclose(waymo.uniform_inclinations(-1.0, 1.0, 4), [-0.75, -0.25, 0.25, 0.75])
    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(waymo.decode_matrix(waymo.encode_matrix(image)), image)
    ints = np.arange(12, dtype=np.int32).reshape(2, 6)
    np.testing.assert_array_equal(waymo.decode_matrix(waymo.encode_matrix(ints), "int32"), ints)


# ----------------------------------------------------------------------------------------------
# Frames built with the converter's own message classes.

INCLINATIONS = np.array([-0.4, -0.3, -0.2, -0.12, -0.05, 0.03])
WIDTH = 24
TOP_HEIGHT = 2.0


def _make_frame(k: int, *, segment="seg_a") -> bytes:
    """A frame k of a segment driving 1 m per frame along world +x, with a TOP and a FRONT laser seeing
    flat ground, two labels (a parked car, a pedestrian) and one camera calibration."""
    m = waymo.frame_messages()
    frame = m["Frame"]()
    frame.context.name = segment
    frame.timestamp_micros = 1_000_000 + 100_000 * k
    pose = _transform(_rz(0.2), [1000.0 + k * np.cos(0.2), 2000.0 + k * np.sin(0.2), 10.0])
    frame.pose.transform.extend(pose.ravel().tolist())
    top = frame.context.laser_calibrations.add(name=waymo.TOP_LASER)
    top.beam_inclinations.extend(INCLINATIONS.tolist())
    top.beam_inclination_min, top.beam_inclination_max = -0.45, 0.05
    top.extrinsic.transform.extend(_transform(_rz(0.05), [1.4, 0.0, TOP_HEIGHT]).ravel().tolist())
    front = frame.context.laser_calibrations.add(name=2, beam_inclination_min=-1.2, beam_inclination_max=-0.2)
    front.extrinsic.transform.extend(_transform(np.eye(3), [4.0, 0.0, 0.5]).ravel().tolist())
    cam = frame.context.camera_calibrations.add(name=1, width=1920, height=1280)
    cam.intrinsic.extend([2000.0, 2000.0, 960.0, 640.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    cam.extrinsic.transform.extend(_transform(np.eye(3), [1.5, 0.0, 2.0]).ravel().tolist())
    # TOP: ground everywhere, intensity = row index; pixel poses all equal to the frame pose.
    ranges = _ground_range_image(INCLINATIONS, WIDTH, TOP_HEIGHT)
    image = np.stack([ranges, np.broadcast_to(np.arange(6.0)[:, None], ranges.shape), np.zeros_like(ranges),
                      np.zeros_like(ranges)], axis=-1).astype(np.float32)
    laser = frame.lasers.add(name=waymo.TOP_LASER)
    laser.ri_return1.range_image_compressed = waymo.encode_matrix(image)
    yaw_pose = np.zeros((6, WIDTH, 6), np.float32)
    yaw_pose[..., 2] = 0.2
    yaw_pose[..., 3:] = pose[:3, 3]
    laser.ri_return1.range_image_pose_compressed = waymo.encode_matrix(yaw_pose)
    # FRONT: uniform inclinations, a 2 x 4 image of ground hits 0.5 m below it.
    incl = waymo.uniform_inclinations(-1.2, -0.2, 2)
    front_ranges = _ground_range_image(incl, 4, 0.5)
    front_image = np.stack([front_ranges, np.ones_like(front_ranges), np.zeros_like(front_ranges),
                            np.zeros_like(front_ranges)], -1).astype(np.float32)
    laser = frame.lasers.add(name=2)
    laser.ri_return1.range_image_compressed = waymo.encode_matrix(front_image)
    # Labels: a parked car (static in the world) and a pedestrian, in the vehicle frame.
    to_vehicle = ls.invert_transform(pose)
    car = ls.transform_boxes(np.array([[1012.0, 2005.0, 10.8, 4.5, 2.0, 1.6, 1.0]]), to_vehicle)[0]
    for box, kind, label_id, points in ((car, 1, "car_1", 120), ([5.0, -3.0, 0.9, 0.8, 0.7, 1.8, 0.0], 2, "ped_7", 30)):
        label = frame.laser_labels.add(type=kind, id=label_id, detection_difficulty_level=1,
                                       num_lidar_points_in_box=points)
        b = label.box
        b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = [float(v) for v in box]
        label.metadata.speed_x = 0.5
    return frame.SerializeToString()


def _write_waymo_file(path, frames):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for raw in frames:
            writer.write(raw)


def test_frame_to_example_from_a_built_frame():
    example = waymo.frame_to_example(waymo.parse_frame(_make_frame(2)))
    assert set(example) == set(waymo.FRAME_KEYS)
    points = example["points"]
    assert points.dtype == np.float32 and points.shape == (5 * WIDTH + 2 * 4, 4)
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-4)  # everything lands on the ground (z = 0)
    assert sorted(set(points[:5 * WIDTH, 3].tolist())) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert example["boxes"].shape == (2, 7) and example["boxes"][1].tolist() == pytest.approx(
        [5.0, -3.0, 0.9, 0.8, 0.7, 1.8, 0.0])
    assert example["box_types"].tolist() == [1, 2] and example["difficulty"].tolist() == [1, 1]
    assert example["num_points_in_box"].tolist() == [120, 30]
    assert example["track_ids"].tolist() == [waymo.track_id("car_1"), waymo.track_id("ped_7")]
    assert example["track_ids"].min() >= 0
    np.testing.assert_allclose(example["box_speed"][:, 0], [0.5, 0.5])
    assert example["laser_names"].tolist() == [1, 2] and example["laser_extrinsics"].shape == (2, 4, 4)
    assert example["camera_sizes"].tolist() == [[1920, 1280]]
    assert example["timestamp_micros"] == 1_200_000 and example["segment"] == b"seg_a"
    second = waymo.frame_to_example(waymo.parse_frame(_make_frame(2)), returns=(1, 2))
    assert len(second["points"]) == len(points)  # no second returns stored
    with pytest.raises(ValueError, match="not a Waymo Open Dataset Frame"):
        waymo.parse_frame(b"\xff\xff\xff")


def test_convert_and_read_back_multi_frame_examples(tmp_path):
    source = tmp_path / "in" / "segment-a.tfrecord"
    source.parent.mkdir()
    _write_waymo_file(source, [_make_frame(k) for k in range(5)] + [_make_frame(0, segment="seg_b")])
    written = waymo.convert_files([str(tmp_path / "in" / "*.tfrecord")], tmp_path / "out")
    assert written == [str(tmp_path / "out" / "segment-a.tfrecord")]
    records = list(read_examples(written[0], static_spatial=False).as_numpy_iterator())
    assert len(records) == 6
    direct = waymo.frame_to_example(waymo.parse_frame(_make_frame(3)))
    own = list(waymo.read_converted(written[0]))
    for key, value in direct.items():
        np.testing.assert_array_equal(records[3][key], value, err_msg=key)
        np.testing.assert_array_equal(own[3][key], value, err_msg=key)
        assert own[3][key].dtype == np.asarray(value).dtype, key
    ds = waymo.waymo_lidar_dataset(written, n_f=3, stride=2, max_points=200, max_boxes=4)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 1  # frames 0, 2, 4 of seg_a; seg_b has a single frame
    ex = examples[0]
    np.testing.assert_allclose(ex["timestamps"], [-0.4, -0.2, 0.0], atol=1e-6)
    # The ground stays at z = 0 and the parked car keeps its place in the latest vehicle frame.
    valid = ex["points_mask"] > 0
    np.testing.assert_allclose(ex["points"][..., 2][valid], 0.0, atol=1e-3)
    np.testing.assert_array_equal(ex["box_mask"], [[1, 0, 0, 0]] * 3)  # vehicles only
    np.testing.assert_allclose(ex["boxes"][0, 0], ex["boxes"][2, 0], atol=1e-3)
    assert ex["frame_poses"][0][0, 3] == pytest.approx(-4.0, abs=1e-4)  # 2 m per 0.2 s, two strides back
    assert (ex["track_ids"][:, 0] == waymo.track_id("car_1")).all()
    unlabelled = list(waymo.waymo_lidar_dataset(written, n_f=1, max_points=200, max_boxes=4,
                                                label_fraction=0.0).as_numpy_iterator())
    assert len(unlabelled) == 6 and all(e["box_mask"].sum() == 0 and e["labelled"].sum() == 0 for e in unlabelled)
    with pytest.raises(ValueError, match="would overwrite the input"):
        waymo.convert_file(source, source)
    with pytest.raises(FileNotFoundError, match="no Waymo files match"):
        waymo.convert_files([str(tmp_path / "missing-*.tfrecord")], tmp_path / "out")


def _load_tool():
    return load_script("tools/convert_waymo.py", "convert_waymo")


def test_convert_tool_runs(tmp_path, capsys):
    tool = _load_tool()
    source = tmp_path / "segment-t.tfrecord"
    _write_waymo_file(source, [_make_frame(0)])
    assert tool.main(["--input", str(source), "--output", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip().endswith("segment-t.tfrecord")
    assert (tmp_path / "out" / "segment-t.tfrecord").is_file()
    assert tool.main(["--input", str(tmp_path / "nothing-*.tfrecord"), "--output", str(tmp_path / "out")]) == 2
    assert "no Waymo files match" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The real sample frames (labels, poses, calibrations; no points).


def _is_rigid(t, atol=1e-4):
    r = t[:3, :3]
    return (np.allclose(r @ r.T, np.eye(3), atol=atol) and np.isclose(np.linalg.det(r), 1.0, atol=atol)
            and np.allclose(t[3], [0, 0, 0, 1]))


@needs_waymo
@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_frames_have_sane_labels_poses_and_calibrations(name, tmp_path):
    raws = list(waymo.read_frame_records(WAYMO / name))
    assert len(raws) == 1
    example = waymo.frame_to_example(waymo.parse_frame(raws[0]))
    num_labels, num_vehicles = REAL_FILES[name]
    assert len(example["boxes"]) == num_labels and example["points"].shape == (0, 4)
    vehicles = example["boxes"][example["box_types"] == waymo.TYPE_VEHICLE]
    assert len(vehicles) == num_vehicles
    length, width, height = vehicles[:, 3], vehicles[:, 4], vehicles[:, 5]
    assert ((length > 2.0) & (length < 25.0) & (width > 1.0) & (width < 4.5) & (height > 1.0) & (height < 5.0)).all()
    assert (np.median(length) > 3.5) and (np.median(width) > 1.6) and (length >= width).mean() > 0.9
    assert (np.abs(example["boxes"][:, 6]) <= np.pi + 1e-6).all()
    assert (np.abs(example["boxes"][:, :2]) < 100).all()  # labels near the vehicle (vehicle frame)
    assert np.isin(example["difficulty"], [0, 1, 2]).all() and (example["num_points_in_box"] >= 0).all()
    assert len(set(example["track_ids"].tolist())) == len(example["track_ids"])
    assert _is_rigid(example["vehicle_pose"]) and np.abs(example["vehicle_pose"][:3, 3]).max() < 1e6
    assert sorted(example["laser_names"].tolist()) == [1, 2, 3, 4, 5]
    assert all(_is_rigid(t) for t in example["laser_extrinsics"])
    assert all(_is_rigid(t) for t in example["camera_extrinsics"])
    top = example["laser_extrinsics"][list(example["laser_names"]).index(waymo.TOP_LASER)]
    assert 1.5 < top[2, 3] < 2.5  # the roof LiDAR
    assert (example["camera_intrinsics"][:, 0] > 1000).all() and (example["camera_sizes"][:, 0] == 1920).all()
    frame = waymo.parse_frame(raws[0])
    top_calib = [c for c in frame.context.laser_calibrations if c.name == waymo.TOP_LASER][0]
    incl = waymo.laser_inclinations(top_calib, 64)
    assert (np.diff(incl) > 0).all() and -0.4 < incl[0] < -0.2 and 0.0 < incl[-1] < 0.1
    # The written record reads back equal.
    out = waymo.convert_files([str(WAYMO / name)], tmp_path)
    record = next(iter(read_examples(out[0], static_spatial=False).as_numpy_iterator()))
    assert set(record) == set(example)
    for key, value in example.items():
        np.testing.assert_array_equal(record[key], value, err_msg=key)
