"""Tests of corrupt-label detection from instance-level task parameters: constructed rankings, report, figure."""

import json

import numpy as np
import pytest

from taskology_tf.metrics.noise_detection import (
    as_history,
    detection_accuracy,
    detection_curve,
    detection_report,
    format_report,
    load_parameter_history,
    plot_parameter_distributions,
    rank_by_value,
    write_report,
)

N = 100
IDS = list(range(1000, 1000 + N))
CORRUPT = set(IDS[::5]) | set(IDS[1::5])  # 40 of 100


def _separated(gap=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return {i: float(rng.normal() + (gap * 10 if i in CORRUPT else 0.0)) for i in IDS}


def test_perfect_separation_is_one_and_inverse_is_zero():
    values = {i: (2.0 if i in CORRUPT else 1.0) + 1e-3 * k for k, i in enumerate(IDS)}
    assert detection_accuracy(values, CORRUPT) == 1.0
    assert detection_accuracy({i: -v for i, v in values.items()}, CORRUPT) == 0.0
    # Top 20% holds 20 corrupt examples: half of the 40 are found.
    assert detection_accuracy(values, CORRUPT, top_fraction=0.2) == 0.5
    assert detection_accuracy(values, CORRUPT, top_fraction=1.0) == 1.0


def test_hand_ranking():
    values = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.5}
    assert rank_by_value(values) == [1, 2, 3, 4, 5]
    # corrupt {1, 4}: top 2 = {1, 2} -> one of two found.
    assert detection_accuracy(values, {1, 4}) == 0.5
    # Ties broken by id.
    assert rank_by_value({7: 1.0, 3: 1.0, 5: 2.0}) == [5, 3, 7]


def test_random_ranking_expectation():
    rng = np.random.default_rng(0)
    accs = [detection_accuracy({i: float(v) for i, v in zip(IDS, rng.random(N))}, CORRUPT) for _ in range(400)]
    # E = |top| / N = 0.4; the sd of one draw is about 0.077, of the mean of 400 about 0.004.
    assert np.mean(accs) == pytest.approx(0.4, abs=0.015)


def test_history_forms_and_curve():
    early, late = _separated(gap=0.0, seed=1), _separated(gap=1.0, seed=2)
    history = {0: early, 1: late}
    curve = detection_curve(history, CORRUPT)
    assert curve[1] == 1.0 and curve[0] < 0.8
    per_id = {i: [early[i], late[i]] for i in IDS}
    assert detection_curve(per_id, CORRUPT) == curve
    assert as_history(late) == {0: late}
    as_json = json.loads(json.dumps({str(e): {str(i): v for i, v in h.items()} for e, h in history.items()}))
    assert as_history(as_json) == history


def test_errors():
    with pytest.raises(ValueError, match="no parameter value"):
        detection_accuracy({1: 0.0, 2: 1.0}, {3})
    with pytest.raises(ValueError, match="empty"):
        detection_accuracy({1: 0.0}, set())
    with pytest.raises(ValueError, match="not finite"):
        detection_accuracy({1: float("nan"), 2: 0.0}, {1})
    with pytest.raises(ValueError, match="top_fraction"):
        detection_accuracy({1: 0.0, 2: 1.0}, {1}, top_fraction=0.0)
    with pytest.raises(ValueError, match="same number of epochs"):
        as_history({1: [0.0, 1.0], 2: [0.0]})


def test_report_json_text_and_figure(tmp_path):
    history = {e: _separated(gap=e / 2, seed=e) for e in range(3)}
    report = detection_report(history, CORRUPT, parameter="sigma_seg")
    final = report["final"]
    assert final["epoch"] == 2 and final["accuracy"] == 1.0 and final["num_top"] == 40
    assert final["corrupt_in_top"] == 40 and final["random_expectation"] == pytest.approx(0.4)
    assert final["corrupt"]["count"] == 40 and final["clean"]["count"] == 60
    assert final["corrupt"]["median"] > final["clean"]["q75"]
    text = format_report(report)
    assert "top 40.0%" in text and "sigma_seg" in text and "100.00" in text

    write_report(report, str(tmp_path / "r.json"), str(tmp_path / "r.txt"))
    assert json.loads((tmp_path / "r.json").read_text())["final"]["accuracy"] == 1.0
    assert (tmp_path / "r.txt").read_text().startswith("Corrupt-label detection")

    (tmp_path / "h.json").write_text(json.dumps({str(e): {str(i): v for i, v in h.items()} for e, h in history.items()}))
    loaded = load_parameter_history(str(tmp_path / "h.json"))
    png = plot_parameter_distributions(loaded, CORRUPT, str(tmp_path / "fig6.png"), parameter="sigma_seg")
    data = (tmp_path / "fig6.png").read_bytes()
    assert png == str(tmp_path / "fig6.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig6.png", "h.json", "r.json", "r.txt"]  # no temp files
