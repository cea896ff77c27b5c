"""Tests of the KITTI 3D object reader: the real frames in ../shared/data and a generated fixture."""

from pathlib import Path

import numpy as np
import pytest

from taskology_tf.data import kitti_object as ko
from taskology_tf.data import lidar_sequence as ls

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KITTI = SHARED_DATA / "kitti_object"
needs_kitti = pytest.mark.skipif(
    not (KITTI / "training" / "velodyne").is_dir(),
    reason=f"real KITTI object frames not found at {KITTI} (../shared/data is absent on fresh clones)",
)

# The calibration of KITTI object frame 000000 (P2, R0_rect, Tr_velo_to_cam as published).
CALIB_TEXT = """P0: 7.070493e+02 0 6.040814e+02 0 0 7.070493e+02 1.805066e+02 0 0 0 1 0
P1: 7.070493e+02 0 6.040814e+02 -3.797842e+02 0 7.070493e+02 1.805066e+02 0 0 0 1 0
P2: 7.070493e+02 0 6.040814e+02 4.575831e+01 0 7.070493e+02 1.805066e+02 -3.454157e-01 0 0 1 4.981016e-03
P3: 7.070493e+02 0 6.040814e+02 -3.341081e+02 0 7.070493e+02 1.805066e+02 2.330660e+00 0 0 1 3.201153e-03
R0_rect: 9.999128e-01 1.009263e-02 -8.511932e-03 -1.012729e-02 9.999406e-01 -4.037671e-03 8.470675e-03 4.123522e-03 9.999556e-01
Tr_velo_to_cam: 6.927964e-03 -9.999722e-01 -2.757829e-03 -2.457729e-02 -1.162982e-03 2.749836e-03 -9.999955e-01 -6.127237e-02 9.999753e-01 6.931141e-03 -1.143899e-03 -3.321029e-01
Tr_imu_to_velo: 1 0 0 -8.086759e-01 0 1 0 3.195559e-01 0 0 1 -7.997231e-01
"""


def _calib() -> ko.KittiCalib:
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = np.array([6.927964e-03, -9.999722e-01, -2.757829e-03, -2.457729e-02, -1.162982e-03,
                                2.749836e-03, -9.999955e-01, -6.127237e-02, 9.999753e-01, 6.931141e-03,
                                -1.143899e-03, -3.321029e-01]).reshape(3, 4)
    r0 = np.array([9.999128e-01, 1.009263e-02, -8.511932e-03, -1.012729e-02, 9.999406e-01, -4.037671e-03,
                   8.470675e-03, 4.123522e-03, 9.999556e-01]).reshape(3, 3)
    p2 = np.array([7.070493e+02, 0, 6.040814e+02, 4.575831e+01, 0, 7.070493e+02, 1.805066e+02, -3.454157e-01,
                   0, 0, 1, 4.981016e-03]).reshape(3, 4)
    return ko.KittiCalib(p2=p2, r0_rect=r0, velo_to_cam=velo_to_cam)


def _label_line(kind, dims, loc, ry, bbox=(600, 150, 700, 250), occluded=0):
    h, w, l = dims
    return (f"{kind} 0.00 {occluded} 0.0 {bbox[0]:.2f} {bbox[1]:.2f} {bbox[2]:.2f} {bbox[3]:.2f} "
            f"{h:.4f} {w:.4f} {l:.4f} {loc[0]:.4f} {loc[1]:.4f} {loc[2]:.4f} {ry:.6f}\n")


@pytest.fixture()
def fixture_root(tmp_path):
    """One frame: a car (with 300 points sampled inside it), a pedestrian and a DontCare; points behind too."""
    split = tmp_path / "training"
    for sub in ("velodyne", "label_2", "calib"):
        (split / sub).mkdir(parents=True)
    calib = _calib()
    car = np.array([[15.0, 3.0, -0.9, 4.2, 1.8, 1.5, 0.6]])  # LiDAR frame
    person = np.array([[8.0, -2.0, -0.85, 0.6, 0.7, 1.8, -1.0]])
    rng = np.random.default_rng(0)
    local = rng.uniform(-0.49, 0.49, size=(300, 3)) * car[0, 3:6]
    c, s = np.cos(car[0, 6]), np.sin(car[0, 6])
    inside = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], 1)
    inside += car[0, :3]
    behind = np.stack([rng.uniform(-30, -5, 100), rng.uniform(-10, 10, 100), rng.uniform(-1.7, 1, 100)], 1)
    points = np.concatenate([inside, behind])
    points = np.concatenate([points, rng.uniform(0, 1, size=(len(points), 1))], axis=1).astype(np.float32)
    points.tofile(split / "velodyne" / "000007.bin")
    (split / "calib" / "000007.txt").write_text(CALIB_TEXT)
    lines = ""
    for kind, box in (("Car", car), ("Pedestrian", person)):
        dims, loc, ry = ko.lidar_to_camera_boxes(box, calib)
        lines += _label_line(kind, dims[0], loc[0], ry[0])
    lines += "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n"
    (split / "label_2" / "000007.txt").write_text(lines)
    return tmp_path, car, person


