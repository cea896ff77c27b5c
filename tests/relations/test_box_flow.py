import math

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.registry import relation_factory
from taskology_tf.relations.box_flow import box_flow, box_flow_loss, box_flow_terms

B, H, W, NA, NF = 2, 12, 16, 2, 3
CELL = 0.5
DIAG = math.hypot(4.7, 2.1)
KW = dict(cell_size=CELL)


def _fields(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (B, H, W, NA, NF)).astype(np.float32)
    residuals = rng.normal(0, 0.3, (B, H, W, NA, NF, 7)).astype(np.float32)
    return logits, residuals


def _preds(logits, residuals, flow):
    return {"detection": {"class_logits": logits, "residuals": residuals, "box_flow": flow}}


def _loss(logits, residuals, flow, **kw):
    return np.asarray(box_flow_loss({}, _preds(logits, residuals, flow), **{**KW, **kw}))


def test_constant_fields_with_zero_flow_are_consistent():
    logits = np.full((B, H, W, NA, NF), 1.5, np.float32)
    residuals = np.broadcast_to(np.arange(7, dtype=np.float32) * 0.1, (B, H, W, NA, NF, 7)).copy()
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    for sampling in ("nearest", "bilinear"):
        np.testing.assert_array_equal(_loss(logits, residuals, flow, sampling=sampling), 0.0)


@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_shifted_fields_with_matching_integer_flow_are_consistent(sampling):
    """Frame t - k holds frame t's field moved by (2k, -k) cells; the flow says exactly that."""
    logits, residuals = _fields(1)
    cur_l, cur_r = logits[..., NF - 1], residuals[..., NF - 1, :]
    for k in range(1, NF):
        logits[..., NF - 1 - k] = np.roll(cur_l, (-k, 2 * k), axis=(1, 2))
        residuals[..., NF - 1 - k, :] = np.roll(cur_r, (-k, 2 * k), axis=(1, 2))
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    flow[..., 0] = np.array([2.0, 4.0]) * CELL
    flow[..., 1] = np.array([-1.0, -2.0]) * CELL
    # (Where the flow leaves the grid the pair is ignored; inside, np.roll makes every pair exact.)
    loss = _loss(logits, residuals, flow, sampling=sampling)
    np.testing.assert_allclose(loss, 0.0, atol=1e-10)
    # Any other flow is penalised.
    assert np.all(_loss(logits, residuals, flow + np.array([CELL, 0.0, 0.0], np.float32), sampling=sampling) > 0.01)
    assert np.all(_loss(logits, residuals, np.zeros_like(flow), sampling=sampling) > 0.01)


def test_quantisation_remainder_makes_fractional_flow_exact():
    """A box 0.2 cells further in x per frame back: the nearest anchor point is the same cell and the
    residual there must differ by the remainder flow_x - 0 (in anchor diagonals)."""
    logits, residuals = _fields(2)
    remainder = 0.2 * CELL
    for k in range(1, NF):
        logits[..., NF - 1 - k] = logits[..., NF - 1]
        residuals[..., NF - 1 - k, :] = residuals[..., NF - 1, :]
        residuals[..., NF - 1 - k, 0] += k * remainder / DIAG
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    flow[..., 0] = np.array([1.0, 2.0]) * remainder  # 0.2 and 0.4 cells: both round to the same cell
    np.testing.assert_allclose(_loss(logits, residuals, flow), 0.0, atol=1e-10)
    # Without the remainder term in the residuals the loss is exactly the squared remainders.
    residuals[..., :NF - 1, 0] = residuals[..., NF - 1:, 0]
    terms = box_flow_terms(_preds(logits, residuals, flow), **KW)
    np.testing.assert_allclose(np.asarray(terms["class"]), 0.0, atol=1e-10)
    expected = ((remainder / DIAG) ** 2 + (2 * remainder / DIAG) ** 2) / 2  # mean over the two k
    np.testing.assert_allclose(np.asarray(terms["residual"]), expected, rtol=1e-4)


