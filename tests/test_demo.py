"""The README demo on a tiny configuration: table layout, JSON rows, path printed last."""

import json
import os

from taskology_tf.cli import main
from taskology_tf.demo import format_table
from taskology_tf.testing import gin_param_flags



def test_demo_writes_table_json_and_prints_its_path_last(tmp_path, capsys):
    args = ["demo", "--workdir", str(tmp_path), "--steps", "2", "--no_progress", "--variant", "partial",
            *gin_param_flags()]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    path = os.path.join(str(tmp_path), "table3.json")
    assert lines[-1] == path
    rows = json.load(open(path))
    assert [r["method"] for r in rows] == ["baseline", "consistency"]
    for r in rows:
        assert {"within_11.25", "within_22.5", "within_30", "abs_rel"} <= set(r)
        assert 0 <= r["within_11.25"] <= r["within_22.5"] <= r["within_30"] <= 100
    assert any("Abs Rel" in line for line in lines) and any("with consistency" in line for line in lines)
    for method in ("baseline", "consistency"):
        run = os.path.join(str(tmp_path), "partial", method)
        assert os.path.exists(os.path.join(run, "metrics.json"))
        assert os.listdir(os.path.join(run, "normals", "logs", "eval"))  # image panels and scalars


def test_format_table_layout():
    rows = [
        {"method": "baseline", "within_11.25": 9.2, "within_22.5": 30.8, "within_30": 46.3, "abs_rel": 28.2},
        {"method": "consistency", "within_11.25": 13.6, "within_22.5": 34.9, "within_30": 46.7, "abs_rel": 24.9},
    ]
    text = format_table(rows)
    assert "< 11.25°" in text and "Abs Rel" in text
    last = text.splitlines()[-1].split()
    assert last[-4:] == ["13.6", "34.9", "46.7", "24.9"]