def test_heading_convention_matches_kitti_formula():
    calib = _calib()
    ry = np.linspace(-np.pi, np.pi, 13)
    boxes = ko.camera_to_lidar_boxes(np.tile([1.5, 1.6, 4.0], (13, 1)), np.tile([2.0, 1.6, 20.0], (13, 1)), ry, calib)
    np.testing.assert_allclose(np.cos(boxes[:, 6] - (-ry - np.pi / 2)), 1.0, atol=1e-4)  # -ry - pi/2, within 1 deg
    np.testing.assert_allclose(boxes[:, 3:6], np.tile([4.0, 1.6, 1.5], (13, 1)))  # (l, w, h) order
    # The bottom centre (camera y down) sits h/2 below the LiDAR-frame centre; camera z forward = LiDAR x.
    # The camera is ~0.27 m ahead of and ~0.08 m below the LiDAR (Tr_velo_to_cam); calibration tilts add cm.
    np.testing.assert_allclose(boxes[0, :3], [20.0 + 0.27, -2.0, -1.6 - 0.08 + 0.75], atol=0.15)
    dims, loc, ry_back = ko.lidar_to_camera_boxes(boxes, calib)
    np.testing.assert_allclose(loc, np.tile([2.0, 1.6, 20.0], (13, 1)), atol=1e-9)
    np.testing.assert_allclose(np.cos(ry_back - ry), 1.0, atol=1e-6)


def test_fixture_frame(fixture_root):
    root, car, person = fixture_root
    assert ko.kitti_object_frame_ids(root) == ["000007"]
    frame = ko.read_kitti_object_frame(root, "000007")
    assert frame["points"].shape == (400, 4) and frame["points"].dtype == np.float32
    np.testing.assert_allclose(frame["boxes"], car, atol=2e-3)  # only the vehicle classes
    assert frame["num_points_in_box"].tolist() == [300]
    assert frame["track_ids"].tolist() == [0] and frame["track_ids"].dtype == np.int64
    assert frame["difficulty"].tolist() == [0]  # 100 px tall, not occluded, not truncated
    both = ko.read_kitti_object_frame(root / "training", "000007", classes=("Car", "Pedestrian"))
    np.testing.assert_allclose(both["boxes"], np.concatenate([car, person]), atol=2e-3)
    assert both["num_points_in_box"].tolist() == [300, 0]
    assert ko.read_kitti_object_frame(root, "000007", classes=("Pedestrian",), min_points=1)["boxes"].shape == (0, 7)
    fov = ko.read_kitti_object_frame(root, "000007", fov_only=True)
    assert 250 <= len(fov["points"]) <= 300 and (fov["points"][:, 0] > 0).all()  # the points behind are gone
    with pytest.raises(ValueError, match="classes must be a list"):
        ko.read_kitti_object_frame(root, "000007", classes="Car")


