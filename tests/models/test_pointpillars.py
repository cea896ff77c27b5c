import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.models.pointpillars import (
    PRESETS,
    BevGrid,
    Pillarize,
    PointPillarsConfig,
    ScatterToBEV,
    build_pointpillars,
    get_config,
)

GRID = BevGrid(x_min=0.0, y_min=0.0, cell_size=1.0, width=4, height=3, z_min=-1.0, z_max=1.0)


def _random_points(rng, batch=2, frames=3, count=120, extent=8.0):
    pts = rng.uniform(-extent, extent, (batch, frames, count, 4)).astype(np.float32)
    pts[..., 2] = rng.uniform(-2.5, 0.5, (batch, frames, count))
    pts[..., 3] = rng.uniform(0, 1, (batch, frames, count))
    return pts, np.ones((batch, frames, count), np.float32)


@pytest.fixture(scope="module")
def tiny_model():
    return build_pointpillars("pp", "tiny")


def test_outputs_names_and_shapes(tiny_model):
    rng = np.random.default_rng(0)
    pts, mask = _random_points(rng)
    out = tiny_model({"points": pts, "points_mask": mask}, training=False)
    assert set(out) == {"class_logits", "residuals", "direction_logits", "box_flow"}
    assert out["class_logits"].shape == (2, 32, 32, 2, 3)
    assert out["residuals"].shape == (2, 32, 32, 2, 3, 7)
    assert out["direction_logits"].shape == (2, 32, 32, 2, 3)
    assert out["box_flow"].shape == (2, 32, 32, 2, 2, 3)
    assert all(v.dtype == tf.float32 and np.all(np.isfinite(v.numpy())) for v in out.values())
    # The class head starts at the focal-loss prior (p = 0.01) plus small noise.
    assert abs(float(np.median(tf.sigmoid(out["class_logits"]).numpy())) - 0.01) < 0.02


@pytest.mark.parametrize("heads, keys", [(("detection",), {"class_logits", "residuals", "direction_logits"}),
                                         (("flow",), {"box_flow"})])
def test_head_subsets(heads, keys):
    model = build_pointpillars("sub", "tiny", heads=heads)
    pts, mask = _random_points(np.random.default_rng(1), batch=1)
    out = model({"points": pts, "points_mask": mask})
    assert set(out) == keys
    if "box_flow" in keys:
        assert out["box_flow"].shape == (1, 32, 32, 2, 2, 3)


def test_detector_is_single_frame_and_shared(tiny_model):
    """Each frame's detections depend only on that frame's points, with the same weights for every frame."""
    rng = np.random.default_rng(2)
    pts, mask = _random_points(rng, batch=1)
    out = tiny_model({"points": pts, "points_mask": mask}, training=False)
    swapped = pts[:, ::-1].copy()
    out2 = tiny_model({"points": swapped, "points_mask": mask}, training=False)
    np.testing.assert_allclose(out["class_logits"].numpy()[..., 0], out2["class_logits"].numpy()[..., 2], atol=1e-4)
    np.testing.assert_allclose(out["residuals"].numpy()[..., 1, :], out2["residuals"].numpy()[..., 1, :], atol=1e-4)
    # The flow head looks at all frames: reversing time changes it.
    assert not np.allclose(out["box_flow"].numpy(), out2["box_flow"].numpy(), atol=1e-5)


