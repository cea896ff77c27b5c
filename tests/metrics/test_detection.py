"""Tests for taskology_tf.metrics.detection: Waymo-style AP/APH on hand-computed cases."""

import itertools

import numpy as np
import pytest

from taskology_tf.metrics.detection import (
    DetectionMetrics,
    average_precision,
    difficulty_levels,
    heading_accuracy,
    match_detections,
)

# AP of the operating points (recall, precision) = (1, 2/3), (0.5, 0.5), (0.5, 1), (0, 1) with the
# Waymo integration: the gap 1 -> 0.5 is filled every 0.05 with the envelope 2/3 down to 0.55,
# then a trapezoid 0.55 -> 0.5 between 2/3 and 1, then precision 1 down to recall 0.
HAND_AP = 0.45 * 2.0 / 3.0 + 0.05 * (2.0 / 3.0 + 1.0) / 2.0 + 0.5


def _car(x, y=0.0, heading=0.0):
    return [x, y, 0.8, 4.5, 2.0, 1.6, heading]


def _boxes(*rows):
    return np.array(rows, np.float64).reshape(-1, 7)


GT = _boxes(_car(0.0), _car(20.0), _car(0.0, 10.0))


def _metrics(**kw):
    return DetectionMetrics(**kw)


def test_perfect_predictions_give_ap_one_and_aph_halves_with_perpendicular_headings():
    m = _metrics()
    m.update(GT, np.array([0.9, 0.8, 0.7]), GT)
    r = m.result()
    for key in ("ap_3d_l1", "aph_3d_l1", "ap_bev_l1", "aph_bev_l1", "ap_3d_l2", "aph_bev_l2"):
        assert r[key] == pytest.approx(1.0, abs=1e-6), key
    assert r["num_gt_l1"] == 3 and r["num_frames"] == 1 and r["num_predictions"] == 3

    # Boxes with a square footprint rotated by pi/2 overlap perfectly: TP with heading accuracy 0.5.
    square = GT.copy()
    square[:, 3:5] = 2.0
    turned = square.copy()
    turned[:, 6] += np.pi / 2
    m = _metrics()
    m.update(turned, np.array([0.9, 0.8, 0.7]), square)
    r = m.result()
    assert r["ap_3d_l2"] == pytest.approx(1.0, abs=1e-6)
    assert r["aph_3d_l2"] == pytest.approx(0.5, abs=1e-6)
    assert r["aph_bev_l1"] == pytest.approx(0.5, abs=1e-6)

    # A flip by pi keeps IoU 1 but has heading accuracy 0.
    m = _metrics()
    flipped = GT.copy()
    flipped[:, 6] += np.pi
    m.update(flipped, np.array([0.9, 0.8, 0.7]), GT)
    assert m.result()["ap_bev_l2"] == pytest.approx(1.0, abs=1e-6)
    assert m.result()["aph_bev_l2"] == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_precision_recall_case():
    gt = GT[:2]
    pred = _boxes(_car(0.0), _car(50.0), _car(20.0))  # TP, FP, TP
    m = _metrics()
    m.update(pred, np.array([0.9, 0.6, 0.3]), gt)
    c = m.curves("3d", level=2)
    cut = c["score_cutoffs"]
    i = np.searchsorted(cut, [0.0, 0.3, 0.31, 0.6, 0.61, 0.9, 0.91, 1.0])
    np.testing.assert_allclose(c["recall"][i], [1, 1, 0.5, 0.5, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(c["precision"][i], [2 / 3, 2 / 3, 0.5, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(c["fp"][i], [1, 1, 1, 1, 0, 0, 0, 0])
    assert m.result()["ap_3d_l1"] == pytest.approx(HAND_AP, abs=1e-6)
    assert average_precision([2 / 3, 0.5, 1.0, 1.0], [1.0, 0.5, 0.5, 0.0]) == pytest.approx(HAND_AP, abs=1e-9)


def test_frames_accumulate_like_one_frame():
    m = _metrics()
    m.update(_boxes(_car(0.0)), np.array([0.9]), _boxes(_car(0.0)))
    m.update(_boxes(_car(50.0), _car(20.0)), np.array([0.6, 0.3]), _boxes(_car(20.0)))
    assert m.result()["ap_bev_l2"] == pytest.approx(HAND_AP, abs=1e-6)
    m.reset()
    assert np.isnan(m.result()["ap_bev_l2"])


def test_duplicate_detection_is_a_false_positive():
    gt = GT[:2]
    pred = _boxes(_car(0.0), _car(0.1), _car(20.0))  # the second is a duplicate of the first
    m = _metrics()
    m.update(pred, np.array([0.9, 0.8, 0.5]), gt)
    c = m.curves("3d")
    assert c["tp"][0] == 2 and c["fp"][0] == 1 and c["fn"][0] == 0
    assert m.result()["ap_3d_l2"] == pytest.approx(HAND_AP, abs=1e-6)
    m = _metrics()
    m.update(pred[[0, 2]], np.array([0.9, 0.5]), gt)
    assert m.result()["ap_3d_l2"] == pytest.approx(1.0, abs=1e-6)


def test_iou_threshold_and_misses():
    gt = GT[:1]
    shifted = _boxes(_car(0.9))  # BEV IoU = 3.6 / 5.4 = 0.667 < 0.7
    m = _metrics()
    m.update(shifted, np.array([0.9]), gt)
    assert m.result()["ap_bev_l2"] == pytest.approx(0.0, abs=1e-6)
    m = _metrics(iou_threshold=0.6)
    m.update(shifted, np.array([0.9]), gt)
    assert m.result()["ap_bev_l2"] == pytest.approx(1.0, abs=1e-6)
    # One of two ground truths found: recall 0.5 at precision 1 -> AP 0.5.
    m = _metrics()
    m.update(GT[:1], np.array([0.9]), GT[:2])
    assert m.result()["ap_3d_l2"] == pytest.approx(0.5, abs=1e-6)


def test_level_1_ignores_level_2_ground_truths():
    # GT 0: LEVEL_1; GT 1: LEVEL_2 by point count; GT 2: marked LEVEL_2. Predictions hit GT 0 and 1.
    m = _metrics()
    m.update(GT[:2], np.array([0.9, 0.8]), GT, gt_difficulty=[1, 0, 2], gt_num_points=[100, 3, 50])
    r = m.result()
    assert r["num_gt_l1"] == 1 and r["num_gt_l2"] == 3
    assert r["ap_3d_l1"] == pytest.approx(1.0, abs=1e-6)  # no FP for the LEVEL_2 hit, no FN for GT 2
    assert r["ap_3d_l2"] == pytest.approx(2.0 / 3.0, abs=1e-6)  # GT 2 missed
    c1, c2 = m.curves("3d", 1), m.curves("3d", 2)
    assert c1["tp"][0] == c2["tp"][0] == 2 and c1["fp"][0] == 0
    assert c1["fn"][0] == 0 and c2["fn"][0] == 1


def test_empty_ground_truths_are_dropped():
    m = _metrics()
    m.update(GT[:1], np.array([0.9]), GT[:2], gt_num_points=[40, 0])
    assert m.result()["num_gt_l2"] == 1 and m.result()["ap_3d_l2"] == pytest.approx(1.0, abs=1e-6)
    m = _metrics(drop_empty_ground_truths=False)
    m.update(GT[:1], np.array([0.9]), GT[:2], gt_num_points=[40, 0])
    assert m.result()["ap_3d_l2"] == pytest.approx(0.5, abs=1e-6)


def test_3d_and_bev_differ_with_height_offset():
    pred = GT.copy()
    pred[:, 2] += 0.6  # z overlap 1.0 of 1.6 -> 3D IoU 1.0 / 2.2 < 0.7, BEV IoU 1
    m = _metrics()
    m.update(pred, np.array([0.9, 0.8, 0.7]), GT)
    r = m.result()
    assert r["ap_bev_l1"] == pytest.approx(1.0, abs=1e-6)
    assert r["ap_3d_l1"] == pytest.approx(0.0, abs=1e-6)


def test_hungarian_beats_score_first_on_a_conflict():
    iou = np.array([[0.88, 0.84], [0.86, 0.0]])
    np.testing.assert_array_equal(match_detections(iou, 0.7), [1, 0])
    np.testing.assert_array_equal(match_detections(iou, 0.7, scores=[0.9, 0.8], method="score_first"), [0, -1])
    assert np.all(match_detections(np.zeros((3, 0)), 0.7) == -1)


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    p, g = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    iou = np.where(rng.uniform(size=(p, g)) < 0.6, rng.uniform(0.5, 1.0, (p, g)), 0.0)
    match = match_detections(iou, 0.7)
    taken = match[match >= 0]
    assert len(set(taken.tolist())) == taken.size
    assert np.all(iou[np.flatnonzero(match >= 0), taken] >= 0.7)
    got = iou[np.flatnonzero(match >= 0), taken].sum()
    best = 0.0
    w = np.where(iou >= 0.7, iou, 0.0)
    if p <= g:
        for perm in itertools.permutations(range(g), p):
            best = max(best, w[np.arange(p), perm].sum())
    else:
        for perm in itertools.permutations(range(p), g):
            best = max(best, w[perm, np.arange(g)].sum())
    assert got == pytest.approx(best, abs=1e-9)


def test_helpers_and_errors():
    np.testing.assert_array_equal(difficulty_levels(4, [0, 1, 2, 1], [10, 10, 10, 5]), [1, 1, 2, 2])
    np.testing.assert_allclose(heading_accuracy([0.0, np.pi / 2, np.pi, 0.1], [0.0, 0.0, 0.0, 2 * np.pi - 0.1]),
                               [1.0, 0.5, 0.0, 1 - 0.2 / np.pi])
    assert average_precision([], []) == 0.0
    m = _metrics()
    with pytest.raises(ValueError, match="pred_scores"):
        m.update(GT, np.array([2.0, 0.1, 0.1]), GT)
    with pytest.raises(ValueError, match="pred_scores"):
        m.update(GT, np.array([0.5, 0.1]), GT)
    with pytest.raises(ValueError, match="gt_boxes"):
        m.update(GT, np.array([0.5, 0.1, 0.2]), GT[:, :5])
    with pytest.raises(ValueError, match="gt_difficulty"):
        m.update(GT, np.array([0.5, 0.1, 0.2]), GT, gt_difficulty=[1, 3, 1])
    with pytest.raises(ValueError, match="matcher"):
        DetectionMetrics(matcher="greedy")
    m.update(np.zeros((0, 7)), np.zeros(0), GT)  # no predictions: AP 0
    assert m.result()["ap_3d_l2"] == 0.0
