"""Tests of controlled label corruption: selection (fraction, determinism), permutations, uniform noise, tf.data."""

import numpy as np
import pytest

from taskology_tf.data import label_noise
from taskology_tf.data.example import IGNORE_LABEL

IDS = [int(i) for i in np.random.default_rng(0).integers(0, 2**62, size=1000)]


def test_selection_fraction_determinism_and_nesting():
    s40 = label_noise.corrupt_id_set(IDS, 0.4, seed=3)
    assert len(s40) == 400 and s40 <= set(IDS)
    assert label_noise.corrupt_id_set(list(reversed(IDS)), 0.4, seed=3) == s40  # order does not matter
    assert label_noise.corrupt_id_set(IDS, 0.4, seed=3) == s40
    s20 = label_noise.corrupt_id_set(IDS, 0.2, seed=3)
    assert len(s20) == 200 and s20 <= s40  # larger fractions select supersets
    other = label_noise.corrupt_id_set(IDS, 0.4, seed=4)
    assert 0.25 < len(s40 & other) / 400 < 0.55  # independent seeds overlap by about 40%
    assert label_noise.corrupt_id_set(IDS, 0.0, seed=3) == set()
    assert label_noise.corrupt_id_set(IDS, 1.0, seed=3) == set(IDS)
    # Threshold = fraction: each id independently, about that share.
    share = np.mean([label_noise.is_corrupt(i, 0.4, seed=3) for i in IDS])
    assert 0.35 < share < 0.45
    with pytest.raises(ValueError, match="fraction"):
        label_noise.corrupt_id_set(IDS, 1.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        label_noise.selection_score(1, seed=-1)


def test_permutation_really_permutes():
    labels = np.array([[0, 0, 1, 2], [2, 3, IGNORE_LABEL, 1]], np.int32)[..., None]
    rng = np.random.default_rng(0)
    out, table = label_noise.permute_labels(labels, 7, rng)
    assert out.shape == labels.shape and out.dtype == labels.dtype
    assert sorted(table) == [0, 1, 2, 3] and sorted(table.values()) == [0, 1, 2, 3]  # among the present classes
    assert all(old != new for old, new in table.items())  # a derangement
    valid = labels != IGNORE_LABEL
    np.testing.assert_array_equal(out[~valid], IGNORE_LABEL)
    for old, new in table.items():
        np.testing.assert_array_equal(out[labels == old], new)  # one relabelling per class
    assert np.all(out[valid] != labels[valid])

    out_all, table_all = label_noise.permute_labels(labels, 7, np.random.default_rng(1), among="all")
    assert all(old != new for old, new in table_all.items()) and len(set(table_all.values())) == 4
    assert set(table_all.values()) <= set(range(7))
    # One class present: mapped to another class.
    single, t = label_noise.permute_labels(np.full((2, 2), 5, np.int32), 7, np.random.default_rng(2))
    assert t[5] != 5 and np.all(single == t[5])
    # Only ignore: unchanged.
    blank = np.full((2, 2), IGNORE_LABEL, np.int32)
    np.testing.assert_array_equal(label_noise.permute_labels(blank, 7, rng)[0], blank)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 7\)"):
        label_noise.permute_labels(np.array([7]), 7, rng)
    with pytest.raises(ValueError, match="integer class ids"):
        label_noise.permute_labels(np.array([0.5]), 7, rng)


def test_uniform_noise_bounds_and_invalid_pixels():
    depth = np.where(np.arange(4000).reshape(40, 100, 1) % 3 == 0, 0.0, 0.3).astype(np.float32)
    out = label_noise.add_uniform_noise(depth, 0.0, 0.2, np.random.default_rng(0))
    valid = depth > 0
    np.testing.assert_array_equal(out[~valid], 0.0)
    noise = out[valid] - depth[valid]
    assert noise.min() >= -1e-7 and noise.max() < 0.2 + 1e-7
    assert abs(noise.mean() - 0.1) < 0.005 and noise.std() == pytest.approx(0.2 / np.sqrt(12), rel=0.05)
    # Negative noise never makes a valid pixel invalid.
    low = label_noise.add_uniform_noise(np.full((100,), 0.01, np.float32), -1.0, -0.5, np.random.default_rng(0))
    assert np.all(low > 0)
    with pytest.raises(ValueError, match="low <= high"):
        label_noise.add_uniform_noise(depth, 0.2, 0.0, np.random.default_rng(0))


def test_corrupt_example_is_deterministic_per_id_and_seed():
    labels = np.arange(6, dtype=np.int32).reshape(2, 3, 1)
    a = label_noise.corrupt_example(labels, 123, seed=1, kind="permutation", num_classes=6)
    np.testing.assert_array_equal(a, label_noise.corrupt_example(labels, 123, seed=1, kind="permutation",
                                                                 num_classes=6))
    others = [label_noise.corrupt_example(labels, i, seed=1, kind="permutation", num_classes=6) for i in range(124, 130)]
    assert any(not np.array_equal(a, o) for o in others)
    d = np.full((4, 4, 1), 0.2, np.float32)
    np.testing.assert_array_equal(label_noise.corrupt_example(d, 9, 0, "uniform"),
                                  label_noise.corrupt_example(d, 9, 0, "uniform"))
    with pytest.raises(ValueError, match="num_classes"):
        label_noise.corrupt_example(labels, 1, 0, "permutation")
    clean, flag = label_noise.maybe_corrupt(labels, 5, threshold=0.0, seed=0, kind="permutation", num_classes=6)
    assert flag is False and clean is not None and np.array_equal(clean, labels)


