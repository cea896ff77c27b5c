"""Seed statistics: Spread formatting, cell-by-cell aggregation, the per-seed runner and --seeds end to end."""

import json
import math
import os

import pytest

from taskology_tf.cli import main
from taskology_tf.seeds import Spread, aggregate, mean_std, parse_seeds, run_seeds, stds
from taskology_tf.table1 import format_table as table1_format


def test_spread_formats_mean_and_std_and_scales():
    x = Spread(0.1234, 0.0041, 3)
    assert f"{x:.3f}" == "0.123±0.004"
    assert f"{x:>14.3f}" == "   0.123±0.004"
    assert f"{x:+.2f}" == "+0.12±0.00"
    y = 100 * x
    assert isinstance(y, Spread) and math.isclose(float(y), 12.34) and math.isclose(y.std, 0.41)
    assert json.loads(json.dumps({"v": x})) == {"v": 0.1234}  # JSON keeps the mean


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0
    assert mean_std([5.0]) == (5.0, 0.0)


def test_aggregate_walks_documents_and_keeps_equal_leaves():
    docs = [
        [{"row": "A", "steps": 100, "abs_rel": 0.30, "miou": None, "paper": {"abs_rel": 0.165}}],
        [{"row": "A", "steps": 100, "abs_rel": 0.20, "miou": None, "paper": {"abs_rel": 0.165}}],
        [{"row": "A", "steps": 100, "abs_rel": float("nan"), "miou": None, "paper": {"abs_rel": 0.165}}],
    ]
    (row,) = aggregate(docs)
    assert row["row"] == "A" and row["steps"] == 100 and row["miou"] is None
    assert row["paper"] == {"abs_rel": 0.165} and not isinstance(row["paper"]["abs_rel"], Spread)
    assert isinstance(row["abs_rel"], Spread) and row["abs_rel"].n == 2  # the NaN seed is left out
    assert math.isclose(float(row["abs_rel"]), 0.25)
    assert stds([row])[0]["abs_rel"] == pytest.approx(math.sqrt(0.005))
    # An experiment's formatter prints seed statistics unchanged.
    table = table1_format([{**row, "configuration": "Depth & motion only", "reported": ["depth"]}])
    assert "0.250±0.071" in table


@pytest.mark.parametrize("text,message", [("a,b", "integers"), ("", "at least one"), ("1,1", "repeats")])
def test_parse_seeds_rejects_bad_lists(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_run_seeds_binds_each_seed_and_keeps_every_value(tmp_path, capsys):
    seen = []

    def run(workdir, params):
        seen.append((workdir, params))
        os.makedirs(workdir, exist_ok=True)
        seed = int(params[-1].split("=")[1])
        path = os.path.join(workdir, "t.json")
        json.dump([{"row": "A", "abs_rel": 0.1 * (seed + 1)}], open(path, "w"))
        return path

    out = run_seeds("table1", [0, 1, 2], str(tmp_path), run, ["x = 1"], format_doc=lambda d: f"A {d[0]['abs_rel']:.2f}")
    assert [p for _, p in seen] == [["x = 1", f"Experiment.seed = {s}"] for s in (0, 1, 2)]
    assert [w for w, _ in seen] == [str(tmp_path / f"seed_{s}") for s in (0, 1, 2)]
    doc = json.load(open(out))
    assert doc["seeds"] == [0, 1, 2] and sorted(doc["per_seed"]) == ["0", "1", "2"]
    assert doc["mean"][0]["abs_rel"] == pytest.approx(0.2) and doc["std"][0]["abs_rel"] == pytest.approx(0.1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "A 0.20±0.10" in lines and lines[-1] == out


TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "video_train/synthetic.num_examples = 8",
    "video_eval/synthetic.num_examples = 4",
    "Experiment.mediator_batch_size = 2",
    "TaskTrainer.batch_size = 2",
    "TaskTrainer.checkpoint_every = 2",
    "TaskTrainer.summary_every = 0",
]


def test_experiment_with_seeds_end_to_end(tmp_path, capsys):
    flags = [f for b in TINY for f in ("--gin_param", b)]
    args = ["experiment", "staleness", "--workdir", str(tmp_path), "--values", "0,2", "--steps", "2",
            "--eval_every", "2", "--no_progress", "--seeds", "0,1", *flags]
    assert main(args) == 0
    out = capsys.readouterr().out
    path = os.path.join(str(tmp_path), "staleness_seeds.json")
    assert path in out and "±" in out
    doc = json.load(open(path))
    finals = [doc["per_seed"][s]["final"]["0"] for s in ("0", "1")]
    assert finals[0] != finals[1]  # the seed reaches the weights
    assert doc["std"]["final"]["0"] > 0
    for s in (0, 1):
        assert os.path.exists(os.path.join(str(tmp_path), f"seed_{s}", "staleness_0", "curve.json"))
    with open(os.path.join(str(tmp_path), "staleness.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main([*args[:-len(flags) - 2], "--seeds", "0,x"]) == 2
