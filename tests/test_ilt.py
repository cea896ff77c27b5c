"""The instance-level weighting runner at toy scale: runs, detection report, table, errors."""

import json
import os

import numpy as np
import pytest

from taskology_tf.cli import main
from taskology_tf.ilt import format_table, parameter_history, parse_list, run_ilt

TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "ilt_train/synthetic.num_examples = 24",
    "ilt_eval/synthetic.num_examples = 4",
    "xtasc/TaskTrainer.batch_size = 4",  # an epoch is 6 steps
    "xtasc/TaskTrainer.checkpoint_every = 0",
    "xtasc/TaskTrainer.summary_every = 0",
    "xtasc/TaskTrainer.image_summaries = 0",
]


def test_runs_equal_and_instance_and_reports_detection(tmp_path, capsys):
    path = run_ilt(str(tmp_path), noise="seg40", weightings="instance,equal", steps=13, gin_params=TINY,
                   progress=False)
    rows = json.load(open(path))
    assert [(r["noise"], r["weighting"]) for r in rows] == [("seg40", "equal"), ("seg40", "instance")]
    assert rows[0]["detection"] is None and rows[0]["steps"] == 13
    det = rows[1]["detection"]
    # 40 % of 24 examples are corrupt, exactly (ids read from the dataset); two epochs were snapshotted.
    assert det["num_examples"] == 24 and det["num_corrupt"] == 10 and det["epoch"] == 2
    assert 0.0 <= det["accuracy"] <= 1.0
    run = tmp_path / "seg40_instance"
    assert (run / "parameters.png").stat().st_size > 0 and (run / "detection.txt").exists()
    history = parameter_history(str(run / "xtasc" / "instance_parameters"), "segmentation")
    assert sorted(history) == [1, 2] and len(history[2]) == 24
    assert any(v != 0.0 for v in history[2].values())  # the parameters moved
    out = capsys.readouterr().out
    assert "seg40    instance" in out and out.strip().endswith("ilt.json")


def test_format_table_and_errors(tmp_path):
    row = {"noise": "seg40", "weighting": "instance", "miou": 0.5, "pixel_accuracy": 0.8, "abs_err": None,
           "rel_err": 0.2, "detection": {"accuracy": 0.975, "top_fraction": 0.4}}
    line = format_table([row]).splitlines()[1]
    assert "0.5000" in line and " - " in line and "97.5% (k=40%)" in line
    assert parse_list("instance, equal", ["equal", "instance"], "w") == ["equal", "instance"]
    with pytest.raises(ValueError, match="among"):
        parse_list("equal,focal", ["equal", "instance"], "weightings")
    np.savez(tmp_path / "epoch-1.npz", epoch=np.int64(1), id=np.array([5, 6]), log_variance=np.zeros((2, 1)),
             terms=np.array(["depth"]))
    with pytest.raises(ValueError, match="no instance parameters of term 'segmentation'"):
        parameter_history(str(tmp_path), "segmentation")


def test_cli_rejects_unknown_noise(tmp_path, capsys):
    assert main(["experiment", "ilt", "--workdir", str(tmp_path), "--noise", "seg90", "--no_progress"]) == 1
    assert "noise 'seg90'" in capsys.readouterr().err