def test_heading_flow_switches_anchor_with_remainder():
    """flow_theta = pi/2 + 0.1 leads from the 0-rad anchor to the pi/2-rad anchor (and back, modulo pi)."""
    logits, residuals = _fields(3)
    cur_l, cur_r = logits[..., NF - 1], residuals[..., NF - 1, :]
    for k in range(1, NF):
        p = NF - 1 - k
        logits[..., p] = cur_l[..., ::-1]
        residuals[..., p, :] = cur_r[..., ::-1, :]
        residuals[..., p, 6] += 0.1
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    flow[..., 2] = math.pi / 2 + 0.1
    np.testing.assert_allclose(_loss(logits, residuals, flow), 0.0, atol=1e-9)
    assert np.all(_loss(logits, residuals, np.zeros_like(flow)) > 0.1)


def test_flow_out_of_the_grid_is_ignored_and_loss_is_positive_otherwise():
    logits, residuals = _fields(4)
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    assert np.all(_loss(logits, residuals, flow) > 0.1)
    flow[..., 0] = 100.0  # every connected point is outside the grid
    np.testing.assert_array_equal(_loss(logits, residuals, flow), 0.0)


def test_score_weighting_discounts_background():
    logits, residuals = _fields(5)
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    plain = _loss(logits, residuals, flow)
    weighted = _loss(logits - 10.0, residuals, flow, score_weighting=True)
    assert np.all(weighted > 0) and np.all(np.isfinite(weighted))
    assert not np.allclose(plain, weighted)


@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_gradients_reach_live_predictions_only(sampling):
    logits, residuals = _fields(6)
    flow = np.random.default_rng(7).normal(0, 0.4, (B, H, W, NA, NF - 1, 3)).astype(np.float32)
    det_l, det_r, fl = tf.Variable(logits), tf.Variable(residuals), tf.Variable(flow)
    two_tasks = dict(detection_task="det", flow_task="flow", sampling=sampling, **KW)
    with tf.GradientTape(persistent=True) as tape:
        live_flow = tf.reduce_sum(box_flow_loss(
            {}, {"det": {"class_logits": det_l, "residuals": det_r}, "flow": {"box_flow": fl}}, **two_tasks))
        peer_flow = tf.reduce_sum(box_flow_loss(
            {}, {"det": {"class_logits": det_l, "residuals": det_r}, "flow": {"box_flow": tf.stop_gradient(fl)}},
            **two_tasks))
        peer_det = tf.reduce_sum(box_flow_loss(
            {}, {"det": {"class_logits": tf.stop_gradient(det_l), "residuals": tf.stop_gradient(det_r)},
                 "flow": {"box_flow": fl}}, **two_tasks))
    g = tape.gradient(live_flow, [det_l, det_r, fl])
    assert all(x is not None and float(tf.reduce_max(tf.abs(x))) > 0 for x in g)
    # The flow's x, y receive gradient (through the remainder, or through the interpolation weights).
    assert float(tf.reduce_max(tf.abs(g[2][..., :2]))) > 0
    g = tape.gradient(peer_flow, [det_l, det_r, fl])
    assert g[0] is not None and g[1] is not None and g[2] is None
    g = tape.gradient(peer_det, [det_l, det_r, fl])
    assert g[0] is None and g[1] is None and g[2] is not None


def _agreeing_frames(scale=1.0):
    """Frames that agree on a car at cells (2..4, 3..6) of anchor 0 (logit 4 now, 3 earlier) and on
    background elsewhere (-4 now, -3 earlier); zero flow."""
    logits = np.empty((B, H, W, NA, NF), np.float32)
    logits[..., :NF - 1], logits[..., NF - 1] = -3.0, -4.0
    logits[:, 2:5, 3:7, 0, :NF - 1], logits[:, 2:5, 3:7, 0, NF - 1] = 3.0, 4.0
    residuals = np.random.default_rng(8).normal(0, 0.3, (B, H, W, NA, NF, 7)).astype(np.float32)
    return logits * scale, residuals, np.zeros((B, H, W, NA, NF - 1, 3), np.float32)


