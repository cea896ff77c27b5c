"""Tests of the COCO 2017 panoptic reader on a tiny fixture written by the test (two images)."""

import json

import numpy as np
import pytest
from PIL import Image

from taskology_tf.data import coco
from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, check_element_spec

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
    {"id": 8, "name": "truck", "isthing": 1, "supercategory": "vehicle"},
    {"id": 10, "name": "traffic light", "isthing": 1, "supercategory": "outdoor"},
    {"id": 67, "name": "dining table", "isthing": 1, "supercategory": "furniture"},
    {"id": 149, "name": "road", "isthing": 0, "supercategory": "ground"},
    {"id": 184, "name": "tree-merged", "isthing": 0, "supercategory": "plant"},
    {"id": 187, "name": "sky-other-merged", "isthing": 0, "supercategory": "sky"},
    {"id": 199, "name": "wall-other-merged", "isthing": 0, "supercategory": "wall"},
]
# Segment id -> category id of image 42 (ids exercise all three RGB channels).
SEGMENTS_42 = {1: 1, 3 * 256 + 5: 3, 2 * 65536 + 7: 187, 40: 199, 41: 149, 300: 8, 301: 10, 70000: 184}
H, W = 6, 8


def _segment_map():
    """[H, W] segment ids of image 42: column i holds the i-th segment; row 0 is void (0), row 1 an unknown id (9)."""
    seg = np.tile(np.array(list(SEGMENTS_42), np.int64), (H, 1))
    seg[0], seg[1] = 0, 9
    return seg


def _expected_classes(seg):
    name_of = {c["id"]: c["name"] for c in CATEGORIES}
    table = {"person": "pedestrian", "car": "car", "truck": "car", "traffic light": "pole", "road": "road",
             "tree-merged": "vegetation", "sky-other-merged": "sky"}
    out = np.full(seg.shape, IGNORE_LABEL, np.int32)
    for sid, cat in SEGMENTS_42.items():
        if name_of[cat] in table:
            out[seg == sid] = CLASS_NAMES.index(table[name_of[cat]])
    return out


def _rgb(seg):
    return np.stack([seg % 256, (seg // 256) % 256, seg // 65536], axis=-1).astype(np.uint8)


@pytest.fixture
def coco_root(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "val2017").mkdir()
    (tmp_path / "panoptic_val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    image_42 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(image_42).save(tmp_path / "val2017" / "000000000042.png")
    Image.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "val2017" / "000000000007.jpg")  # greyscale JPEG
    Image.fromarray(_rgb(_segment_map())).save(tmp_path / "panoptic_val2017" / "000000000042.png")
    Image.fromarray(_rgb(np.full((4, 4), 5))).save(tmp_path / "panoptic_val2017" / "000000000007.png")
    data = {
        "images": [{"id": 42, "file_name": "000000000042.png", "height": H, "width": W},
                   {"id": 7, "file_name": "000000000007.jpg", "height": 4, "width": 4}],
        "annotations": [
            {"image_id": 42, "file_name": "000000000042.png",
             "segments_info": [{"id": sid, "category_id": cat, "iscrowd": int(sid == 300), "area": 1,
                                "bbox": [0, 0, 1, 1]} for sid, cat in SEGMENTS_42.items()]},
            {"image_id": 7, "file_name": "000000000007.png",
             "segments_info": [{"id": 5, "category_id": 67, "iscrowd": 0, "area": 16, "bbox": [0, 0, 4, 4]}]},
        ],
        "categories": CATEGORIES,
    }
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    return tmp_path, image_42


def test_category_table_maps_names_and_ignores_the_rest():
    classes = coco.category_classes(CATEGORIES)
    assert CLASS_NAMES[classes[1]] == "pedestrian" and CLASS_NAMES[classes[8]] == "car"
    assert CLASS_NAMES[classes[10]] == "pole" and CLASS_NAMES[classes[184]] == "vegetation"
    assert classes[67] == IGNORE_LABEL and classes[199] == IGNORE_LABEL
    assert set(coco.CATEGORY_TO_CLASS.values()) == set(CLASS_NAMES)  # every project class has a COCO source


def test_examples_sorted_by_image_id_with_segment_tables(coco_root):
    root, _ = coco_root
    examples = coco.coco_panoptic_examples(root, split="val")
    assert [e.path.rsplit("/", 1)[-1] for e in examples] == ["000000000007.jpg", "000000000042.png"]
    assert examples[0].segment_ids == (0, 5) and examples[0].classes == (IGNORE_LABEL, IGNORE_LABEL)
    assert examples[1].segment_ids == tuple(sorted([0, *SEGMENTS_42]))
    assert len({e.id for e in examples}) == 2
    kept = coco.coco_panoptic_examples(root, split="val", skip_unlabelled=True)
    assert [e.id for e in kept] == [examples[1].id]


def test_dataset_decodes_segment_ids_and_maps_classes(coco_root):
    root, image_42 = coco_root
    ds = coco.coco_panoptic_dataset(str(root), split="val")
    check_element_spec(ds.element_spec, ("id", "image", "segmentation"), "test")
    grey, ex = list(ds.as_numpy_iterator())
    assert grey["image"].shape == (4, 4, 3) and np.all(np.abs(grey["image"].astype(int) - 128) <= 2)
    assert np.all(grey["segmentation"] == IGNORE_LABEL)
    np.testing.assert_array_equal(ex["image"], image_42)
    assert ex["segmentation"].dtype == np.int32 and ex["segmentation"].shape == (H, W, 1)
    expected = _expected_classes(_segment_map())
    np.testing.assert_array_equal(ex["segmentation"][..., 0], expected)
    assert {CLASS_NAMES[c] for c in np.unique(expected) if c != IGNORE_LABEL} == {
        "pedestrian", "car", "sky", "road", "pole", "vegetation"}
    assert np.all(expected[:2] == IGNORE_LABEL)  # void and the id missing from the json


def test_dataset_resizes_images_and_labels_nearest(coco_root):
    root, _ = coco_root
    ds = coco.coco_panoptic_dataset(root, split="val", skip_unlabelled=True, height=3, width=4,
                                    resize_method="bilinear")
    assert ds.element_spec["segmentation"].shape == (3, 4, 1)
    (ex,) = list(ds.as_numpy_iterator())
    assert ex["image"].shape == (3, 4, 3)
    blocks = _expected_classes(_segment_map()).reshape(3, 2, 4, 2)
    assert np.all((blocks == ex["segmentation"][:, None, :, None, 0]).any(axis=(1, 3)))


def test_panoptic_pngs_under_annotations_are_found(coco_root):
    root, _ = coco_root
    (root / "panoptic_val2017").rename(root / "annotations" / "panoptic_val2017")
    assert len(coco.coco_panoptic_examples(root, split="val")) == 2


def test_errors_name_the_expected_layout(coco_root, tmp_path):
    root, _ = coco_root
    with pytest.raises(FileNotFoundError, match="does not exist.*panoptic_<split>2017.json"):
        coco.coco_panoptic_examples(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="panoptic_train2017.json"):
        coco.coco_panoptic_dataset(root, split="train")
    (root / "val2017" / "000000000007.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000000007.jpg"):
        coco.coco_panoptic_examples(root, split="val")
    (root / "panoptic_val2017").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match="panoptic_val2017"):
        coco.coco_panoptic_examples(root, split="val")
