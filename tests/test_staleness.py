"""The staleness experiment runner (Sec. 4.4) at toy scale: curves, table, plot, resume, CLI errors."""

import json
import os

import pytest

from taskology_tf.cli import main
from taskology_tf.staleness import format_table, run_staleness

TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "video_train/synthetic.num_examples = 8",
    "video_eval/synthetic.num_examples = 4",
    "Experiment.mediator_batch_size = 2",
    "TaskTrainer.batch_size = 2",
    "TaskTrainer.checkpoint_every = 2",
    "TaskTrainer.summary_every = 0",
    "TaskTrainer.jit_compile = False",  # XLA's compile would dominate a four-step run
]


def test_sweep_writes_curves_plot_and_resumes(tmp_path, capsys):
    workdir = str(tmp_path)
    summary = run_staleness(workdir, values=[0, 2], steps=4, eval_every=2, gin_params=TINY, progress=False)
    assert sorted(summary["final"]) == ["0", "2"]
    for value in ("0", "2"):
        curve = summary["curves"][value]
        assert [p["step"] for p in curve] == [0, 2, 4]
        assert all(p["abs_rel"] > 0 for p in curve)
    with open(os.path.join(workdir, "staleness.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "staleness (steps)" in out and "final abs_rel" in out
    # The stale run's peers were refreshed from a copy, so its curve differs from the synchronous one.
    assert summary["curves"]["0"][-1]["abs_rel"] != summary["curves"]["2"][-1]["abs_rel"]

    # Resume: a longer run continues from step 4 and keeps the points it has.
    again = run_staleness(workdir, values=[2], steps=6, eval_every=2, gin_params=TINY, progress=False)
    curve = again["curves"]["2"]
    assert [p["step"] for p in curve] == [0, 2, 4, 6]
    assert curve[:3] == summary["curves"]["2"]
    with open(os.path.join(workdir, "staleness_2", "curve.json")) as f:
        assert len(json.load(f)) == 4


def test_format_table_reports_final_and_best():
    curves = {0: [{"step": 0, "abs_rel": 0.5}, {"step": 10, "abs_rel": 0.2}, {"step": 20, "abs_rel": 0.3}]}
    row = format_table(curves, last=2).splitlines()[1].split()
    assert row == ["0", "0.3000", "0.2500", "0.2000", "10", "20"]


@pytest.mark.parametrize("args,message", [
    (["--values", "a,b"], "comma-separated integers"),
    (["--values", "-1"], ">= 0"),
    (["--steps", "0"], "positive"),
])
def test_cli_rejects_bad_flags(tmp_path, capsys, args, message):
    assert main(["staleness", "--workdir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_the_run_length_binds_the_learning_rate_schedules_too():
    import gin

    from taskology_tf.cli import parse_gin

    parse_gin(["staleness_common"], ["STEPS = 40"])  # what `taskology staleness --steps 40` binds
    try:
        assert gin.query_parameter("STEPS/gin.macro.value") == 40
        assert str(gin.query_parameter("Experiment.train_steps")) == "%STEPS"
        for task in ("depth", "motion"):
            assert str(gin.query_parameter(f"{task}/keras.optimizers.schedules.CosineDecay.decay_steps")) == "%STEPS"
    finally:
        gin.clear_config()
