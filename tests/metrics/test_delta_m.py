"""Tests of Delta_m (XTasC eq. 17): hand examples with both directions, the paper's NYU rows, file reading, errors."""

import json

import pytest

from taskology_tf.metrics.delta_m import (
    delta_m,
    delta_m_from_files,
    delta_m_terms,
    flatten_results,
    load_results,
    metric_direction,
)

# XTasC Table III (NYUv2 test set): mIoU, Pix Acc (higher better), Abs Err, Rel Err (lower better), Delta_m.
NYU_ST = {"miou": 30.62, "pixel_accuracy": 62.30, "abs_err": 0.6451, "rel_err": 0.2443}
NYU_ROWS = {
    "Base MT-Net": ({"miou": 31.02, "pixel_accuracy": 63.58, "abs_err": 0.6103, "rel_err": 0.2284}, 3.82),
    "Align-Net": ({"miou": 30.46, "pixel_accuracy": 63.32, "abs_err": 0.6514, "rel_err": 0.2295}, 1.55),
    "XTasC-Net": ({"miou": 30.31, "pixel_accuracy": 63.02, "abs_err": 0.5954, "rel_err": 0.2235}, 4.09),
}


def test_hand_example_both_directions():
    baseline = {"miou": 50.0, "abs_err": 2.0}
    model = {"miou": 55.0, "abs_err": 1.5}  # +10% mIoU, abs_err down 25% -> +25%
    assert delta_m_terms(model, baseline) == pytest.approx({"miou": 10.0, "abs_err": 25.0})
    assert delta_m(model, baseline) == pytest.approx(17.5)
    # Worse on both: the signs flip.
    worse = {"miou": 45.0, "abs_err": 2.5}
    assert delta_m(worse, baseline) == pytest.approx((-10.0 - 25.0) / 2)
    # The baseline against itself is 0; swapping a metric's direction flips its term.
    assert delta_m(baseline, baseline) == 0.0
    assert delta_m_terms(model, baseline, directions={"abs_err": "higher"})["abs_err"] == pytest.approx(-25.0)


@pytest.mark.parametrize("name", sorted(NYU_ROWS))
def test_reproduces_the_papers_nyu_delta_m(name):
    model, reported = NYU_ROWS[name]
    assert delta_m(model, NYU_ST) == pytest.approx(reported, abs=0.006)


def test_metric_subset_and_directions():
    assert metric_direction("miou") == "higher" and metric_direction("abs_rel") == "lower"
    assert metric_direction("depth/rel_err") == "lower" and metric_direction("segmentation/iou_road") == "higher"
    model = {"miou": 60.0, "pixel_accuracy": 90.0, "extra": 1.0}
    base = {"miou": 50.0, "pixel_accuracy": 100.0, "extra": 3.0}
    assert delta_m(model, base, metrics=["miou"]) == pytest.approx(20.0)
    assert delta_m(model, base, metrics=["miou", "pixel_accuracy"]) == pytest.approx(5.0)
    assert delta_m(model, base, directions={"extra": "lower"}) == pytest.approx((20.0 - 10.0 + 200.0 / 3) / 3)


def test_clear_errors():
    with pytest.raises(ValueError, match="'rel_err'.*missing from the model"):
        delta_m({"miou": 1.0}, {"miou": 1.0, "rel_err": 0.2})
    with pytest.raises(ValueError, match="'abs_err'.*missing from the baseline"):
        delta_m({"abs_err": 1.0}, {"miou": 1.0}, metrics=["abs_err"])
    with pytest.raises(ValueError, match="unknown direction for metric 'fps'"):
        delta_m({"fps": 1.0}, {"fps": 2.0})
    with pytest.raises(ValueError, match="baseline value of 'miou' is 0"):
        delta_m({"miou": 1.0}, {"miou": 0.0})
    with pytest.raises(ValueError, match="not finite"):
        delta_m({"miou": float("nan")}, {"miou": 1.0})
    with pytest.raises(ValueError, match="not a string"):
        delta_m({"miou": 1.0}, {"miou": 1.0}, metrics="miou")
    with pytest.raises(ValueError, match="must be 'higher' or 'lower'"):
        metric_direction("x", {"x": "up"})


def test_from_files_flat_and_nested(tmp_path):
    model, reported = NYU_ROWS["XTasC-Net"]
    (tmp_path / "m.json").write_text(json.dumps(model))
    (tmp_path / "b.json").write_text(json.dumps(NYU_ST))
    out = delta_m_from_files(str(tmp_path / "m.json"), str(tmp_path / "b.json"))
    assert out["delta_m"] == pytest.approx(reported, abs=0.006)
    assert set(out["terms"]) == set(NYU_ST) and out["baseline"] == NYU_ST

    nested = {"step": 10, "metrics": {"segmentation": {"miou": 55.0, "pixel_accuracy": 90.0},
                                      "depth": {"abs_rel": 0.1, "a1": 0.9}}}
    assert flatten_results(nested) == {"segmentation/miou": 55.0, "segmentation/pixel_accuracy": 90.0,
                                       "depth/abs_rel": 0.1, "depth/a1": 0.9}
    base = {"metrics": {"segmentation": {"miou": 50.0, "pixel_accuracy": 90.0}, "depth": {"abs_rel": 0.2, "a1": 0.9}}}
    (tmp_path / "nm.json").write_text(json.dumps(nested))
    (tmp_path / "nb.json").write_text(json.dumps(base))
    out = delta_m_from_files(str(tmp_path / "nm.json"), str(tmp_path / "nb.json"),
                             metrics=["segmentation/miou", "depth/abs_rel"])
    assert out["terms"] == pytest.approx({"segmentation/miou": 10.0, "depth/abs_rel": 50.0})
    assert out["delta_m"] == pytest.approx(30.0)

    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_results(str(tmp_path / "bad.json"))