def test_pillarize_assigns_cells_and_decorates():
    layer = Pillarize(GRID, max_pillars=8, max_points=3)
    points = np.array([[
        [0.5, 0.5, 0.0, 0.1],   # cell (row 0, col 0)
        [0.7, 0.1, 0.4, 0.2],   # cell (0, 0)
        [3.2, 2.9, 0.0, 0.3],   # cell (2, 3) -> flat 11
        [1.5, 1.5, 5.0, 0.4],   # z out of range: dropped
        [-0.1, 0.5, 0.0, 0.5],  # x outside the grid: dropped
        [2.5, 1.5, 0.0, 0.6],   # masked out: dropped
        [1.0, 2.0, 0.0, 0.7],   # on cell borders -> cell (2, 1) -> flat 9
    ]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 0, 1]], np.float32)
    features, point_mask, cells = (np.asarray(t) for t in layer(points, mask))
    assert features.shape == (1, 8, 3, 9) and point_mask.shape == (1, 8, 3) and cells.shape == (1, 8)
    used = sorted(int(c) for c in cells[0] if c >= 0)
    assert used == [0, 9, 11]
    assert np.all(cells[0][point_mask[0].sum(-1) == 0] == -1)
    slot = int(np.flatnonzero(cells[0] == 0)[0])
    assert point_mask[0, slot].sum() == 2
    feats = features[0, slot][point_mask[0, slot] > 0]
    feats = feats[np.argsort(feats[:, 3])]
    np.testing.assert_allclose(feats[:, :4], points[0, :2], atol=1e-6)
    np.testing.assert_allclose(feats[:, 4:7], points[0, :2, :3] - points[0, :2, :3].mean(0), atol=1e-6)  # to the mean
    np.testing.assert_allclose(feats[:, 7:9], points[0, :2, :2] - [0.5, 0.5], atol=1e-6)  # to the cell centre
    assert np.all(features[0][point_mask[0] == 0] == 0)


def test_pillarize_limits_points_and_pillars():
    rng = np.random.default_rng(3)
    layer = Pillarize(GRID, max_pillars=5, max_points=4)
    # 10 points in one cell, and one point in each of the 12 cells.
    same = np.concatenate([rng.uniform(0.01, 0.99, (10, 2)), np.zeros((10, 2))], axis=1)
    cx, cy = np.meshgrid(np.arange(4) + 0.5, np.arange(3) + 0.5)
    spread = np.stack([cx.ravel(), cy.ravel(), np.zeros(12), np.ones(12)], axis=1)
    points = np.concatenate([same, spread])[None].astype(np.float32)
    features, point_mask, cells = (np.asarray(t) for t in layer(points, np.ones(points.shape[:2], np.float32)))
    assert np.all(point_mask.sum(-1) <= 4)
    assert (cells[0] >= 0).sum() == 5  # 12 non-empty pillars, 5 kept
    assert len(set(cells[0].tolist())) == 5  # distinct cells
    # Every kept point lies in its pillar's cell.
    for m in range(5):
        col, row = cells[0, m] % 4, cells[0, m] // 4
        pts = features[0, m][point_mask[0, m] > 0]
        assert np.all(np.floor(pts[:, 0]) == col) and np.all(np.floor(pts[:, 1]) == row)


def test_scatter_to_bev():
    feats = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) + 1
    cells = np.array([[0, 11, -1], [5, -1, -1]], np.int32)
    canvas = np.asarray(ScatterToBEV(3, 4)(feats, cells))
    assert canvas.shape == (2, 3, 4, 2)
    np.testing.assert_array_equal(canvas[0, 0, 0], feats[0, 0])
    np.testing.assert_array_equal(canvas[0, 2, 3], feats[0, 1])
    np.testing.assert_array_equal(canvas[1, 1, 1], feats[1, 0])
    assert np.count_nonzero(canvas.sum(-1)) == 3


def test_runs_in_tf_function_with_any_point_count(tiny_model):
    fn = tf.function(lambda x: tiny_model(x, training=False), input_signature=[{
        "points": tf.TensorSpec((None, 3, None, 4), tf.float32), "points_mask": tf.TensorSpec((None, 3, None), tf.float32)}])
    for count in (50, 77):
        pts, mask = _random_points(np.random.default_rng(count), batch=1, count=count)
        assert fn({"points": pts, "points_mask": mask})["residuals"].shape == (1, 32, 32, 2, 3, 7)