def test_flattening_agreeing_logits_lowers_the_paper_form_but_raises_the_confident_form():
    sharp = box_flow_terms(_preds(*_agreeing_frames(1.0)), **KW)
    flat = box_flow_terms(_preds(*_agreeing_frames(0.7)), **KW)
    assert np.all(np.asarray(flat["class"]) < np.asarray(sharp["class"]))
    sharp = box_flow_terms(_preds(*_agreeing_frames(1.0)), form="confident", **KW)
    flat = box_flow_terms(_preds(*_agreeing_frames(0.7)), form="confident", **KW)
    assert np.all(np.asarray(flat["class"]) > np.asarray(sharp["class"]))


def test_confident_form_supervises_residuals_and_flow_only_where_an_object_is_seen():
    logits, residuals, flow = _agreeing_frames()
    flow = tf.Variable(flow + 0.1)
    with tf.GradientTape() as tape:
        terms = box_flow_terms(_preds(logits, residuals, flow), form="confident", **KW)
    grad = tape.gradient(terms["residual"], flow).numpy()
    assert np.all(np.asarray(terms["residual"]) > 0)
    car = np.zeros((B, H, W, NA), bool)
    car[:, 2:5, 3:7, 0] = True
    assert np.abs(grad[car][..., :2]).max() > 0 and np.abs(grad[~car]).max() == 0
    background = box_flow_terms(_preds(np.full_like(logits, -4.0), residuals, flow), form="confident", **KW)
    np.testing.assert_array_equal(np.asarray(background["residual"]), 0.0)
    assert np.all(np.asarray(background["class"]) > 0)  # agreeing background still sharpens


def test_factory_reads_one_or_two_tasks():
    assert relation_factory("box_flow") is box_flow
    one = box_flow(cell_size=CELL)
    assert dict(one.reads) == {"detection": ("class_logits", "residuals", "box_flow")}
    two = box_flow(detection="det", flow="flow", cell_size=CELL, flow_weight=0.5)
    assert dict(two.reads) == {"det": ("class_logits", "residuals"), "flow": ("box_flow",)}
    assert two.weight_for("flow") == 0.5 and two.weight_for("det") == 1.0
    logits, residuals = _fields(8)
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    np.testing.assert_allclose(
        np.asarray(two.loss({}, {"det": {"class_logits": logits, "residuals": residuals}, "flow": {"box_flow": flow}})),
        np.asarray(one.loss({}, _preds(logits, residuals, flow))), rtol=1e-6)


def test_errors():
    logits, residuals = _fields(9)
    flow = np.zeros((B, H, W, NA, NF - 1, 3), np.float32)
    with pytest.raises(ValueError, match="anchor_headings"):
        box_flow_loss({}, _preds(logits, residuals, flow), anchor_headings=(0.0,), **KW)
    with pytest.raises(ValueError, match="shapes do not agree"):
        box_flow_loss({}, _preds(logits, residuals, flow[..., :1, :]), **KW)
    with pytest.raises(ValueError, match="sampling"):
        box_flow(sampling="cubic")
    with pytest.raises(ValueError, match="preset"):
        box_flow(preset="huge")
    with pytest.raises(ValueError, match="set box_flow.preset"):  # paper grid (468 x 468) vs these predictions
        box_flow().loss({}, _preds(logits, residuals, flow))
    with pytest.raises(ValueError, match="box_flow.form"):
        box_flow(form="logits")
    with pytest.raises(ValueError, match="confidence"):
        box_flow(form="confident", confidence=0.4)
    with pytest.raises(ValueError, match="form must be one of"):
        box_flow_loss({}, _preds(logits, residuals, flow), form="soft", **KW)
