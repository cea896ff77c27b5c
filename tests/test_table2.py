"""The Table 2 runner (Sec. 4.2) at toy scale: rows end to end, table layout, row names."""

import json
import os

import pytest
import tensorflow as tf

from taskology_tf.table2 import ROW_ORDER, experiment_file, format_table, parse_rows, run_table2

TINY = [
    "synthetic_lidar.beams = 8",
    "synthetic_lidar.azimuths = 64",
    "synthetic_lidar.max_points = 512",
    "det_train/synthetic_lidar.num_examples = 4",
    "det_mediator/synthetic_lidar.num_examples = 4",
    "det_eval/synthetic_lidar.num_examples = 2",
    "Experiment.mediator_batch_size = 2",
    "TaskTrainer.batch_size = 2",
    "TaskTrainer.checkpoint_every = 0",
    "TaskTrainer.summary_every = 0",
    "TaskTrainer.image_summaries = 0",
    "DetectionTask.max_pillars = 64",
]


def test_rows_run_end_to_end_and_write_the_table(tmp_path, capsys, eager):
    workdir = str(tmp_path)
    path = run_table2(workdir, steps=2, rows="5c,5b", gin_params=TINY, progress=False)
    assert path == os.path.join(workdir, "table2.json")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == path
    assert [line[:4] for line in lines if line.startswith("[")][::2] == ["[5b]", "[5c]"]  # the paper's order
    assert any("3D mAP/mAPH" in line for line in lines)

    rows = json.load(open(path))
    assert [r["row"] for r in rows] == ["5b", "5c"]
    for r in rows:
        assert r["steps"] == 2 and r["labels_percent"] == 5
        assert r["experiment"] == experiment_file(r["row"])
        for level in ("level_1", "level_2"):
            assert set(r[level]) == {"ap_3d", "aph_3d", "ap_bev", "aph_bev"}
            assert all(v is None or 0.0 <= v <= 1.0 for v in r[level].values())
        assert r["num_gt"] > 0  # the evaluation frames' vehicles lie inside the grid
        assert r["paper"]["ap_3d"] == pytest.approx(0.176 if r["row"] == "5b" else 0.235)
        assert {"ap_3d_l1", "aph_bev_l2", "flow_epe"} <= set(r["metrics"]["detection"])
    assert [r["consistency"] for r in rows] == [False, True]
    # Both rows wrote their checkpoints at step 2; only the consistency row has the relation and the mediator.
    for row in ("5b", "5c"):
        ckpt = tf.train.latest_checkpoint(os.path.join(workdir, row, "detection", "ckpt"))
        assert int(tf.train.load_checkpoint(ckpt).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    operative = open(os.path.join(workdir, "5c", "operative_config.gin")).read()
    assert "Experiment.relations = ['box_flow']" in operative and "label_fraction = 0.05" in operative
    assert "Experiment.relations = []" in open(os.path.join(workdir, "5b", "operative_config.gin")).read()


def test_parse_rows():
    assert parse_rows("100c, 5b 20") == ["5b", "20b", "20c", "100c"]
    assert parse_rows(["5C", "5%"]) == ["5b", "5c"]
    assert parse_rows("all") == list(ROW_ORDER)
    assert experiment_file("20c") == "table2_20_consistency" and experiment_file("100b") == "table2_100_baseline"
    for bad in ("5x", "50b", "", "5b,foo"):
        with pytest.raises(ValueError, match="5b, 5c, 20b"):
            parse_rows(bad)
    with pytest.raises(ValueError, match="steps"):
        run_table2("/nonexistent/never", steps=-1, rows="5b")


def test_format_table_layout():
    rows = [
        {"row": "5b", "method": "No Consistency", "labels_percent": 5,
         "level_1": {"ap_3d": 0.1, "aph_3d": 0.05, "ap_bev": 0.4, "aph_bev": 0.2},
         "level_2": {"ap_3d": 0.09, "aph_3d": 0.04, "ap_bev": None, "aph_bev": None},
         "paper": {"ap_3d": 0.176, "aph_3d": 0.096, "ap_bev": 0.443, "aph_bev": 0.243}},
        {"row": "100c", "method": "Adding L^con", "labels_percent": 100,
         "level_1": {"ap_3d": 0.542, "aph_3d": 0.496, "ap_bev": 0.75, "aph_bev": 0.685},
         "level_2": {"ap_3d": 0.5, "aph_3d": 0.4, "ap_bev": 0.7, "aph_bev": 0.6},
         "paper": {"ap_3d": 0.542, "aph_3d": 0.496, "ap_bev": 0.75, "aph_bev": 0.685}},
    ]
    lines = format_table(rows).splitlines()
    assert "LEVEL_1" in lines[0] and "LEVEL_2" in lines[0] and "paper" in lines[0]
    assert lines[1].split()[:5] == ["Method", "Labels", "3D", "mAP/mAPH", "BEV"]
    assert lines[2].startswith("No Consistency") and lines[2].split()[2:] == [
        "5%", "10.0/5.0", "40.0/20.0", "9.0/4.0", "-", "17.6/9.6", "44.3/24.3"]
    assert lines[3].startswith("Adding L^con") and lines[3].split()[2:] == [
        "100%", "54.2/49.6", "75.0/68.5", "50.0/40.0", "70.0/60.0", "54.2/49.6", "75.0/68.5"]