def _paper_parameter_count(c: PointPillarsConfig, heads=("detection", "flow")) -> tuple[int, int]:
    """(trainable, total) parameters of the architecture, counted by hand."""
    def bn(ch):
        return 2 * ch, 4 * ch

    train = total = 0
    def add(t, n=None):
        nonlocal train, total
        train += t
        total += t if n is None else n

    add(9 * c.pillar_channels); add(*bn(c.pillar_channels))

    def backbone(cin):
        for ch, depth, up in zip(c.block_channels, c.block_depths, c.up_channels):
            for j in range(depth):
                add(9 * (cin if j == 0 else ch) * ch); add(*bn(ch))
            cin = ch
        factor = 1
        for i, (ch, stride, up) in enumerate(zip(c.block_channels, c.block_strides, c.up_channels)):
            factor = factor * stride if i else 1
            add(factor * factor * ch * up); add(*bn(up))
        return sum(c.up_channels)

    na, nf = c.num_anchors, c.frames
    if "detection" in heads:
        feat = backbone(c.pillar_channels)
        add((feat + 1) * na); add((feat + 1) * na * 7); add((feat + 1) * na)
        if "flow" in heads:
            cin = nf * feat
            for _ in range(c.flow_fusion_convs):
                add(9 * cin * c.flow_fusion_channels); add(*bn(c.flow_fusion_channels))
                cin = c.flow_fusion_channels
            add((cin + 1) * na * (nf - 1) * 3)
    else:
        feat = backbone(nf * c.pillar_channels)
        add((feat + 1) * na * (nf - 1) * 3)
    return train, total


def test_paper_size_parameter_count():
    paper = PRESETS["paper"]
    assert (paper.grid.width, paper.grid.height, paper.grid.cell_size) == (468, 468, 0.32)
    assert paper.output_grid.width == 468 and paper.frames == 3 and paper.num_anchors == 2
    # Parameters do not depend on the grid: build the paper's channels on a small grid.
    small_grid = dataclasses.replace(paper, grid=BevGrid(-5.12, -5.12, 0.32, 32, 32), max_pillars=16)
    for heads in (("detection", "flow"), ("flow",)):
        model = build_pointpillars("paper", small_grid, heads=heads)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert (trainable, model.count_params()) == _paper_parameter_count(paper, heads)
    # Detector + flow head 6.30 M parameters; the detector alone 4.82 M (PointPillars' ~4.8 M); a separate
    # flow model 4.89 M.
    assert _paper_parameter_count(paper) == (6290654, 6297182)
    assert _paper_parameter_count(paper, ("detection",)) == (4814034, 4820050)
    assert _paper_parameter_count(paper, ("flow",)) == (4885452, 4891468)


def test_config_errors():
    with pytest.raises(ValueError, match="heads"):
        build_pointpillars("x", "tiny", heads=("boxes",))
    with pytest.raises(ValueError, match="2 frames"):
        build_pointpillars("x", get_config("tiny", frames=1), heads=("flow",))
    with pytest.raises(ValueError, match="divisible"):
        get_config("tiny", grid=BevGrid(0, 0, 0.5, 30, 30))
    with pytest.raises(ValueError, match="preset"):
        get_config("huge")


def test_bn_momentum_reaches_every_batchnorm():
    """Ladder step (a): with momentum 0.99 the inference-time statistics lag the training-time ones by ~100
    steps, so a detector that fits its training sweep in training mode scored 3D AP 0.03 in inference mode;
    the momentum is a config field so short CPU runs can use 0.9."""
    import keras

    model = build_pointpillars("pp", get_config("tiny", bn_momentum=0.9))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) >= 8 and all(layer.momentum == pytest.approx(0.9) for layer in norms)
    assert PRESETS["paper"].bn_momentum == 0.99
    with pytest.raises(ValueError, match="bn_momentum"):
        get_config("tiny", bn_momentum=1.0)