def test_tf_data_transform_matches_numpy_and_is_the_same_every_epoch():
    import tensorflow as tf

    n = 40
    rng = np.random.default_rng(5)
    ids = np.arange(7, 7 + n, dtype=np.int64) * 1_000_003
    seg = rng.integers(0, 7, size=(n, 4, 6, 1)).astype(np.int32)
    seg[:, 0, 0] = IGNORE_LABEL
    depth = np.where(rng.random((n, 4, 6, 1)) < 0.3, 0.0, 0.25).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices({"id": ids, "segmentation": seg, "depth": depth})

    noisy = label_noise.corrupt_labels(ds, "segmentation", 0.4, seed=11, ids=ids, num_classes=7)
    noisy = label_noise.corrupt_labels(noisy, "depth", 0.25, seed=12, ids=ids, low=0.0, high=0.2)
    assert noisy.element_spec["corrupt_segmentation"].dtype == tf.bool
    assert noisy.element_spec["segmentation"].shape == (4, 6, 1)
    epoch1, epoch2 = list(noisy.as_numpy_iterator()), list(noisy.as_numpy_iterator())
    expected_seg = label_noise.corrupt_id_set(ids, 0.4, seed=11)
    expected_depth = label_noise.corrupt_id_set(ids, 0.25, seed=12)
    assert {int(e["id"]) for e in epoch1 if e["corrupt_segmentation"]} == expected_seg and len(expected_seg) == 16
    assert {int(e["id"]) for e in epoch1 if e["corrupt_depth"]} == expected_depth and len(expected_depth) == 10
    for k, (e1, e2) in enumerate(zip(epoch1, epoch2)):
        np.testing.assert_array_equal(e1["segmentation"], e2["segmentation"])
        np.testing.assert_array_equal(e1["depth"], e2["depth"])
        i = int(e1["id"])
        if i in expected_seg:
            want = label_noise.corrupt_example(seg[k], i, 11, "permutation", num_classes=7)
            np.testing.assert_array_equal(e1["segmentation"], want)
            assert np.any(e1["segmentation"] != seg[k])
        else:
            np.testing.assert_array_equal(e1["segmentation"], seg[k])
        np.testing.assert_array_equal(e1["segmentation"][0, 0], IGNORE_LABEL)
        np.testing.assert_array_equal(e1["depth"][depth[k] == 0], 0.0)
        if i not in expected_depth:
            np.testing.assert_array_equal(e1["depth"], depth[k])

    # Without ids each example is selected with probability `fraction`; the flag agrees with exact=False.
    approx = list(label_noise.corrupt_labels(ds, "depth", 0.5, seed=1).as_numpy_iterator())
    assert {int(e["id"]) for e in approx if e["corrupt_depth"]} == label_noise.corrupt_id_set(ids, 0.5, 1, exact=False)
    plain = label_noise.corrupt_labels(ds, "depth", 0.5, seed=1, flag_key=None)
    assert "corrupt_depth" not in plain.element_spec
    with pytest.raises(ValueError, match="num_classes"):
        label_noise.corrupt_labels(ds, "segmentation", 0.4, seed=0)
    with pytest.raises(ValueError, match="unbatched"):
        label_noise.corrupt_labels(ds.batch(2), "depth", 0.4, seed=0)
    with pytest.raises(ValueError, match="'normals'"):
        label_noise.corrupt_labels(ds, "normals", 0.4, seed=0, kind="uniform")
    with pytest.raises(ValueError, match="already has a key"):
        label_noise.corrupt_labels(noisy, "depth", 0.4, seed=0)


def test_ids_read_from_the_dataset_give_the_exact_fraction():
    import tensorflow as tf

    ids = np.arange(50, dtype=np.int64) * 7919 + 3
    ds = tf.data.Dataset.from_tensor_slices({"id": ids, "depth": np.ones((50, 2, 2, 1), np.float32)})
    noisy = label_noise.corrupt_labels(ds, "depth", 0.4, seed=3, ids="dataset")
    flagged = {int(e["id"]) for e in noisy.as_numpy_iterator() if e["corrupt_depth"]}
    assert flagged == label_noise.corrupt_id_set(ids, 0.4, seed=3) and len(flagged) == 20
    with pytest.raises(ValueError, match="finite dataset"):
        label_noise.corrupt_labels(ds.repeat(), "depth", 0.4, seed=3, ids="dataset")
    with pytest.raises(ValueError, match="'dataset' or None"):
        label_noise.corrupt_labels(ds, "depth", 0.4, seed=3, ids="all")
