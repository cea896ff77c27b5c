"""Tests of the Cityscapes readers: the real labelled frame in ../shared/data and a tiny sequence fixture."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskology_tf.data import cityscapes
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, MOVABLE_CLASSES, check_element_spec

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SAMPLE = SHARED_DATA / "cityscapes_sample"
STEM = "frankfurt_000000_000294"

needs_sample = pytest.mark.skipif(
    not SAMPLE.is_dir(),
    reason=f"real Cityscapes sample not found at {SAMPLE} (../shared/data is absent on fresh clones)",
)

# Written out independently of the module: Cityscapes label id -> project class name.
EXPECTED = {7: "road", 8: "sidewalk", 11: "building", 21: "vegetation", 22: "vegetation", 17: "pole", 18: "pole",
            19: "pole", 20: "pole", 23: "sky", 24: "pedestrian", 25: "pedestrian", 26: "car", 27: "car", 28: "car",
            29: "car", 30: "car", 31: "car", 32: "car", 33: "car"}


def _expected_labels(label_ids):
    out = np.full(label_ids.shape, IGNORE_LABEL, np.int32)
    for label_id, name in EXPECTED.items():
        out[label_ids == label_id] = CLASS_NAMES.index(name)
    return out


def test_lookup_table_follows_the_documented_mapping():
    table = cityscapes.label_lookup_table()
    assert table.shape == (256,) and table.dtype == np.int32
    np.testing.assert_array_equal(table, _expected_labels(np.arange(256)))
    assert {CLASS_NAMES[table[i]] for i in (24, 25, 26, 27, 28, 31, 32, 33)} == set(MOVABLE_CLASSES)


@needs_sample
def test_labelled_reader_on_the_real_frame():
    examples = cityscapes.cityscapes_labelled_examples(SAMPLE, split="val")
    assert [Path(e.path).name for e in examples] == [f"{STEM}_leftImg8bit.png"]
    ds = cityscapes.cityscapes_labelled_dataset(str(SAMPLE), split="val")
    check_element_spec(ds.element_spec, ("id", "image", "segmentation"), "test")
    (ex,) = list(ds.as_numpy_iterator())
    image = np.asarray(Image.open(SAMPLE / "leftImg8bit" / "val" / "frankfurt" / f"{STEM}_leftImg8bit.png"))
    label_ids = np.asarray(Image.open(SAMPLE / "gtFine" / "val" / "frankfurt" / f"{STEM}_gtFine_labelIds.png"))
    np.testing.assert_array_equal(ex["image"], image)
    assert ex["segmentation"].shape == (128, 256, 1) and ex["segmentation"].dtype == np.int32
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _expected_labels(label_ids))
    present = {CLASS_NAMES[c] for c in np.unique(ex["segmentation"]) if c != IGNORE_LABEL}
    assert {"road", "car", "pedestrian", "sky"} <= present
    assert int(ex["id"]) == examples[0].id

    small = next(iter(cityscapes.cityscapes_labelled_dataset(SAMPLE, split="val", crop_bottom=0.25, height=48,
                                                             width=128)))
    assert small["image"].shape == (48, 128, 3) and small["segmentation"].shape == (48, 128, 1)
    # Nearest-neighbour labels of the top 96 rows: every value is one of the original labels at its block.
    seg = _expected_labels(label_ids)[:96]
    blocks = seg.reshape(48, 2, 128, 2)
    got = small["segmentation"].numpy()[..., 0]
    assert np.all((blocks == got[:, None, :, None]).any(axis=(1, 3)))


@needs_sample
def test_labelled_reader_errors():
    with pytest.raises(FileNotFoundError, match="split 'train'.*gtFine_labelIds"):
        cityscapes.cityscapes_labelled_examples(SAMPLE, split="train")
    with pytest.raises(ValueError, match="cities \\['aachen'\\].*frankfurt"):
        cityscapes.cityscapes_labelled_examples(SAMPLE, split="val", cities=["aachen"])


def test_labelled_reader_reports_missing_labels(tmp_path):
    folder = tmp_path / "leftImg8bit" / "val" / "ulm"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(folder / "ulm_000001_000019_leftImg8bit.png")
    with pytest.raises(FileNotFoundError, match="ulm_000001_000019_gtFine_labelIds.png"):
        cityscapes.cityscapes_labelled_examples(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist.*leftImg8bit"):
        cityscapes.cityscapes_labelled_examples(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------
# Sequence fixture: snippet 0 of aachen has frames 17-20 and a camera json for frame 19 only;
# snippet 1 has frames 0-1 with its own camera; bochum has frames but no camera.

H, W = 8, 16


def _frame(value):
    rows, cols = np.mgrid[0:H, 0:W]
    return np.stack([np.full((H, W), value), rows * 20, cols * 10], axis=-1).astype(np.uint8)


def _camera(path, fx, fy, u0, v0):
    path.parent.mkdir(parents=True, exist_ok=True)
    extrinsic = {"baseline": 0.21, "pitch": 0.04, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": 0.0, "z": 1.2}
    path.write_text(json.dumps({"extrinsic": extrinsic, "intrinsic": {"fx": fx, "fy": fy, "u0": u0, "v0": v0}}))


@pytest.fixture
def sequence_root(tmp_path):
    for city, seq, frames in (("aachen", 0, (17, 18, 19, 20)), ("aachen", 1, (0, 1)), ("bochum", 3, (0, 1))):
        folder = tmp_path / "leftImg8bit_sequence" / "train" / city
        folder.mkdir(parents=True, exist_ok=True)
        for f in frames:
            Image.fromarray(_frame(10 * f + seq)).save(folder / f"{city}_{seq:06d}_{f:06d}_leftImg8bit.png")
    _camera(tmp_path / "camera" / "train" / "aachen" / "aachen_000000_000019_camera.json", 22.5, 22.0, 7.5, 3.5)
    _camera(tmp_path / "camera" / "train" / "aachen" / "aachen_000001_000000_camera.json", 30.0, 31.0, 8.0, 4.0)
    return tmp_path


def test_sequence_pairs_use_the_snippet_camera(sequence_root):
    pairs = cityscapes.cityscapes_sequence_pairs(sequence_root, cities=["aachen"])
    names = [(Path(p.path).name[:20], Path(p.path_next).name[:20]) for p in pairs]
    assert names == [("aachen_000000_000017", "aachen_000000_000018"),
                     ("aachen_000000_000018", "aachen_000000_000019"),
                     ("aachen_000000_000019", "aachen_000000_000020"),
                     ("aachen_000001_000000", "aachen_000001_000001")]
    k0 = np.array([[22.5, 0, 7.5], [0, 22.0, 3.5], [0, 0, 1]], np.float32)
    for p in pairs[:3]:
        np.testing.assert_array_equal(p.intrinsics, k0)
    np.testing.assert_array_equal(pairs[3].intrinsics, [[30.0, 0, 8.0], [0, 31.0, 4.0], [0, 0, 1]])
    assert len({p.id for p in pairs}) == 4
    assert len(cityscapes.cityscapes_sequence_pairs(sequence_root, cities=["aachen"], stride=2)) == 2


def test_sequence_dataset_crops_the_hood_and_resizes(sequence_root):
    ds = cityscapes.cityscapes_sequence_dataset(sequence_root, cities=["aachen"])
    check_element_spec(ds.element_spec, ("id", "image", "image_next", "intrinsics"), "test")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 4
    keep = round(H * (1 - cityscapes.HOOD_FRACTION))  # 6 of 8 rows
    np.testing.assert_array_equal(examples[0]["image"], _frame(170)[:keep])
    np.testing.assert_array_equal(examples[0]["image_next"], _frame(180)[:keep])
    np.testing.assert_array_equal(examples[3]["image_next"], _frame(11)[:keep])
    np.testing.assert_allclose(examples[0]["intrinsics"], [[22.5, 0, 7.5], [0, 22.0, 3.5], [0, 0, 1]])

    resized = list(cityscapes.cityscapes_sequence_dataset(sequence_root, cities=["aachen"], height=3, width=8))
    assert resized[0]["image"].shape == (3, 8, 3)
    # The cropped 6 x 16 frame is halved in both directions.
    np.testing.assert_allclose(resized[0]["intrinsics"].numpy(),
                               [[11.25, 0, 0.5 * 8.0 - 0.5], [0, 11.0, 0.5 * 4.0 - 0.5], [0, 0, 1]], rtol=1e-6)
    full = next(iter(cityscapes.cityscapes_sequence_dataset(sequence_root, cities=["aachen"], crop_bottom=0.0)))
    assert full["image"].shape == (H, W, 3)


def test_sequence_errors(sequence_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no camera json for snippet bochum_000003"):
        cityscapes.cityscapes_sequence_pairs(sequence_root)
    with pytest.raises(FileNotFoundError, match="split 'val'.*camera_trainvaltest"):
        cityscapes.cityscapes_sequence_pairs(sequence_root, split="val")
    with pytest.raises(FileNotFoundError, match="does not exist.*leftImg8bit_sequence"):
        cityscapes.cityscapes_sequence_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="crop_bottom"):
        cityscapes.cityscapes_sequence_dataset(sequence_root, cities=["aachen"], crop_bottom=1.0)
    bad = sequence_root / "camera" / "train" / "aachen" / "aachen_000001_000000_camera.json"
    bad.write_text(json.dumps({"intrinsic": {"fx": 1.0}}))
    with pytest.raises(ValueError, match="fx, fy, u0, v0"):
        cityscapes.cityscapes_sequence_pairs(sequence_root, cities=["aachen"])
