"""Tests for taskology_tf.geometry.boxes: analytic IoUs, a rasterised cross-check, NMS, angles."""

import numpy as np
import pytest
from keras import ops

from taskology_tf.geometry.boxes import (
    bev_intersection_aligned,
    bev_iou,
    box_corners_3d,
    box_corners_bev,
    heading_difference,
    iou_3d,
    rotated_nms,
    wrap_angle,
)


def _box(x=0.0, y=0.0, z=0.0, length=1.0, width=1.0, height=1.0, heading=0.0):
    return np.array([[x, y, z, length, width, height, heading]], np.float64)


def _random_boxes(rng, n, spread=3.0):
    return np.concatenate([
        rng.uniform(-spread, spread, (n, 2)), rng.uniform(-0.5, 0.5, (n, 1)),
        rng.uniform(0.5, 4.0, (n, 2)), rng.uniform(0.5, 2.0, (n, 1)), rng.uniform(-np.pi, np.pi, (n, 1)),
    ], axis=1)


def _raster_bev_iou(a, b, n=500):
    """Monte-Carlo-free estimate: fraction of a fine grid's cell centres inside each footprint."""
    ca, cb = box_corners_bev(a[None])[0], box_corners_bev(b[None])[0]
    lo = np.minimum(ca.min(0), cb.min(0))
    hi = np.maximum(ca.max(0), cb.max(0))
    xs = lo[0] + (np.arange(n) + 0.5) * (hi[0] - lo[0]) / n
    ys = lo[1] + (np.arange(n) + 0.5) * (hi[1] - lo[1]) / n
    px, py = np.meshgrid(xs, ys)

    def inside(box):
        c, s = np.cos(box[6]), np.sin(box[6])
        dx, dy = px - box[0], py - box[1]
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (np.abs(u) <= box[3] / 2) & (np.abs(v) <= box[4] / 2)

    ia, ib = inside(a), inside(b)
    return np.sum(ia & ib) / max(np.sum(ia | ib), 1)


def test_identical_and_disjoint():
    a = _box(length=4.0, width=2.0, heading=0.3)
    assert bev_iou(a, a)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert iou_3d(a, a)[0, 0] == pytest.approx(1.0, abs=1e-12)
    far = _box(x=10.0, length=4.0, width=2.0)
    touching = _box(x=1.0)  # shares an edge with the unit square at the origin
    assert bev_iou(a, far)[0, 0] == 0.0
    assert bev_iou(_box(), touching)[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_half_offset_unit_squares_give_one_third():
    a, b = _box(), _box(x=0.5)
    assert bev_iou(a, b)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-12)
    assert iou_3d(a, b)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-12)


def test_rotations():
    square = _box(length=2.0, width=2.0)
    assert bev_iou(square, _box(length=2.0, width=2.0, heading=np.pi / 2))[0, 0] == pytest.approx(1.0, abs=1e-12)
    rect = _box(length=2.0, width=1.0, heading=0.2)
    rot90 = _box(length=2.0, width=1.0, heading=0.2 + np.pi / 2)
    assert bev_iou(rect, rot90)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-12)  # 1 / (2 + 2 - 1)
    assert bev_iou(rect, _box(length=2.0, width=1.0, heading=0.2 + np.pi))[0, 0] == pytest.approx(1.0, abs=1e-12)
    # Unit square vs the same square rotated by 45 deg: the octagon has area 2 (sqrt 2 - 1).
    octagon = 2.0 * (np.sqrt(2.0) - 1.0)
    expected = octagon / (2.0 - octagon)
    assert bev_iou(_box(), _box(heading=np.pi / 4))[0, 0] == pytest.approx(expected, abs=1e-12)


def test_3d_iou_half_height_overlap():
    a = _box(length=4.0, width=2.0, height=2.0)
    b = _box(z=1.0, length=4.0, width=2.0, height=2.0)  # z overlap 1 of 2
    assert iou_3d(a, b)[0, 0] == pytest.approx(1.0 / 3.0, abs=1e-12)
    assert bev_iou(a, b)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert iou_3d(a, _box(z=2.5, length=4.0, width=2.0, height=2.0))[0, 0] == 0.0


def test_random_pairs_match_rasterisation_and_are_symmetric():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 12), _random_boxes(rng, 12)
    m = bev_iou(a, b)
    np.testing.assert_allclose(m, bev_iou(b, a).T, atol=1e-12)
    assert m.shape == (12, 12) and np.all((m >= 0) & (m <= 1))
    assert np.count_nonzero(m) > 10
    for i, j in zip(*np.nonzero(m)):
        if (i + j) % 4 == 0:
            assert m[i, j] == pytest.approx(_raster_bev_iou(a[i], b[j]), abs=0.01)
    inter = bev_intersection_aligned(a, b)
    diag = np.diag(m)
    union = a[:, 3] * a[:, 4] + b[:, 3] * b[:, 4] - inter
    np.testing.assert_allclose(inter / union, diag, atol=1e-12)


