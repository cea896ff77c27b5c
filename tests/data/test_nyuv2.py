"""Tests of the NYUv2 reader: the real sample frame (rgb + 16-bit depth) and tiny .npy / PNG fixtures."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskology_tf.data import nyuv2
from taskology_tf.data.example import IGNORE_LABEL, check_element_spec

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nyu_sample"
STEM = "bookstore_0001d_00001"
needs_sample = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"real NYUv2 sample not found at {SAMPLE} (../shared/data is absent on fresh clones)")


def test_conversions():
    img = np.array([[[0.0, 0.5, 1.0]]], np.float32)
    np.testing.assert_array_equal(nyuv2.image_to_uint8(img), [[[0, 128, 255]]])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        nyuv2.image_to_uint8(img * 255)
    labels = nyuv2.labels_from_array(np.array([[-1.0, 0.0, 12.0, 255.0]]), 13)
    np.testing.assert_array_equal(labels[..., 0], [[IGNORE_LABEL, 0, 12, IGNORE_LABEL]])
    assert labels.shape == (1, 4, 1) and labels.dtype == np.int32
    with pytest.raises(ValueError, match=r"\[0, 13\).*\[13\]"):
        nyuv2.labels_from_array(np.array([[13]]), 13)
    np.testing.assert_array_equal(nyuv2.depth_from_array(np.array([[1.5, np.nan, -1.0]]))[..., 0], [[1.5, 0, 0]])
    t = nyuv2.label_png_table("1_to_13")
    assert t[0] == IGNORE_LABEL and t[1] == 0 and t[13] == 12 and t[14] == -1
    t = nyuv2.label_png_table("0_to_12")
    assert t[0] == 0 and t[12] == 12 and t[13] == -1 and t[255] == IGNORE_LABEL


@needs_sample
def test_real_sample_png_layout():
    assert nyuv2.detect_layout(str(SAMPLE)) == "png"
    ds = nyuv2.nyuv2_dataset(str(SAMPLE))
    assert "segmentation" not in ds.element_spec  # the sample has no labels
    check_element_spec(ds.element_spec, ("id", "image", "depth"), "test")
    (ex,) = list(ds.as_numpy_iterator())
    raw = np.asarray(Image.open(SAMPLE / "depth" / f"{STEM}.png"))
    assert ex["image"].shape == (120, 160, 3) and ex["depth"].shape == (120, 160, 1)
    np.testing.assert_allclose(ex["depth"][..., 0], raw / 1000.0, rtol=1e-6)
    assert 0.0 < np.median(ex["depth"][ex["depth"] > 0]) < 10.0  # metres, indoor
    rgb = np.asarray(Image.open(SAMPLE / "rgb" / f"{STEM}.jpg").convert("RGB")).astype(float)
    assert np.abs(ex["image"] - rgb).mean() < 2.0  # JPEG decoders may differ by a level
    small = next(iter(nyuv2.nyuv2_dataset(SAMPLE, height=60, width=80)))
    assert small["image"].shape == (60, 80, 3)
    np.testing.assert_allclose(small["depth"].numpy()[..., 0], raw[1::2, 1::2] / 1000.0, rtol=1e-6)  # nearest
    with pytest.raises(FileNotFoundError, match=r"labels \['segmentation'\]"):
        nyuv2.nyuv2_dataset(SAMPLE, labels=["segmentation", "depth"])


def _npy_fixture(root, n=3, h=6, w=8):
    rng = np.random.default_rng(0)
    data = []
    for folder in ("image", "label", "depth"):
        (root / "train" / folder).mkdir(parents=True)
    for i in range(n):
        image = rng.random((h, w, 3)).astype(np.float32)
        label = rng.integers(-1, 13, (h, w)).astype(np.float32)
        depth = (rng.random((h, w, 1)) * 5).astype(np.float32)
        depth[0] = 0
        np.save(root / "train" / "image" / f"{i}.npy", image)
        np.save(root / "train" / "label" / f"{i}.npy", label)
        np.save(root / "train" / "depth" / f"{i}.npy", depth)
        data.append((image, label, depth))
    # 10.npy sorts after 2.npy (numeric order).
    return data


def test_npy_layout(tmp_path):
    data = _npy_fixture(tmp_path, n=3)
    assert nyuv2.detect_layout(str(tmp_path / "train")) == "npy"
    ds = nyuv2.nyuv2_dataset(tmp_path, split="train")
    check_element_spec(ds.element_spec, ("id", "image", "segmentation", "depth"), "test")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 3 and len({int(e["id"]) for e in examples}) == 3
    for ex, (image, label, depth) in zip(examples, data):
        np.testing.assert_array_equal(ex["image"], np.round(image * 255).astype(np.uint8))
        np.testing.assert_array_equal(ex["segmentation"][..., 0], np.where(label < 0, IGNORE_LABEL, label))
        np.testing.assert_array_equal(ex["depth"], depth)
    resized = next(iter(nyuv2.nyuv2_dataset(tmp_path, split="train", height=3, width=4)))
    assert resized["segmentation"].shape == (3, 4, 1) and resized["depth"].shape == (3, 4, 1)
    # A label file out of range fails with the file named.
    np.save(tmp_path / "train" / "label" / "1.npy", np.full((6, 8), 20.0, np.float32))
    with pytest.raises(Exception, match=r"1\.npy: labels must be in \[0, 13\)"):
        list(nyuv2.nyuv2_dataset(tmp_path, split="train").as_numpy_iterator())
    (tmp_path / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match="lacks 1 files, e.g. 2.npy"):
        nyuv2.nyuv2_dataset(tmp_path, split="train")


def _png_fixture(root, encoding_offset):
    rng = np.random.default_rng(1)
    for folder in ("rgb", "label", "depth"):
        (root / folder).mkdir(parents=True)
    classes = rng.integers(0, 13, (6, 8))
    stored = (classes + encoding_offset).astype(np.uint8)
    stored[0, 0] = 0 if encoding_offset == 1 else 255  # void
    depth_mm = rng.integers(0, 10000, (6, 8)).astype(np.uint16)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(root / "rgb" / "a.png")
    Image.fromarray(stored).save(root / "label" / "a.png")
    Image.fromarray(depth_mm).save(root / "depth" / "a.png")
    return classes, depth_mm


@pytest.mark.parametrize("encoding,offset", [("1_to_13", 1), ("0_to_12", 0)])
def test_png_layout_with_labels(tmp_path, encoding, offset):
    classes, depth_mm = _png_fixture(tmp_path, offset)
    (ex,) = list(nyuv2.nyuv2_dataset(tmp_path, label_encoding=encoding).as_numpy_iterator())
    want = classes.copy()
    want[0, 0] = IGNORE_LABEL
    np.testing.assert_array_equal(ex["segmentation"][..., 0], want)
    np.testing.assert_allclose(ex["depth"][..., 0], depth_mm / 1000.0, rtol=1e-6)
    only_depth = nyuv2.nyuv2_dataset(tmp_path, labels=["depth"], label_encoding=encoding)
    assert "segmentation" not in only_depth.element_spec


def test_png_layout_errors(tmp_path):
    _png_fixture(tmp_path, 1)
    Image.fromarray(np.full((6, 8), 14, np.uint8)).save(tmp_path / "label" / "a.png")
    with pytest.raises(Exception, match="outside the 1_to_13 label_encoding"):
        list(nyuv2.nyuv2_dataset(tmp_path).as_numpy_iterator())
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "depth" / "a.png")
    with pytest.raises(ValueError, match="16-bit"):
        nyuv2.nyuv2_dataset(tmp_path)
    with pytest.raises(ValueError, match="layout"):
        nyuv2.nyuv2_dataset(tmp_path, layout="mat")
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        nyuv2.nyuv2_dataset(tmp_path, split="train")
    with pytest.raises(ValueError, match="not a string"):
        nyuv2.nyuv2_dataset(tmp_path, labels="depth")
