"""Tests of the KITTI video readers: the real clips in ../shared/data and tiny raw/triplet fixtures."""

from pathlib import Path

import gin
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from taskology_tf.data import kitti
from taskology_tf.data.example import check_element_spec
from taskology_tf.geometry import camera

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CLIPS = SHARED_DATA / "kitti_clips"
PAIR_KEYS = ("id", "image", "image_next", "intrinsics")

needs_clips = pytest.mark.skipif(
    not CLIPS.is_dir(), reason=f"real KITTI clips not found at {CLIPS} (../shared/data is absent on fresh clones)"
)


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _frame(value, height=6, width=8):
    """A frame whose pixels encode ``value`` (red), the row (green) and the column (blue)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([np.full((height, width), value), rows * 10, cols * 10], axis=-1).astype(np.uint8)


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------------------------
# Real clips.


@needs_clips
def test_clip_pairs_list_four_consecutive_pairs_per_clip_with_the_file_intrinsics():
    pairs = kitti.kitti_clip_pairs(CLIPS)
    assert len(pairs) == 16
    assert len({p.id for p in pairs}) == 16
    for i, p in enumerate(pairs):
        clip, frame = divmod(i, 4)
        assert Path(p.path) == CLIPS / f"kitti_{clip}" / f"{frame:03d}.png"
        assert Path(p.path_next) == CLIPS / f"kitti_{clip}" / f"{frame + 1:03d}.png"
    fx, fy, cx, cy = np.loadtxt(CLIPS / "kitti_0" / "intrinsics.txt")
    np.testing.assert_allclose(pairs[0].intrinsics, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-6)
    assert [p.id for p in kitti.kitti_clip_pairs(CLIPS)] == [p.id for p in pairs]  # stable
    strided = kitti.kitti_clip_pairs(CLIPS, stride=2)
    assert len(strided) == 12 and not {p.id for p in strided} & {p.id for p in pairs}
    assert len(kitti.kitti_clip_pairs(CLIPS / "kitti_2")) == 4  # a single clip folder works too


@needs_clips
def test_clips_dataset_resized_to_half_scales_intrinsics_and_area_averages():
    ds = kitti.kitti_clips_dataset(str(CLIPS), height=96, width=544)
    check_element_spec(ds.element_spec, PAIR_KEYS, "test")
    assert ds.element_spec["image"].shape == (96, 544, 3)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 16
    assert len({int(e["id"]) for e in examples}) == 16
    pairs = kitti.kitti_clip_pairs(CLIPS)
    for ex, pair in zip(examples, pairs):
        assert ex["image"].dtype == np.uint8 and ex["image_next"].shape == (96, 544, 3)
        assert ex["intrinsics"].dtype == np.float32 and int(ex["id"]) == pair.id
        # Halving: fx' = fx / 2, cx' = (cx + 0.5) / 2 - 0.5, as geometry.camera.scale_intrinsics.
        k = pair.intrinsics.astype(np.float64)
        expected = k.copy()
        expected[:2, :2] *= 0.5
        expected[:2, 2] = 0.5 * (k[:2, 2] + 0.5) - 0.5
        np.testing.assert_allclose(ex["intrinsics"], expected, rtol=1e-6)
        np.testing.assert_allclose(ex["intrinsics"], np.asarray(camera.scale_intrinsics(k, 0.5, 0.5)), rtol=1e-6)
    # Area resizing by exactly 2 is the mean of each 2x2 block.
    full = _read(pairs[5].path_next).astype(np.float64)
    blocks = full.reshape(96, 2, 544, 2, 3).mean(axis=(1, 3))
    assert np.abs(examples[5]["image_next"] - blocks).max() <= 1.0
    # Within a clip, frame t+1 of one pair is frame t of the next.
    np.testing.assert_array_equal(examples[0]["image_next"], examples[1]["image"])


@needs_clips
def test_clips_dataset_without_resize_keeps_the_stored_frames():
    ex = next(iter(kitti.kitti_clips_dataset(CLIPS / "kitti_1", resize_method="bilinear")))
    assert ex["image"].shape == (192, 1088, 3)
    np.testing.assert_array_equal(ex["image"].numpy(), _read(CLIPS / "kitti_1" / "000.png"))
    np.testing.assert_array_equal(ex["image_next"].numpy(), _read(CLIPS / "kitti_1" / "001.png"))
    np.testing.assert_allclose(ex["intrinsics"].numpy(), kitti.kitti_clip_pairs(CLIPS / "kitti_1")[0].intrinsics)


@needs_clips
def test_clips_are_gin_configurable():
    try:
        gin.parse_config([f"kitti_clips.root = '{CLIPS}'", "kitti_clips.stride = 4"])
        ds = kitti.kitti_clips_dataset(height=32, width=64)
    finally:
        gin.clear_config()
    assert len(list(ds)) == 4  # one pair (000, 004) per clip


# ----------------------------------------------------------------------------------------------
# KITTI raw fixture.

P2 = np.array([[721.5, 0.0, 609.5, 44.8], [0.0, 721.5, 172.8, 0.2], [0.0, 0.0, 1.0, 0.003]])
P3 = np.array([[721.5, 0.0, 609.5, -339.5], [0.0, 721.5, 172.8, 2.2], [0.0, 0.0, 1.0, 0.003]])


def _write_calib(path, keys=("P_rect_02", "P_rect_03")):
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02", "S_rect_02: 8 6"]
    for key in keys:
        lines.append(f"{key}: " + " ".join(f"{v:e}" for v in (P2 if key.endswith("2") else P3).ravel()))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def raw_root(tmp_path):
    date = tmp_path / "2011_09_26"
    date.mkdir()
    _write_calib(date / "calib_cam_to_cam.txt")
    for drive, frames in (("2011_09_26_drive_0001_sync", (0, 1, 2)), ("2011_09_26_drive_0002_sync", (0, 1, 3))):
        for n in frames:
            for cam, offset in (("image_02", 0), ("image_03", 100)):
                _write_png(date / drive / cam / "data" / f"{n:010d}.png", _frame(10 * n + offset + (drive[-6] == "2")))
    (date / "2011_09_26_drive_0001_sync" / "image_02" / "data" / "notes.txt").write_text("not a frame")
    return tmp_path


def test_raw_pairs_use_p_rect_and_skip_gaps(raw_root):
    pairs = kitti.kitti_raw_pairs(raw_root)
    names = [(Path(p.path).parts[-4], Path(p.path).stem, Path(p.path_next).stem) for p in pairs]
    assert names == [("2011_09_26_drive_0001_sync", "0000000000", "0000000001"),
                     ("2011_09_26_drive_0001_sync", "0000000001", "0000000002"),
                     ("2011_09_26_drive_0002_sync", "0000000000", "0000000001")]  # 1 -> 3 is not consecutive
    assert len({p.id for p in pairs}) == 3
    np.testing.assert_allclose(pairs[0].intrinsics, P2[:, :3], rtol=1e-6)
    right = kitti.kitti_raw_pairs(raw_root, camera="image_03", drives=["2011_09_26_drive_0002_sync"])
    assert len(right) == 1 and "image_03" in right[0].path
    np.testing.assert_allclose(right[0].intrinsics, P3[:, :3], rtol=1e-6)
    assert {p.id for p in right}.isdisjoint(p.id for p in pairs)
    assert len(kitti.kitti_raw_pairs(raw_root, stride=2)) == 2  # 0 -> 2 and 1 -> 3


def test_raw_dataset_contents_and_resize(raw_root):
    examples = list(kitti.kitti_raw_dataset(raw_root).as_numpy_iterator())
    assert len(examples) == 3
    np.testing.assert_array_equal(examples[1]["image"], _frame(10))
    np.testing.assert_array_equal(examples[1]["image_next"], _frame(20))
    np.testing.assert_array_equal(examples[2]["image_next"], _frame(11))
    resized = list(kitti.kitti_raw_dataset(raw_root, height=3, width=16, resize_method="bilinear"))
    assert resized[0]["image"].shape == (3, 16, 3)
    # Rows halve, columns double: fy' = fy / 2, fx' = 2 fx.
    k = resized[0]["intrinsics"].numpy()
    np.testing.assert_allclose([k[0, 0], k[1, 1]], [2 * P2[0, 0], 0.5 * P2[1, 1]], rtol=1e-6)
    np.testing.assert_allclose([k[0, 2], k[1, 2]], [2 * (P2[0, 2] + 0.5) - 0.5, 0.5 * (P2[1, 2] + 0.5) - 0.5],
                               rtol=1e-6)


def test_raw_errors_name_the_expected_layout(raw_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*calib_cam_to_cam"):
        kitti.kitti_raw_pairs(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="drive_XXXX_sync"):
        kitti.kitti_raw_pairs(empty)
    with pytest.raises(ValueError, match="drive_0009_sync.*available"):
        kitti.kitti_raw_pairs(raw_root, drives=["2011_09_26_drive_0009_sync"])
    with pytest.raises(ValueError, match="camera"):
        kitti.kitti_raw_pairs(raw_root, camera="image_2")
    with pytest.raises(ValueError, match="stride"):
        kitti.kitti_raw_pairs(raw_root, stride=0)
    with pytest.raises(ValueError, match="both height and width"):
        kitti.kitti_raw_dataset(raw_root, height=8)
    _write_calib(raw_root / "2011_09_26" / "calib_cam_to_cam.txt", keys=("P_rect_03",))
    with pytest.raises(ValueError, match="P_rect_02"):
        kitti.kitti_raw_pairs(raw_root)
    (raw_root / "2011_09_26" / "calib_cam_to_cam.txt").unlink()
    with pytest.raises(FileNotFoundError, match="missing calibration"):
        kitti.kitti_raw_pairs(raw_root)


# ----------------------------------------------------------------------------------------------
# struct2depth triplet fixture.

K_TRIPLET = np.array([[24.0, 0.0, 4.0], [0.0, 20.0, 3.0], [0.0, 0.0, 1.0]], np.float32)


@pytest.fixture
def triplet_root(tmp_path):
    for seq, frames in (("2011_09_26_drive_0001_sync_02", ("0000000001", "0000000002")), ("city_a", ("0007",))):
        for f_index, frame in enumerate(frames):
            strip = np.concatenate([_frame(50 * t + f_index) for t in range(3)], axis=1)  # 6 x 24
            _write_png(tmp_path / seq / f"{frame}.png", strip)
            (tmp_path / seq / f"{frame}_cam.txt").write_text(",".join(f"{v}" for v in K_TRIPLET.ravel()))
    (tmp_path / "train.txt").write_text(
        "2011_09_26_drive_0001_sync_02 0000000001\n2011_09_26_drive_0001_sync_02 0000000002\n\ncity_a 0007\n"
    )
    (tmp_path / "val.txt").write_text("city_a 0007\n")
    return tmp_path


def test_triplet_pairs_and_dataset_slice_the_strip(triplet_root):
    pairs = kitti.kitti_triplet_pairs(triplet_root)
    assert len(pairs) == 6 and len({p.id for p in pairs}) == 6
    assert [(p.column, p.column_next, p.columns) for p in pairs[:2]] == [(0, 1, 3), (1, 2, 3)]
    np.testing.assert_array_equal(pairs[0].intrinsics, K_TRIPLET)
    examples = list(kitti.kitti_triplets_dataset(triplet_root).as_numpy_iterator())
    assert len(examples) == 6
    np.testing.assert_array_equal(examples[0]["image"], _frame(0))
    np.testing.assert_array_equal(examples[0]["image_next"], _frame(50))
    np.testing.assert_array_equal(examples[1]["image"], _frame(50))
    np.testing.assert_array_equal(examples[1]["image_next"], _frame(100))
    np.testing.assert_array_equal(examples[3]["image_next"], _frame(101))
    np.testing.assert_array_equal(examples[0]["intrinsics"], K_TRIPLET)  # K is per frame: no change
    middle = list(kitti.kitti_triplets_dataset(triplet_root, list_file="val.txt", pair_starts=(1,), height=3,
                                               width=4))
    assert len(middle) == 1 and middle[0]["image"].shape == (3, 4, 3)
    np.testing.assert_allclose(middle[0]["intrinsics"][0, 0], 12.0)
    ids_middle = {p.id for p in kitti.kitti_triplet_pairs(triplet_root, pair_starts=(1,))}
    assert ids_middle < {p.id for p in pairs}  # the same pair keeps its id


def test_triplet_errors(triplet_root):
    with pytest.raises(FileNotFoundError, match="missing list file.*<seq> <frame>"):
        kitti.kitti_triplet_pairs(triplet_root, list_file="test.txt")
    with pytest.raises(ValueError, match="pair_starts"):
        kitti.kitti_triplet_pairs(triplet_root, pair_starts=(2,))
    (triplet_root / "bad.txt").write_text("city_a\n")
    with pytest.raises(ValueError, match="bad.txt, line 1"):
        kitti.kitti_triplet_pairs(triplet_root, list_file="bad.txt")
    (triplet_root / "missing.txt").write_text("city_a 0008\n")
    with pytest.raises(FileNotFoundError, match="0008.png"):
        kitti.kitti_triplet_pairs(triplet_root, list_file="missing.txt")
    (triplet_root / "city_a" / "0007_cam.txt").write_text("1,2,3")
    with pytest.raises(ValueError, match="9 comma-separated"):
        kitti.kitti_triplet_pairs(triplet_root, list_file="val.txt")
    (triplet_root / "city_a" / "0007_cam.txt").write_text(",".join(f"{v}" for v in K_TRIPLET.ravel()))
    _write_png(triplet_root / "city_a" / "0007.png", np.zeros((6, 25, 3)))  # not 3 equal frames
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of the frames"):
        list(kitti.kitti_triplets_dataset(triplet_root, list_file="val.txt"))


def test_clip_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*intrinsics.txt"):
        kitti.kitti_clip_pairs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no clip folders"):
        kitti.kitti_clip_pairs(tmp_path)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "intrinsics.txt").write_text("1\n2\n3\n")
    _write_png(clip / "000.png", _frame(0))
    _write_png(clip / "001.png", _frame(1, height=5))
    with pytest.raises(ValueError, match="fx fy cx cy"):
        kitti.kitti_clip_pairs(tmp_path)
    (clip / "intrinsics.txt").write_text("10\n10\n4\n3\n")
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in size"):
        list(kitti.kitti_clips_dataset(tmp_path))
    with pytest.raises(ValueError, match="at least one"):
        kitti.frame_pair_dataset([])