def test_fixture_dataset_per_frame_and_padded(fixture_root):
    root, car, _ = fixture_root
    ex = next(iter(ko.kitti_object_dataset(root, fov_only=False).as_numpy_iterator()))
    assert ex["points"].shape == (400, 4) and ex["boxes"].shape == (1, 7)
    padded = next(iter(ko.kitti_object_dataset(root, fov_only=False, max_points=512, max_boxes=4)))
    assert tuple(padded["points"].shape) == (1, 512, 4) and float(padded["points_mask"].numpy().sum()) == 400
    np.testing.assert_array_equal(padded["box_mask"].numpy(), [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="give both max_points and max_boxes"):
        ko.kitti_object_dataset(root, max_points=10)


def test_parse_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="expected 15 fields"):
        ko.read_labels(bad)
    (tmp_path / "odd.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        ko.read_velodyne(tmp_path / "odd.bin")
    (tmp_path / "calib.txt").write_text("P2: 1 2 3\n")
    with pytest.raises(ValueError, match="P2"):
        ko.read_calib(tmp_path / "calib.txt")
    with pytest.raises(FileNotFoundError, match="KITTI object layout"):
        ko.kitti_object_frame_ids(tmp_path)


@needs_kitti
def test_real_boxes_land_on_the_points():
    vehicles = 0
    for frame_id in ko.kitti_object_frame_ids(KITTI):
        frame = ko.read_kitti_object_frame(KITTI, frame_id, classes=("Car", "Van", "Truck", "Pedestrian", "Cyclist"))
        points, boxes = frame["points"], frame["boxes"]
        assert points.shape[1] == 4 and len(points) > 100000  # full 64-beam scans
        assert (frame["num_points_in_box"] >= 5).all(), (frame_id, frame["num_points_in_box"])
        for box, count in zip(boxes, frame["num_points_in_box"]):
            # Nothing sticks out above the box (the slab h/2 above it is empty) ...
            above = box.copy()
            above[2] += 0.75 * box[5]
            above[5] *= 0.5
            assert ls.count_points_in_boxes(points, above[None])[0] <= 0.02 * count + 1
            # ... unless the label's bottom centre is taken for the centre (the box then sits h/2 too low).
            low_above = above.copy()
            low_above[2] -= 0.5 * box[5]
            if count >= 50:
                assert ls.count_points_in_boxes(points, low_above[None])[0] > 0.15 * count
            # Turned by 90 degrees, long boxes lose their points.
            turned = box.copy()
            turned[6] += np.pi / 2
            if box[3] > 3.0 and count >= 50:
                assert ls.count_points_in_boxes(points, turned[None])[0] < 0.8 * count
                vehicles += 1
            # Boxes stand on the ground: few points lie below the box within its footprint.
            below = box.copy()
            below[2] -= box[5] / 2 + 0.25
            below[5] = 0.3
            assert ls.count_points_in_boxes(points, below[None])[0] <= 0.05 * count + 3
    assert vehicles >= 3


@needs_kitti
def test_real_calibration_and_fov():
    calib = ko.read_calib(KITTI / "training" / "calib" / "000000.txt")
    r = calib.velo_to_cam[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-4)
    # LiDAR x (forward) is camera z; LiDAR y (left) is camera -x.
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 0, 1], atol=0.02)
    np.testing.assert_allclose(r @ [0, 1, 0], [-1, 0, 0], atol=0.02)
    frame = ko.read_kitti_object_frame(KITTI, "000000", fov_only=True, classes=("Pedestrian",))
    assert 10000 < len(frame["points"]) < 40000 and (frame["points"][:, 0] > 0).all()
    assert frame["boxes"].shape == (1, 7) and frame["boxes"][0, 0] == pytest.approx(8.7, abs=0.3)


DEMO = SHARED_DATA / "kitti_object_demo"


@pytest.mark.skipif(not (DEMO / "000008.pkl").is_file(), reason=f"KITTI demo frame not found at {DEMO}")
def test_demo_frame_agrees_with_mmdetection3d_annotations():
    """mmdetection3d's info file for the demo frame holds its own point counts and difficulties per box."""
    import pickle

    with open(DEMO / "000008.pkl", "rb") as f:  # plain dicts and lists (no mmdet3d classes)
        info = pickle.load(f)["data_list"][0]
    calib = ko.KittiCalib(p2=np.array(info["images"]["CAM2"]["cam2img"])[:3],
                          r0_rect=np.array(info["images"]["R0_rect"])[:3, :3],
                          velo_to_cam=np.array(info["lidar_points"]["Tr_velo_to_cam"]))
    objects = [o for o in info["instances"] if o["bbox_label_3d"] >= 0]
    b = np.array([o["bbox_3d"] for o in objects])  # camera frame: x, y, z (bottom centre), l, h, w, rotation_y
    boxes = ko.camera_to_lidar_boxes(b[:, [4, 5, 3]], b[:, :3], b[:, 6], calib)
    counts = ls.count_points_in_boxes(ko.read_velodyne(DEMO / "000008.bin"), boxes)
    want = np.array([o["num_lidar_pts"] for o in objects])
    assert len(objects) == 6 and (want > 50).all()
    np.testing.assert_allclose(counts, want, rtol=0.1)  # their box test differs slightly at the faces
    labels = ko.KittiLabels(
        types=("Car",) * len(objects), truncation=np.array([o["truncated"] for o in objects]),
        occlusion=np.array([o["occluded"] for o in objects]), alpha=np.array([o["alpha"] for o in objects]),
        bbox=np.array([o["bbox"] for o in objects]), dimensions=b[:, [4, 5, 3]], location=b[:, :3],
        rotation_y=b[:, 6], score=np.ones(len(objects)))
    assert labels.difficulty().tolist() == [o["difficulty"] for o in objects]
