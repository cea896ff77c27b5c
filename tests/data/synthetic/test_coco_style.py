"""Tests of the "coco" style: the synthetic stand-in for COCO, the segmentation task's dedicated data."""

import numpy as np

from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, check_element_spec
from taskology_tf.data.synthetic import dataset as dataset_lib
from taskology_tf.data.synthetic import render as render_lib
from taskology_tf.data.synthetic import scene as scene_lib
from taskology_tf.data.synthetic import style as style_lib

H, W = 32, 64


def _renders(seed):
    scene = scene_lib.sample_scene(np.random.default_rng(seed))
    return {s: render_lib.render(scene, 0.0, H, W, s) for s in ("sim", "real", "coco")}


def _class_mean(frame, name):
    mask = frame["segmentation"][..., 0] == CLASS_NAMES.index(name)
    assert mask.any(), name
    return frame["image"][mask].astype(np.float64).mean(axis=0)


def test_coco_is_a_registered_style():
    assert "coco" in style_lib.STYLES and "coco" in dataset_lib.STYLES
    assert style_lib.get_style("coco").name == "coco"


def test_coco_paints_the_same_geometry_in_a_different_look():
    for seed in (0, 1):
        frames = _renders(seed)
        coco = frames["coco"]
        for other in ("sim", "real"):
            for key in ("depth", "segmentation", "instance_ids", "normals"):
                np.testing.assert_array_equal(coco[key], frames[other][key])  # appearance only
            diff = np.abs(coco["image"].astype(np.float64) - frames[other]["image"]).mean()
            assert diff > 20.0, (other, diff)
        # Signature colours: red pavers and blue-grey asphalt, unlike the other styles.
        r, g, _ = _class_mean(coco, "sidewalk")
        assert r - g > 60
        assert all(np.subtract(*_class_mean(frames[s], "sidewalk")[:2]) < 40 for s in ("sim", "real"))
        road = _class_mean(coco, "road")
        assert road[2] > road[0] + 10
        assert _class_mean(frames["real"], "road")[2] < _class_mean(frames["real"], "road")[0]


def test_coco_examples_are_deterministic_and_have_their_own_ids():
    a = dataset_lib.render_example(2, style="coco", height=H, width=W)
    b = dataset_lib.render_example(2, style="coco", height=H, width=W)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    ids = {int(dataset_lib.render_example(2, style=s, height=8, width=16)["id"]) for s in ("sim", "real", "coco")}
    assert len(ids) == 3


def test_synthetic_dataset_with_the_coco_style():
    ds = dataset_lib.synthetic_dataset(style="coco", num_examples=3, height=H, width=W,
                                       keys=["image", "segmentation"], num_workers=1)
    assert set(ds.element_spec) == {"id", "image", "segmentation"}
    check_element_spec(ds.element_spec, ("id", "image", "segmentation"), "test")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 3
    for i, ex in enumerate(examples):
        assert ex["image"].shape == (H, W, 3) and ex["segmentation"].shape == (H, W, 1)
        labels = set(np.unique(ex["segmentation"]).tolist())
        assert labels <= set(range(len(CLASS_NAMES))) | {IGNORE_LABEL}
        assert int(ex["id"]) == dataset_lib.example_id(i, style="coco", seed=0)
