"""Tests for the Eq. (2)-(5) relation between depth, motion (with object motion) and segmentation."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from taskology_tf.core.registry import relation_factory
from taskology_tf.data.example import CLASS_NAMES
from taskology_tf.relations.depth_motion_segmentation import (
    class_balanced_mean,
    class_thresholds,
    pseudo_labels,
    segmentation_disagreement,
    video_consistency_terms,
)

B, H, W, C = 2, 16, 24, len(CLASS_NAMES)
CAR = CLASS_NAMES.index("car")
ROAD = CLASS_NAMES.index("road")


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    k = np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]], np.float32)
    return {
        "image": rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8),
        "image_next": rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8),
        "intrinsics": np.broadcast_to(k, (B, 3, 3)).copy(),
    }


def _logits(car_box=True):
    logits = np.zeros((B, H, W, C), np.float32)
    logits[..., ROAD] = 1.0
    if car_box:
        logits[:, 4:10, 6:14, CAR] = 5.0
    return logits


def _predictions(field_value=0.0):
    zeros = np.zeros((B, 3), np.float32)
    t = np.tile(np.array([[0.0, 0.0, -0.5]], np.float32), (B, 1))
    field = np.full((B, H, W, 3), field_value, np.float32)
    return {
        "depth": {"depth": np.full((B, H, W, 1), 8.0, np.float32), "depth_next": np.full((B, H, W, 1), 8.0, np.float32)},
        "motion": {"rotation": zeros, "translation": t, "rotation_backward": zeros, "translation_backward": -t,
                   "residual_translation": field, "residual_translation_backward": -field},
        "segmentation": {"segmentation_logits": _logits(), "segmentation_logits_next": _logits()},
    }


def test_registered_with_the_keys_it_reads():
    rel = relation_factory("depth_motion_segmentation")()
    assert rel.reads["segmentation"] == ("segmentation_logits", "segmentation_logits_next")
    assert "residual_translation" in rel.reads["motion"] and rel.reads["depth"] == ("depth", "depth_next")


def test_object_motion_only_acts_on_movable_pixels():
    inputs = _inputs()
    still = video_consistency_terms(inputs, _predictions(0.0))
    moving = video_consistency_terms(inputs, _predictions(0.3))
    np.testing.assert_allclose(ops.convert_to_numpy(still["movable_fraction"]), 48 / (H * W))
    assert np.all(ops.convert_to_numpy(moving["photometric"]) != ops.convert_to_numpy(still["photometric"]))
    no_cars = _predictions(0.3)
    no_cars["segmentation"] = {"segmentation_logits": _logits(False), "segmentation_logits_next": _logits(False)}
    ignored = video_consistency_terms(inputs, no_cars)
    np.testing.assert_allclose(ops.convert_to_numpy(ignored["photometric"]), ops.convert_to_numpy(still["photometric"]), rtol=1e-6)


def test_segmentation_term_is_zero_for_consistent_logits_and_positive_otherwise():
    inputs = _inputs()
    preds = _predictions()
    eye = np.zeros((B, 3), np.float32)
    preds["motion"].update(translation=eye, translation_backward=eye)  # no motion: logits must agree in place
    same = video_consistency_terms(inputs, preds)
    np.testing.assert_allclose(ops.convert_to_numpy(same["segmentation"]), 0.0, atol=1e-6)
    shifted = np.roll(_logits(), 3, axis=2)
    preds["segmentation"] = {"segmentation_logits": _logits(), "segmentation_logits_next": shifted}
    assert np.all(ops.convert_to_numpy(video_consistency_terms(inputs, preds)["segmentation"]) > 0.1)


def test_gradients_reach_every_task():
    inputs = _inputs(1)
    preds = _predictions(0.2)
    variables = {
        "logits": tf.Variable(preds["segmentation"]["segmentation_logits"]),
        "logits_next": tf.Variable(np.roll(preds["segmentation"]["segmentation_logits_next"], 2, axis=1)),
        "depth": tf.Variable(preds["depth"]["depth"]),
        "translation": tf.Variable(preds["motion"]["translation"]),
        "field": tf.Variable(preds["motion"]["residual_translation"]),
    }
    with tf.GradientTape() as tape:
        p = {
            "depth": {"depth": variables["depth"], "depth_next": preds["depth"]["depth_next"]},
            "motion": dict(preds["motion"], translation=variables["translation"], residual_translation=variables["field"]),
            # (tensors, as a model gives: keras.ops.argmax does not take a tf.Variable)
            "segmentation": {"segmentation_logits": tf.identity(variables["logits"]),
                             "segmentation_logits_next": tf.identity(variables["logits_next"])},
        }
        terms = video_consistency_terms(inputs, p)
        loss = tf.reduce_sum(terms["photometric"] + terms["segmentation"] + 1e-3 * terms["field_smoothness"])
    grads = tape.gradient(loss, list(variables.values()))
    for name, g in zip(variables, grads):
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0, name


def test_inverse_backward_ignores_the_predicted_backward_camera_motion():
    inputs = _inputs(2)
    preds = _predictions(0.1)
    exact = video_consistency_terms(inputs, preds, backward="inverse")
    preds["motion"] = dict(preds["motion"], translation_backward=np.full((B, 3), 3.0, np.float32))
    ignored = video_consistency_terms(inputs, preds, backward="inverse")
    for key in ("photometric", "segmentation"):
        np.testing.assert_allclose(ops.convert_to_numpy(ignored[key]), ops.convert_to_numpy(exact[key]), rtol=1e-6)


def test_shrinking_agreeing_logits_lowers_the_paper_form_but_raises_the_confident_form():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 1.0, (B, H, W, C)).astype(np.float32)
    logits[..., ROAD] += 6.0  # confident
    other = logits + rng.normal(0.0, 0.3, logits.shape).astype(np.float32)  # agrees, not exactly
    def total(form, scale):
        d = segmentation_disagreement(ops.convert_to_tensor(scale * logits), ops.convert_to_tensor(scale * other), form)
        return float(ops.mean(d))
    assert total("logits_l2", 0.5) < total("logits_l2", 1.0)  # collapse towards constant logits is downhill
    assert total("confident_cross_entropy", 0.8) > total("confident_cross_entropy", 1.0)  # and uphill here
    flat = segmentation_disagreement(ops.zeros((B, H, W, C)), ops.zeros((B, H, W, C)), "confident_cross_entropy")
    np.testing.assert_allclose(ops.convert_to_numpy(flat), 0.0)  # no confident peer label, no target


def test_confident_form_trains_only_segmentation_and_rejects_unknown_forms():
    inputs = _inputs(1)
    preds = _predictions(0.2)
    logits = tf.Variable(np.roll(preds["segmentation"]["segmentation_logits"], 2, axis=1))
    depth = tf.Variable(preds["depth"]["depth"])
    with tf.GradientTape() as tape:
        p = dict(preds, depth={"depth": depth, "depth_next": preds["depth"]["depth_next"]},
                 segmentation={"segmentation_logits": tf.identity(logits),
                               "segmentation_logits_next": preds["segmentation"]["segmentation_logits_next"]})
        seg = tf.reduce_sum(video_consistency_terms(inputs, p, segmentation_form="confident_cross_entropy",
                                                    confidence=0.5)["segmentation"])
    g_logits, g_depth = tape.gradient(seg, [logits, depth])
    assert float(seg) > 0 and float(tf.reduce_max(tf.abs(g_logits))) > 0
    assert g_depth is None or float(tf.reduce_max(tf.abs(g_depth))) == 0.0
    with pytest.raises(ValueError, match="segmentation_form"):
        relation_factory("depth_motion_segmentation")(segmentation_form="l1")


def test_agreement_gate_keeps_pixels_the_warp_reproduces_and_drops_the_rest():
    inputs = _inputs(4)
    preds = _predictions()
    eye = np.zeros((B, 3), np.float32)
    preds["motion"].update(translation=eye, translation_backward=eye)  # identity warp
    shifted = np.roll(_logits(), 3, axis=2)
    preds["segmentation"] = {"segmentation_logits": _logits(), "segmentation_logits_next": shifted}
    kwargs = dict(segmentation_form="confident_cross_entropy", confidence=0.5)
    same_frames = dict(inputs, image_next=inputs["image"])
    ungated = video_consistency_terms(same_frames, preds, **kwargs)
    gated = video_consistency_terms(same_frames, preds, agreement_tolerance=0.02, **kwargs)
    np.testing.assert_allclose(ops.convert_to_numpy(gated["agreement_fraction"]), 1.0)
    np.testing.assert_allclose(ops.convert_to_numpy(gated["segmentation"]),
                               ops.convert_to_numpy(ungated["segmentation"]), rtol=1e-6)
    assert np.all(ops.convert_to_numpy(ungated["segmentation"]) > 0.1)
    # unrelated random frames: the identity warp reproduces almost nothing, so almost nothing is compared
    unrelated = video_consistency_terms(inputs, preds, agreement_tolerance=0.02, **kwargs)
    assert np.all(ops.convert_to_numpy(unrelated["agreement_fraction"]) < 0.1)
    assert np.all(ops.convert_to_numpy(unrelated["segmentation"]) < ops.convert_to_numpy(ungated["segmentation"]))


def test_agreement_tolerance_must_be_positive():
    with pytest.raises(ValueError, match="agreement_tolerance"):
        relation_factory("depth_motion_segmentation")(agreement_tolerance=0.0)


def test_class_balanced_mean_weighs_every_present_class_alike():
    values = np.zeros((1, 4, 5, 1), np.float32)
    labels = np.full((1, 4, 5), ROAD, np.int32)
    labels[0, 0, 0] = CAR
    values[0, 0, 0, 0] = 2.0  # the one car pixel is wrong, the 19 road pixels are right
    mask = np.ones((1, 4, 5, 1), np.float32)
    balanced = ops.convert_to_numpy(class_balanced_mean(values, labels, mask, C))
    np.testing.assert_allclose(balanced, [1.0])  # (2 + 0) / 2 classes, not 2 / 20 pixels
    mask[0, 0, 0, 0] = 0.0  # a class with no pixel in the mask is not present
    np.testing.assert_allclose(ops.convert_to_numpy(class_balanced_mean(values, labels, mask, C)), [0.0])
    np.testing.assert_allclose(ops.convert_to_numpy(class_balanced_mean(values, labels, 0 * mask, C)), [0.0])


def test_balanced_form_counts_only_confident_targets():
    inputs = _inputs(5)
    preds = _predictions()
    eye = np.zeros((B, 3), np.float32)
    preds["motion"].update(translation=eye, translation_backward=eye)
    shifted = np.roll(_logits(), 3, axis=2)
    preds["segmentation"] = {"segmentation_logits": _logits(), "segmentation_logits_next": shifted}
    terms = video_consistency_terms(inputs, preds, segmentation_form="balanced_confident_cross_entropy",
                                    confidence=0.5)
    plain = video_consistency_terms(inputs, preds, segmentation_form="confident_cross_entropy", confidence=0.5)
    seg, plain_seg = ops.convert_to_numpy(terms["segmentation"]), ops.convert_to_numpy(plain["segmentation"])
    assert np.all(seg > plain_seg) and np.all(plain_seg > 0)  # the few car pixels that disagree count as much as all the road
    unsure = video_consistency_terms(inputs, preds, segmentation_form="balanced_confident_cross_entropy",
                                     confidence=1.0)  # no target is that confident
    np.testing.assert_allclose(ops.convert_to_numpy(unsure["segmentation"]), 0.0)


def _probabilities(rng, n, classes, peak):
    """[1, n, 1, classes] softmax rows whose argmax is mostly ``peak`` (an int or [n] ints), never the last class."""
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    logits[:, -1] -= 10.0
    logits[np.arange(n), peak] += 2.0
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return p.reshape(1, n, 1, classes)


def test_class_thresholds_pass_each_class_s_top_portion_up_to_the_cap():
    rng = np.random.default_rng(0)
    peak = rng.integers(0, 3, 600)
    probs = _probabilities(rng, 600, 4, peak)  # class 3 is nobody's argmax
    peak = probs.argmax(-1).reshape(-1)
    assert set(peak) == {0, 1, 2}
    valid = np.ones((1, 600, 1, 1), np.float32)
    for portion in (0.2, 0.5, 0.9):
        thr = ops.convert_to_numpy(class_thresholds(probs, valid, portion, cap=1.0))
        for c in range(3):
            members = probs[0, peak == c, 0, c]
            np.testing.assert_allclose(np.mean(members >= thr[c]), portion, atol=0.01)
        assert thr[3] == 1.0  # no member: the cap
    capped = ops.convert_to_numpy(class_thresholds(probs, valid, 0.2, cap=0.5))
    np.testing.assert_allclose(capped, 0.5)
    # only valid pixels count: with class 0's members invalid it has none
    no_zero = ops.convert_to_numpy(class_thresholds(probs, (peak != 0).reshape(valid.shape).astype(np.float32), 0.5,
                                                    cap=1.0))
    assert no_zero[0] == 1.0 and no_zero[1] < 1.0


def test_pseudo_labels_give_an_unsure_class_its_pixels():
    probs = np.array([[0.6, 0.35, 0.05], [0.95, 0.04, 0.01], [0.5, 0.2, 0.3]], np.float32).reshape(1, 3, 1, 3)
    labels, selected = (ops.convert_to_numpy(x) for x in pseudo_labels(probs, 0.9))
    np.testing.assert_array_equal(selected[0, :, 0, 0], [0, 1, 0])  # one threshold: the argmax where it is sure
    labels, selected = (ops.convert_to_numpy(x) for x in pseudo_labels(probs, np.array([0.9, 0.3, 0.9], np.float32)))
    np.testing.assert_array_equal(labels[0, :2, 0], [1, 0])  # 0.35 / 0.3 beats 0.6 / 0.9
    np.testing.assert_array_equal(selected[0, :, 0, 0], [1, 1, 0])


def test_class_portion_adds_targets_of_the_classes_the_peer_is_unsure_of():
    inputs = _inputs(5)
    preds = _predictions()
    eye = np.zeros((B, 3), np.float32)
    preds["motion"].update(translation=eye, translation_backward=eye)
    logits = _logits()
    logits[:, 4:10, 6:14, CAR] = 1.2  # the peer's cars at p ~ 0.2: no target at a 0.9 threshold
    preds["segmentation"] = {"segmentation_logits": logits * 0.0, "segmentation_logits_next": logits}
    kwargs = dict(segmentation_form="balanced_confident_cross_entropy", confidence=0.9)
    fixed = video_consistency_terms(inputs, preds, **kwargs)
    per_class = video_consistency_terms(inputs, preds, class_portion=0.5, **kwargs)
    assert np.all(ops.convert_to_numpy(per_class["segmentation"]) > ops.convert_to_numpy(fixed["segmentation"]))
    with pytest.raises(ValueError, match="class_portion"):
        relation_factory("depth_motion_segmentation")(class_portion=0.0)


def test_a_teacher_gives_the_mask_and_the_targets_and_the_student_the_compared_side():
    inputs = _inputs(5)
    preds = _predictions(0.3)
    no_cars = {"segmentation_logits": _logits(False), "segmentation_logits_next": _logits(False)}
    # the teacher identical to the student: the same terms as without a teacher
    same = video_consistency_terms(inputs, dict(preds, teacher=preds["segmentation"]), teacher_task="teacher",
                                   segmentation_form="confident_cross_entropy", confidence=0.5)
    alone = video_consistency_terms(inputs, preds, segmentation_form="confident_cross_entropy", confidence=0.5)
    for key in ("photometric", "segmentation", "movable_fraction"):
        np.testing.assert_allclose(ops.convert_to_numpy(same[key]), ops.convert_to_numpy(alone[key]), rtol=1e-6)
    # a student that sees no cars: the teacher's cars still set the mask and the targets
    student = dict(preds, segmentation=no_cars, teacher=preds["segmentation"])
    taught = video_consistency_terms(inputs, student, teacher_task="teacher",
                                     segmentation_form="confident_cross_entropy", confidence=0.5)
    np.testing.assert_allclose(ops.convert_to_numpy(taught["movable_fraction"]), 48 / (H * W))
    np.testing.assert_allclose(ops.convert_to_numpy(taught["photometric"]), ops.convert_to_numpy(alone["photometric"]),
                               rtol=1e-6)
    assert np.all(ops.convert_to_numpy(taught["segmentation"]) > ops.convert_to_numpy(alone["segmentation"]) + 0.1)
    # gradients reach the student's logits only
    student_logits = tf.Variable(_logits(False))
    teacher_logits = tf.Variable(_logits())
    with tf.GradientTape() as tape:
        p = dict(preds, segmentation={"segmentation_logits": tf.identity(student_logits),
                                      "segmentation_logits_next": _logits(False)},
                 teacher={"segmentation_logits": tf.identity(teacher_logits), "segmentation_logits_next": _logits()})
        loss = tf.reduce_sum(video_consistency_terms(inputs, p, teacher_task="teacher",
                                                     segmentation_form="confident_cross_entropy",
                                                     confidence=0.5)["segmentation"])
    g_student, g_teacher = tape.gradient(loss, [student_logits, teacher_logits])
    assert float(tf.reduce_max(tf.abs(g_student))) > 0
    assert g_teacher is None or float(tf.reduce_max(tf.abs(g_teacher))) == 0.0


def test_the_teacher_is_read_as_a_task_of_its_own():
    rel = relation_factory("depth_motion_segmentation")(teacher="segmentation_teacher")
    assert rel.reads["segmentation_teacher"] == ("segmentation_logits", "segmentation_logits_next")
    assert "segmentation_teacher" not in relation_factory("depth_motion_segmentation")().reads
    with pytest.raises(ValueError, match="teacher"):
        relation_factory("depth_motion_segmentation")(teacher="segmentation")


def test_movable_depth_gradient_off_leaves_depth_on_cars_to_the_other_terms():
    inputs = _inputs()
    preds = _predictions(0.3)
    rough = np.random.default_rng(1).uniform(6.0, 10.0, (B, H, W, 1)).astype(np.float32)  # smoothness has a slope
    depth = tf.Variable(rough)
    preds["depth"] = dict(preds["depth"], depth=rough)

    def grads(movable_depth_gradient, term):
        with tf.GradientTape() as tape:
            p = dict(preds, depth=dict(preds["depth"], depth=depth))
            terms = video_consistency_terms(inputs, p, movable_depth_gradient=movable_depth_gradient)
            loss = ops.sum(terms[term])
        return ops.convert_to_numpy(tape.gradient(loss, depth))[..., 0]

    on, off = grads(True, "photometric"), grads(False, "photometric")
    car = np.zeros((B, H, W), bool)
    car[:, 4:10, 6:14] = True
    assert np.abs(on[car]).max() > 0.0
    np.testing.assert_array_equal(off[car], 0.0)  # the warps no longer move the cars' depth
    np.testing.assert_allclose(off[~car], on[~car], rtol=1e-5, atol=1e-9)  # nor anything else's differently
    assert np.abs(grads(False, "smoothness")[car]).max() > 0.0  # smoothness still reaches the cars
    same = video_consistency_terms(inputs, preds, movable_depth_gradient=False)
    ref = video_consistency_terms(inputs, preds)
    for k in ("photometric", "smoothness", "segmentation"):
        np.testing.assert_allclose(ops.convert_to_numpy(same[k]), ops.convert_to_numpy(ref[k]), rtol=1e-6)
