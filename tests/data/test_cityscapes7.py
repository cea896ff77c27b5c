"""Tests of the 7-class Cityscapes reader: mapping tables, disparity targets, the real frame and tiny fixtures."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskology_tf.data import cityscapes, cityscapes7
from taskology_tf.data.example import IGNORE_LABEL, check_element_spec

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cityscapes_sample"
STEM = "frankfurt_000000_000294"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"real Cityscapes sample not found at {SAMPLE} (../shared/data is absent on fresh clones)")

# Written out independently of the module, from cityscapesScripts' catIds (class = catId - 1; void -> ignore).
CAT_RANGES = {0: range(7, 11), 1: range(11, 17), 2: range(17, 21), 3: range(21, 23), 4: [23], 5: [24, 25],
              6: range(26, 34)}
TRAIN_RANGES = {0: [0, 1], 1: [2, 3, 4], 2: [5, 6, 7], 3: [8, 9], 4: [10], 5: [11, 12], 6: range(13, 19)}


def _expected(values, ranges):
    out = np.full(np.shape(values), IGNORE_LABEL, np.int32)
    for cls, ids in ranges.items():
        out[np.isin(values, list(ids))] = cls
    return out


def test_lookup_tables():
    np.testing.assert_array_equal(cityscapes7.label_lookup_table("labelIds"), _expected(np.arange(256), CAT_RANGES))
    np.testing.assert_array_equal(cityscapes7.label_lookup_table("labelTrainIds"),
                                  _expected(np.arange(256), TRAIN_RANGES))
    assert cityscapes7.CATEGORY_NAMES[cityscapes7.label_lookup_table()[26]] == "vehicle"
    with pytest.raises(ValueError, match="label_source"):
        cityscapes7.label_lookup_table("color")


def test_disparity_targets():
    p = np.array([0, 1, 257, 25601], np.uint16)
    d = cityscapes7.disparity_from_png(p)
    np.testing.assert_allclose(d, [0.0, 0.0, 1.0, 100.0])
    np.testing.assert_allclose(cityscapes7.depth_target_from_disparity(d), [0, 0, 1 / 256, 100 / 256])
    np.testing.assert_allclose(cityscapes7.depth_target_from_disparity(d, "disparity_px"), d)
    np.testing.assert_allclose(cityscapes7.depth_target_from_disparity(d, "metres", baseline_fx=0.2 * 2000.0),
                               [0, 0, 400.0, 4.0], rtol=1e-6)
    with pytest.raises(ValueError, match="baseline_fx"):
        cityscapes7.depth_target_from_disparity(d, "metres")
    with pytest.raises(ValueError, match="depth_target"):
        cityscapes7.depth_target_from_disparity(d, "inverse")


def _write_frame(root, split, city, stem, image, label_ids, disparity_png=None, camera=None):
    for folder, suffix, array in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds", label_ids)):
        d = root / folder / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(d / f"{stem}_{suffix}.png")
    train_ids = np.full_like(label_ids, 255)
    for train_id, label_id in enumerate([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]):
        train_ids[label_ids == label_id] = train_id
    Image.fromarray(train_ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
    if disparity_png is not None:
        d = root / "disparity" / split / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(disparity_png).save(d / f"{stem}_disparity.png")  # uint16 -> 16-bit PNG
    if camera is not None:
        d = root / "camera" / split / city
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}_camera.json").write_text(json.dumps(camera))


@pytest.fixture
def fixture_root(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 16, 32
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label_ids = (np.arange(h * w).reshape(h, w) % 35).astype(np.uint8)  # every label id 0-34
    disparity = rng.integers(0, 30000, (h, w)).astype(np.uint16)
    disparity[:, :3] = 0
    camera = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 16.0, "v0": 8.0}}
    _write_frame(tmp_path, "train", "ulm", "ulm_000001_000019", image, label_ids, disparity, camera)
    _write_frame(tmp_path, "train", "aachen", "aachen_000002_000019", image[::-1].copy(), label_ids[::-1].copy(),
                 disparity[::-1].copy(), camera)
    return tmp_path, image, label_ids, disparity


def test_fixture_full_size_all_targets(fixture_root):
    root, image, label_ids, disparity = fixture_root
    ds = cityscapes7.cityscapes7_dataset(str(root), split="train", height=None, width=None)
    check_element_spec(ds.element_spec, ("id", "image", "segmentation", "depth"), "test")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 2  # aachen first (sorted by city)
    ex = examples[1]
    np.testing.assert_array_equal(ex["image"], image)
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _expected(label_ids, CAT_RANGES))
    np.testing.assert_allclose(ex["depth"][..., 0], cityscapes7.disparity_from_png(disparity) / 256.0, rtol=1e-6)
    assert np.all(ex["depth"][:, :3] == 0)
    assert int(ex["id"]) == cityscapes.cityscapes_labelled_examples(root, split="train")[1].id  # shared ids

    px = list(cityscapes7.cityscapes7_dataset(root, split="train", height=None, width=None,
                                              depth_target="disparity_px").as_numpy_iterator())[1]
    np.testing.assert_allclose(px["depth"][..., 0], cityscapes7.disparity_from_png(disparity), rtol=1e-6)
    metres = list(cityscapes7.cityscapes7_dataset(root, split="train", height=None, width=None,
                                                  depth_target="metres").as_numpy_iterator())[1]
    want = cityscapes7.depth_target_from_disparity(cityscapes7.disparity_from_png(disparity), "metres", 400.0)
    np.testing.assert_allclose(metres["depth"][..., 0], want, rtol=1e-5)

    train = list(cityscapes7.cityscapes7_dataset(root, split="train", height=None, width=None,
                                                 label_source="labelTrainIds", with_depth=False).as_numpy_iterator())
    assert "depth" not in train[1]
    seg7, seg19 = ex["segmentation"], train[1]["segmentation"]
    keep = seg19 != IGNORE_LABEL
    np.testing.assert_array_equal(seg19[keep], seg7[keep])  # the train-id route agrees where it has labels
    assert set(np.unique(seg7[~keep])) == {0, 1, 2, 6, IGNORE_LABEL}  # parking, guard rail, polegroup, caravan...


def test_fixture_resized_nearest(fixture_root):
    root, image, label_ids, disparity = fixture_root
    ds = cityscapes7.cityscapes7_dataset(root, split="train", cities=["ulm"], height=8, width=16)
    (ex,) = list(ds.as_numpy_iterator())
    assert ex["image"].shape == (8, 16, 3) and ex["segmentation"].shape == (8, 16, 1) and ex["depth"].shape == (8, 16, 1)
    # Nearest neighbour: every output value is one of the 2x2 block's input values.
    seg = _expected(label_ids, CAT_RANGES).reshape(8, 2, 16, 2)
    assert np.all((seg == ex["segmentation"][:, None, :, None, 0]).any(axis=(1, 3)))
    dep = (cityscapes7.disparity_from_png(disparity) / 256.0).reshape(8, 2, 16, 2)
    assert np.all(np.isclose(dep, ex["depth"][:, None, :, None, 0]).any(axis=(1, 3)))
    # Default size is the paper's 128x256.
    default = next(iter(cityscapes7.cityscapes7_dataset(root, split="train")))
    assert default["image"].shape == (128, 256, 3) and default["depth"].shape == (128, 256, 1)


def test_fixture_errors(fixture_root, tmp_path):
    root, *_ = fixture_root
    (root / "disparity" / "train" / "ulm" / "ulm_000001_000019_disparity.png").unlink()
    with pytest.raises(FileNotFoundError, match="ulm_000001_000019_disparity.png.*with_depth=False"):
        cityscapes7.cityscapes7_frames(root, split="train")
    (root / "camera" / "train" / "aachen" / "aachen_000002_000019_camera.json").write_text("{}")
    with pytest.raises(ValueError, match="baseline"):
        cityscapes7.cityscapes7_frames(root, split="train", cities=["aachen"], depth_target="metres")
    with pytest.raises(ValueError, match="depth_target"):
        cityscapes7.cityscapes7_frames(root, split="train", depth_target="depth")


@needs_sample
def test_real_frame_segmentation():
    ds = cityscapes7.cityscapes7_dataset(str(SAMPLE), split="val", with_depth=False)
    check_element_spec(ds.element_spec, ("id", "image", "segmentation"), "test")
    (ex,) = list(ds.as_numpy_iterator())
    label_ids = np.asarray(Image.open(SAMPLE / "gtFine" / "val" / "frankfurt" / f"{STEM}_gtFine_labelIds.png"))
    assert ex["segmentation"].shape == (128, 256, 1)  # the sample is already 128x256
    np.testing.assert_array_equal(ex["segmentation"][..., 0], _expected(label_ids, CAT_RANGES))
    present = {cityscapes7.CATEGORY_NAMES[c] for c in np.unique(ex["segmentation"]) if c != IGNORE_LABEL}
    assert present == {"flat", "construction", "object", "nature", "sky", "human", "vehicle"}
    train = next(iter(cityscapes7.cityscapes7_dataset(SAMPLE, split="val", with_depth=False,
                                                      label_source="labelTrainIds")))["segmentation"].numpy()
    keep = train != IGNORE_LABEL
    assert keep.mean() > 0.5
    # The sample's labelIds and labelTrainIds PNGs were downscaled separately: they disagree on ~0.2% of pixels.
    assert np.mean(train[keep] == ex["segmentation"][keep]) > 0.99


@needs_sample
def test_real_frame_with_a_generated_disparity(tmp_path):
    for sub in ("leftImg8bit", "gtFine"):
        shutil.copytree(SAMPLE / sub, tmp_path / sub)
    disparity = np.random.default_rng(1).integers(0, 40000, (128, 256)).astype(np.uint16)
    d = tmp_path / "disparity" / "val" / "frankfurt"
    d.mkdir(parents=True)
    Image.fromarray(disparity).save(d / f"{STEM}_disparity.png")
    (ex,) = list(cityscapes7.cityscapes7_dataset(tmp_path, split="val", height=64, width=128).as_numpy_iterator())
    assert ex["image"].shape == (64, 128, 3) and ex["depth"].dtype == np.float32
    # Nearest neighbour picks pixel 2i+1 of each 2x2 block (half-pixel centres).
    np.testing.assert_allclose(ex["depth"][..., 0], cityscapes7.disparity_from_png(disparity)[1::2, 1::2] / 256.0,
                               rtol=1e-6)


def test_mtan_preprocessed_npy_release(tmp_path):
    rng = np.random.default_rng(3)
    for folder in ("image", "label_7", "depth"):
        (tmp_path / "val" / folder).mkdir(parents=True)
    label = rng.integers(-1, 7, (4, 8)).astype(np.float32)
    depth = rng.random((4, 8, 1)).astype(np.float32) * 0.1
    np.save(tmp_path / "val" / "image" / "0.npy", rng.random((4, 8, 3)).astype(np.float32))
    np.save(tmp_path / "val" / "label_7" / "0.npy", label)
    np.save(tmp_path / "val" / "depth" / "0.npy", depth)
    (ex,) = list(cityscapes7.cityscapes7_preprocessed_dataset(tmp_path, split="val").as_numpy_iterator())
    np.testing.assert_array_equal(ex["segmentation"][..., 0], np.where(label < 0, IGNORE_LABEL, label))
    np.testing.assert_array_equal(ex["depth"], depth)
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (4, 8, 3)
