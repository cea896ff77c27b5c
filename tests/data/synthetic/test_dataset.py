"""Tests of synthetic examples and the in-memory tf.data dataset."""

import numpy as np
import pytest

from taskology_tf.data.example import IGNORE_LABEL, KEYS, check_element_spec
from taskology_tf.data.synthetic import dataset as dataset_lib

H, W = 32, 64


def _example(index=0, **kwargs):
    kwargs.setdefault("height", H)
    kwargs.setdefault("width", W)
    return dataset_lib.render_example(index, **kwargs)


def test_same_arguments_give_identical_examples_and_seeds_differ():
    a, b = _example(3, style="real", seed=1, with_next=True), _example(3, style="real", seed=1, with_next=True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = _example(3, style="real", seed=2, with_next=True)
    assert not np.array_equal(a["image"], c["image"]) and not np.array_equal(a["depth"], c["depth"])
    assert a["id"] != c["id"]


def test_styles_use_different_scene_streams_and_ids():
    sim, real = _example(0, style="sim"), _example(0, style="real")
    assert not np.array_equal(sim["depth"], real["depth"])  # different scenes, not just different colours
    ids = {int(_example(i, style=s, seed=seed)["id"]) for i in range(3) for s in ("sim", "real") for seed in (0, 1)}
    assert len(ids) == 12
    assert int(sim["id"]) == dataset_lib.example_id(0, style="sim", seed=0)
    assert dataset_lib.example_id(5, style="sim", seed=0) == dataset_lib.example_id(5, style="sim", seed=0)
    assert dataset_lib.split_seed(0, "train") != dataset_lib.split_seed(0, "val")


def test_dense_traffic_is_its_own_stream_with_more_moving_pixels():
    normal, dense = _example(1, style="city"), _example(1, style="city", traffic="dense")
    assert int(dense["id"]) == dataset_lib.example_id(1, style="city", seed=0, traffic="dense") != int(normal["id"])
    assert int(normal["id"]) == dataset_lib.example_id(1, style="city", seed=0)  # the normal stream's ids as before
    moving = {"normal": 0, "dense": 0}
    for i in range(6):
        for traffic in moving:
            ex = dataset_lib.render_example(i, style="city", height=32, width=64, with_next=True, next_labels=True,
                                            traffic=traffic)
            moving[traffic] += int(np.any(ex["object_motion"] != 0, axis=-1).sum())
    assert moving["dense"] > 2 * moving["normal"], moving
    with pytest.raises(ValueError, match="traffic"):
        dataset_lib.render_example(0, traffic="jam")


@pytest.mark.parametrize("with_next", [False, True])
def test_example_keys_shapes_and_dtypes_follow_the_contract(with_next):
    ex = _example(1, with_next=with_next)
    expected = set(dataset_lib.FRAME_KEYS) | (set(dataset_lib.NEXT_KEYS) if with_next else set())
    assert set(ex) == expected
    for key, value in ex.items():
        spec = KEYS[key]
        assert value.dtype == np.dtype(spec.dtype), key
        assert len(value.shape) == len(spec.shape), key
        assert all(d is None or d == s for d, s in zip(spec.shape, value.shape)), key
        if len(spec.shape) == 3:
            assert value.shape[:2] == (H, W), key


def test_ego_motion_is_the_relative_pose():
    ex = _example(2, with_next=True)
    pose, pose_next = ex["pose"].astype(np.float64), ex["pose_next"].astype(np.float64)
    np.testing.assert_allclose(ex["ego_motion"], np.linalg.inv(pose_next) @ pose, atol=1e-5)
    step = np.linalg.norm(ex["ego_motion"][:3, 3])
    assert 0.5 - 1e-6 <= step <= 1.5 + 1e-6  # 5-15 m/s for 0.1 s
    assert ex["ego_motion"][2, 3] < 0  # the scene comes towards a forward-moving camera
    turn = np.arctan2(ex["ego_motion"][0, 2], ex["ego_motion"][0, 0])
    assert 0 < abs(turn) <= np.deg2rad(0.3) + 1e-6  # a gentle steer: up to 3 deg/s


def test_render_example_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown style"):
        dataset_lib.render_example(0, style="anime")
    with pytest.raises(ValueError, match="height"):
        dataset_lib.render_example(0, height=0)
    with pytest.raises(ValueError, match="index"):
        dataset_lib.render_example(-1)
    with pytest.raises(ValueError, match="seed"):
        dataset_lib.render_example(0, seed=-3)


@pytest.fixture(scope="module")
def pair_dataset():
    return dataset_lib.synthetic_dataset("sim", 6, height=H, width=W, with_next=True, num_workers=1)


def test_dataset_element_spec_and_contents(pair_dataset):
    spec = pair_dataset.element_spec
    keys = list(dataset_lib.FRAME_KEYS) + list(dataset_lib.NEXT_KEYS)
    assert sorted(spec) == sorted(keys)
    check_element_spec(spec, keys, "test")
    assert tuple(spec["image"].shape) == (H, W, 3) and tuple(spec["depth"].shape) == (H, W, 1)
    elements = list(pair_dataset.as_numpy_iterator())
    assert len(elements) == 6
    for i, element in enumerate(elements):
        ex = _example(i, with_next=True)
        for key in keys:
            np.testing.assert_array_equal(element[key], ex[key])


def test_dataset_is_cached_per_arguments():
    first = dataset_lib.synthetic_arrays("sim", 6, height=H, width=W, with_next=True, num_workers=1)
    again = dataset_lib.synthetic_arrays("sim", 6, height=H, width=W, with_next=True)
    assert first is again
    assert not first["image"].flags.writeable
    other = dataset_lib.synthetic_arrays("sim", 6, seed=1, height=H, width=W, with_next=True, num_workers=1)
    assert other is not first and not np.array_equal(other["image"], first["image"])


def test_keys_subset_and_masked_unlabelled_keys(pair_dataset):
    ds = dataset_lib.synthetic_dataset("sim", 6, height=H, width=W, with_next=True,
                                       keys=("image", "depth", "normals", "segmentation", "ego_motion"),
                                       unlabelled=("depth", "normals", "segmentation"))
    assert sorted(ds.element_spec) == sorted(["id", "image", "depth", "normals", "segmentation", "ego_motion"])
    for masked, full in zip(ds.as_numpy_iterator(), pair_dataset.as_numpy_iterator()):
        assert np.all(masked["depth"] == 0) and np.all(masked["normals"] == 0)
        assert np.all(masked["segmentation"] == IGNORE_LABEL)
        np.testing.assert_array_equal(masked["image"], full["image"])
        np.testing.assert_array_equal(masked["ego_motion"], full["ego_motion"])
        assert masked["id"] == full["id"]
        assert np.any(full["depth"] > 0)
    # Labelled and unlabelled datasets share one structure, so they can be mixed.
    labelled = dataset_lib.synthetic_dataset("sim", 6, height=H, width=W, with_next=True,
                                             keys=("image", "depth", "normals", "segmentation", "ego_motion"))
    assert labelled.element_spec == ds.element_spec


def test_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown style"):
        dataset_lib.synthetic_dataset("toon", 4)
    with pytest.raises(ValueError, match="unknown key"):
        dataset_lib.synthetic_dataset("sim", 4, height=H, width=W, keys=("image", "lidar"))
    with pytest.raises(ValueError, match="with_next=True"):
        dataset_lib.synthetic_dataset("sim", 4, height=H, width=W, keys=("image_next",))
    with pytest.raises(ValueError, match="cannot mask"):
        dataset_lib.synthetic_dataset("sim", 4, height=H, width=W, unlabelled=("image",))
    with pytest.raises(ValueError, match="not among the selected keys"):
        dataset_lib.synthetic_dataset("sim", 4, height=H, width=W, keys=("image",), unlabelled=("depth",))
    for bad in (dict(num_examples=0), dict(height=-32), dict(width=0)):
        kwargs = dict(num_examples=4, height=H, width=W) | bad
        with pytest.raises(ValueError, match="positive"):
            dataset_lib.synthetic_dataset("sim", **kwargs)


def test_sizes_need_not_be_multiples_of_32():
    ds = dataset_lib.synthetic_dataset("real", 2, height=20, width=36, keys=("image",), num_workers=1)
    assert tuple(ds.element_spec["image"].shape) == (20, 36, 3)


def test_worker_processes_render_the_same_examples(capfd):
    indices = list(range(17))
    kwargs = dict(style="real", seed=4, height=16, width=32)
    parallel = list(dataset_lib.render_examples(indices, num_workers=2, progress=True, **kwargs))
    assert "rendering real 16x32" in capfd.readouterr().err  # the progress bar goes to stderr
    serial = list(dataset_lib.render_examples(indices, num_workers=1, **kwargs))
    assert len(parallel) == len(serial) == 17
    for a, b in zip(parallel, serial):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    list(dataset_lib.render_examples(range(3), num_workers=1, **kwargs))
    assert capfd.readouterr().err == ""  # no bar for few examples
