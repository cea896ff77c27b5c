import math

import numpy as np
import pytest

from taskology_tf.models.pointpillars import BevGrid
from taskology_tf.tasks import box_coding as bc

GRID = BevGrid(x_min=-8.0, y_min=-8.0, cell_size=0.5, width=32, height=32)
ANCHOR = bc.AnchorConfig(z=-1.0)


def _np(x):
    return np.asarray(x)


def test_angle_folding_and_wrapping():
    a = np.linspace(-10, 10, 1001).astype(np.float32)
    w, f = _np(bc.wrap_angle(a)), _np(bc.fold_angle(a))
    assert w.min() >= -math.pi and w.max() < math.pi and f.min() >= -math.pi / 2 and f.max() < math.pi / 2
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-5)
    np.testing.assert_allclose(np.sin(2 * f), np.sin(2 * a), atol=1e-5)


def test_make_anchors_grid_layout():
    anchors = bc.make_anchors(GRID, ANCHOR)
    assert anchors.shape == (32, 32, 2, 7)
    np.testing.assert_allclose(anchors[0, 0, 0], [-7.75, -7.75, -1.0, 4.7, 2.1, 1.7, 0.0], atol=1e-6)
    np.testing.assert_allclose(anchors[3, 5, 1, [0, 1, 6]], [-8 + 5.5 * 0.5, -8 + 3.5 * 0.5, math.pi / 2], atol=1e-6)


def test_encode_decode_round_trip_with_direction():
    rng = np.random.default_rng(0)
    n = 500
    anchors = bc.make_anchors(GRID, ANCHOR).reshape(-1, 7)[rng.integers(0, 32 * 32 * 2, n)]
    boxes = np.stack([anchors[:, 0] + rng.normal(0, 1, n), anchors[:, 1] + rng.normal(0, 1, n), rng.normal(-1, 0.3, n),
                      rng.uniform(3, 6, n), rng.uniform(1.5, 2.5, n), rng.uniform(1.2, 2.2, n),
                      rng.uniform(-math.pi, math.pi, n)], axis=1).astype(np.float32)
    res = bc.encode_boxes(boxes, anchors)
    assert np.all(np.abs(_np(res)[:, 6]) <= math.pi / 2)
    direction = _np(bc.direction_target(boxes, anchors))
    decoded = _np(bc.decode_residuals(res, anchors, direction_logits=2.0 * direction - 1.0))
    np.testing.assert_allclose(decoded[:, :6], boxes[:, :6], atol=1e-4)
    np.testing.assert_allclose(np.abs(_np(bc.wrap_angle(decoded[:, 6] - boxes[:, 6]))), 0.0, atol=1e-4)
    # Without the direction the heading is right modulo pi.
    plain = _np(bc.decode_residuals(res, anchors))
    np.testing.assert_allclose(np.sin(2 * (plain[:, 6] - boxes[:, 6])), 0.0, atol=1e-4)
    # The x/y residuals are in units of the anchor diagonal.
    d = math.hypot(4.7, 2.1)
    np.testing.assert_allclose(_np(res)[:, 0], (boxes[:, 0] - anchors[:, 0]) / d, rtol=1e-5, atol=1e-6)


def test_standup_iou_known_values():
    a = np.array([0, 0, 0, 4, 2, 1, 0], np.float32)
    b = np.array([1, 0, 0, 4, 2, 1, 0], np.float32)
    assert float(bc.standup_bev_iou(a, b)) == pytest.approx(6 / 10)
    turned = np.array([0, 0, 0, 4, 2, 1, math.pi / 2], np.float32)  # 2 x 4 footprint
    assert float(bc.standup_bev_iou(a, turned)) == pytest.approx(4 / 12)
    # Nearly turned boxes round to the nearest quarter turn; half-turns change nothing.
    assert float(bc.standup_bev_iou(turned, np.array([0, 0, 0, 4, 2, 1, 1.4], np.float32))) == pytest.approx(1.0)
    assert float(bc.standup_bev_iou(a, np.array([0, 0, 0, 4, 2, 1, math.pi], np.float32))) == pytest.approx(1.0)


def test_match_anchors_axis_aligned_case():
    # A vehicle-sized box on the centre of cell (row 16, col 16), heading 0.
    box = np.array([0.25, 0.25, -1.0, 4.7, 2.1, 1.7, 0.0], np.float32)
    boxes = np.zeros((1, 3, 7), np.float32)
    boxes[0, 1] = box
    mask = np.array([[0, 1, 0]], np.float32)
    m = {k: _np(v) for k, v in bc.match_anchors(boxes, mask, GRID, ANCHOR).items()}
    assert m["positive"].shape == (1, 32, 32, 2)
    assert m["iou"][0, 16, 16, 0] == pytest.approx(1.0)
    assert m["iou"][0, 16, 17, 0] == pytest.approx(4.2 / 5.2, rel=1e-5)  # shifted 0.5 m along the length
    assert m["iou"][0, 17, 16, 0] == pytest.approx(1.6 * 4.7 / (2 * 9.87 - 1.6 * 4.7), rel=1e-4)  # 0.5 m across
    assert m["iou"][0, 18, 16, 0] == pytest.approx(1.1 * 4.7 / (2 * 9.87 - 1.1 * 4.7), rel=1e-4)  # 1 m across
    assert m["iou"][0, 16, 16, 1] == pytest.approx(2.1 * 2.1 / (2 * 9.87 - 2.1 * 2.1), rel=1e-4)  # turned anchor
    assert m["positive"][0, 16, 16, 0] and m["positive"][0, 16, 17, 0] and m["positive"][0, 17, 16, 0]
    assert not m["positive"][0, 18, 16, 0] and m["negative"][0, 18, 16, 0]  # 0.355 < 0.45
    assert not m["positive"][0, 16, 16, 1] and m["negative"][0, 16, 16, 1]  # 0.288
    # 0.45 <= IoU < 0.6 is ignored: 1.5 m along the length gives 3.2 / 6.2 = 0.516.
    assert m["iou"][0, 16, 19, 0] == pytest.approx(3.2 / 6.2, rel=1e-5)
    assert not m["positive"][0, 16, 19, 0] and not m["negative"][0, 16, 19, 0]
    assert set(np.unique(m["assigned"][m["positive"]])) == {1}
    assert np.all(m["assigned"][~m["positive"]] == -1)
    # ``best`` names the box of every overlapping anchor, ignored ones included (for their regression).
    assert m["best"][0, 16, 19, 0] == 1 and m["best"][0, 16, 16, 0] == 1
    assert np.all(m["best"][m["iou"] <= 0.0] == -1) and np.all(m["best"][m["positive"]] == 1)