def test_iou_invariant_to_rigid_motion():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 6), _random_boxes(rng, 6)
    yaw, shift = 0.7, np.array([12.0, -3.0, 1.5])
    c, s = np.cos(yaw), np.sin(yaw)

    def move(boxes):
        out = boxes.copy()
        out[:, 0] = c * boxes[:, 0] - s * boxes[:, 1]
        out[:, 1] = s * boxes[:, 0] + c * boxes[:, 1]
        out[:, :3] += shift
        out[:, 6] = boxes[:, 6] + yaw
        return out

    np.testing.assert_allclose(iou_3d(move(a), move(b)), iou_3d(a, b), atol=1e-10)


def test_empty_shapes_and_errors():
    assert bev_iou(np.zeros((0, 7)), _box()).shape == (0, 1)
    assert iou_3d(_box(), np.zeros((0, 7))).shape == (1, 0)
    assert bev_iou(_box(length=0.0), _box(length=0.0))[0, 0] == 0.0
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        bev_iou(np.zeros((3, 5)), _box())
    with pytest.raises(ValueError, match="length, width, height"):
        iou_3d(_box(width=-1.0), _box())


def test_corners():
    box = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 1.0, np.pi / 2])
    bev = box_corners_bev(box)
    np.testing.assert_allclose(bev, [[0.0, 4.0], [0.0, 0.0], [2.0, 0.0], [2.0, 4.0]], atol=1e-12)
    c3 = box_corners_3d(box[None])
    assert c3.shape == (1, 8, 3)
    np.testing.assert_allclose(c3[0, :4, 2], 2.5)
    np.testing.assert_allclose(c3[0, 4:, 2], 3.5)
    np.testing.assert_allclose(c3[0, 4:, :2], bev)
    # Counter-clockwise: positive shoelace area equal to length * width.
    x, y = bev[:, 0], bev[:, 1]
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) == pytest.approx(8.0)
    # keras.ops path, batched [2, 3, 7].
    batch = np.broadcast_to(box, (2, 3, 7)).astype(np.float32)
    t = ops.convert_to_numpy(box_corners_3d(ops.convert_to_tensor(batch)))
    assert t.shape == (2, 3, 8, 3)
    np.testing.assert_allclose(t[1, 2], c3[0], atol=1e-5)


def test_nms_keeps_highest_of_overlapping_pairs():
    boxes = np.concatenate([
        _box(length=4.0, width=2.0), _box(x=0.2, length=4.0, width=2.0, heading=0.05),  # overlap pair
        _box(x=10.0, length=4.0, width=2.0), _box(x=10.3, length=4.0, width=2.0),      # overlap pair
        _box(x=20.0, length=4.0, width=2.0),
    ])
    scores = np.array([0.6, 0.9, 0.5, 0.4, 0.3])
    keep = rotated_nms(boxes, scores, iou_threshold=0.5)
    assert keep.dtype == np.int64
    np.testing.assert_array_equal(keep, [1, 2, 4])
    np.testing.assert_array_equal(rotated_nms(boxes, scores, 0.5, max_output=2), [1, 2])
    np.testing.assert_array_equal(rotated_nms(boxes, scores, 0.5, score_threshold=0.45), [1, 2])
    np.testing.assert_array_equal(rotated_nms(boxes, scores, iou_threshold=1.0), [1, 0, 2, 3, 4])
    assert rotated_nms(np.zeros((0, 7)), np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(ValueError, match="scores"):
        rotated_nms(boxes, scores[:3], 0.5)


def test_nms_kept_boxes_do_not_overlap_more_than_threshold():
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 200, spread=8.0)
    keep = rotated_nms(boxes, rng.uniform(size=200), iou_threshold=0.3)
    iou = bev_iou(boxes[keep], boxes[keep])
    np.fill_diagonal(iou, 0.0)
    assert iou.max() <= 0.3
    assert 0 < keep.size < 200


def test_wrap_angle_and_heading_difference():
    theta = np.array([0.0, np.pi, -np.pi, 3 * np.pi, -3.5 * np.pi, 7.0])
    w = wrap_angle(theta)
    assert np.all((w > -np.pi) & (w <= np.pi))
    np.testing.assert_allclose(w[:5], [0.0, np.pi, np.pi, np.pi, 0.5 * np.pi], atol=1e-12)
    np.testing.assert_allclose(np.cos(w), np.cos(theta), atol=1e-12)
    np.testing.assert_allclose(heading_difference([0.1, 3.0], [2 * np.pi - 0.1, -3.0]),
                               [0.2, 2 * np.pi - 6.0], atol=1e-12)
    assert heading_difference(0.0, np.pi) == pytest.approx(np.pi)
    t = ops.convert_to_numpy(wrap_angle(ops.convert_to_tensor(theta.astype(np.float32))))
    np.testing.assert_allclose(np.cos(t), np.cos(theta), atol=1e-5)