def test_match_anchors_force_matches_large_boxes_and_ignores_padding():
    truck = np.array([[[0.3, -0.2, -1.0, 12.0, 2.8, 3.5, 0.05]]], np.float32)  # too big for IoU >= 0.6
    m = {k: _np(v) for k, v in bc.match_anchors(truck, np.ones((1, 1)), GRID, ANCHOR).items()}
    assert m["iou"].max() < 0.6
    assert m["positive"].sum() == 1
    assert m["iou"][m["positive"]][0] == pytest.approx(m["iou"].max())
    none = {k: _np(v) for k, v in bc.match_anchors(truck, np.zeros((1, 1)), GRID, ANCHOR).items()}
    assert none["positive"].sum() == 0 and none["negative"].all()


def test_match_anchors_agrees_with_dense_exact_iou_reference():
    boxes_module = pytest.importorskip("taskology_tf.geometry.boxes")
    rng = np.random.default_rng(1)
    n = 6
    # Axis-aligned boxes (headings multiples of pi/2): the standup IoU is the exact rotated IoU.
    boxes = np.stack([rng.uniform(-9, 9, n), rng.uniform(-9, 9, n), np.full(n, -1.0), rng.uniform(3.5, 6, n),
                      rng.uniform(1.6, 2.4, n), np.full(n, 1.6), rng.integers(-2, 3, n) * math.pi / 2], 1).astype(np.float32)
    boxes[:, :2] = np.round(boxes[:, :2] * 4) / 4 + 0.01  # avoid exact ties between anchors
    m = {k: _np(v) for k, v in bc.match_anchors(boxes[None], np.ones((1, n)), GRID, ANCHOR).items()}
    ref = bc.match_anchors_numpy(bc.make_anchors(GRID, ANCHOR).reshape(-1, 7), boxes, ANCHOR, iou_fn=boxes_module.bev_iou)
    # The window (match_radius) only leaves out small overlaps, which are negatives either way.
    iou = m["iou"].reshape(-1)
    assert np.all(iou <= ref["iou"] + 1e-5)
    matter = ref["iou"] >= 0.25
    np.testing.assert_allclose(iou[matter], ref["iou"][matter], atol=1e-5)
    np.testing.assert_array_equal(m["positive"].reshape(-1), ref["positive"])
    np.testing.assert_array_equal(m["negative"].reshape(-1), ref["negative"])
    np.testing.assert_array_equal(m["assigned"].reshape(-1), ref["assigned"])
    assert ref["positive"].sum() >= n


def test_decode_detections_with_nms():
    pytest.importorskip("taskology_tf.geometry.boxes")
    anchors = bc.make_anchors(GRID, ANCHOR)
    logits = np.full((32, 32, 2), -8.0, np.float32)
    residuals = np.zeros((32, 32, 2, 7), np.float32)
    target = np.array([1.0, 2.0, -0.9, 4.5, 2.0, 1.5, 0.1], np.float32)
    for row, col, score in ((20, 18, 3.0), (20, 19, 2.0)):  # two anchors predicting the same box
        residuals[row, col, 0] = _np(bc.encode_boxes(target, anchors[row, col, 0]))
        logits[row, col, 0] = score
    far = np.array([-5.0, -5.0, -1.0, 4.0, 1.8, 1.5, math.pi / 2 + 0.2], np.float32)
    residuals[6, 6, 1] = _np(bc.encode_boxes(far, anchors[6, 6, 1]))
    logits[6, 6, 1] = 0.0
    boxes, scores = bc.decode_detections(logits, residuals, anchors, nms_iou=0.5)
    assert boxes.shape == (2, 7)
    np.testing.assert_allclose(scores, [1 / (1 + math.exp(-3.0)), 0.5], rtol=1e-5)
    np.testing.assert_allclose(boxes[0], target, atol=1e-4)
    np.testing.assert_allclose(boxes[1], far, atol=1e-4)
    empty_boxes, empty_scores = bc.decode_detections(np.full((32, 32, 2), -9.0), residuals, anchors)
    assert empty_boxes.shape == (0, 7) and empty_scores.shape == (0,)


def test_anchor_config_errors():
    with pytest.raises(ValueError, match="negative_iou"):
        bc.AnchorConfig(positive_iou=0.4, negative_iou=0.5)
    with pytest.raises(ValueError, match="size"):
        bc.AnchorConfig(size=(4.0, 0.0, 1.0))
