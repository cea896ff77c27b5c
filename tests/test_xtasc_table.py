"""The XTasC Table I runner at toy scale: every row through the runner, the json, Delta_m, the layout, bad rows."""

import json
import math
import os

import pytest
import tensorflow as tf

from taskology_tf.xtasc_table import (
    METRICS,
    ROW_ORDER,
    build_table,
    delta_m_over,
    format_table,
    parse_rows,
    run_xtasc_table,
)

TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "xtasc_train/synthetic.num_examples = 4",
    "xtasc_eval/synthetic.num_examples = 2",
    "xtasc/TaskTrainer.batch_size = 2",
    "xtasc/TaskTrainer.checkpoint_every = 0",
    "xtasc/TaskTrainer.summary_every = 0",
    "xtasc/TaskTrainer.image_summaries = 0",
]


def test_all_rows_run_through_the_runner(tmp_path, capsys, eager):
    workdir = str(tmp_path)
    path = run_xtasc_table(workdir, steps=2, rows="all", gin_params=TINY, progress=False)
    assert path == os.path.join(workdir, "xtasc_table.json")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == path
    assert [line.split()[0] for line in lines if line.startswith("[") and "->" in line] == \
        [f"[{row}]" for row in ROW_ORDER]
    assert any(line.split()[:5] == ["Model", "mIoU", "Pix", "Acc", "Abs"] for line in lines)

    table = json.load(open(path))
    assert set(table) >= {"rows", "base_st_net", "metrics", "paper"}
    rows = {r["row"]: r for r in table["rows"]}
    assert list(rows) == list(ROW_ORDER)
    for row in rows.values():
        assert row["steps"] == 2 and row["params"] > 0
        assert set(row) >= {"model", "experiment", "delta_m", "metrics", *METRICS}
    # Each ST-Net reports its own task only; the joint models report both and a finite Delta_m.
    assert rows["st_segmentation"]["abs_err"] is None and 0 <= rows["st_segmentation"]["miou"] <= 1
    assert rows["st_depth"]["miou"] is None and rows["st_depth"]["abs_err"] > 0
    for row in ("mt", "align", "xtasc"):
        assert all(rows[row][k] is not None for k in METRICS)
        assert math.isfinite(rows[row]["delta_m"]) and set(rows[row]["delta_m_terms"]) == set(METRICS)
    assert rows["mt"]["transfer_miou"] is None and rows["xtasc"]["transfer_abs_err"] > 0
    # Base ST-Net = segmentation ST-Net's segmentation + depth ST-Net's depth; the TTNets add parameters.
    base = table["base_st_net"]
    assert base["miou"] == rows["st_segmentation"]["miou"] and base["rel_err"] == rows["st_depth"]["rel_err"]
    assert base["delta_m"] == 0.0
    assert rows["align"]["params"] == rows["xtasc"]["params"] > rows["mt"]["params"] > rows["st_depth"]["params"]

    # A later call with one joint row reuses the ST rows of the same workdir for Delta_m.
    run_xtasc_table(workdir, steps=2, rows="mt", gin_params=TINY, progress=False)
    again = json.load(open(path))
    assert [r["row"] for r in again["rows"]] == ["mt"]
    assert again["base_st_net"]["from"] == {"st_segmentation": "earlier run", "st_depth": "earlier run"}
    assert again["rows"][0]["delta_m"] == pytest.approx(rows["mt"]["delta_m"], abs=1e-6)


def test_parse_rows_order_aliases_and_errors():
    assert parse_rows("xtasc,st") == ["st_segmentation", "st_depth", "xtasc"]
    assert parse_rows(["MT", "align"]) == ["mt", "align"]
    assert parse_rows("all") == list(ROW_ORDER)
    with pytest.raises(ValueError, match="st_segmentation"):
        parse_rows("mt,st_net")
    with pytest.raises(ValueError, match="got none"):
        parse_rows(" , ")
    with pytest.raises(ValueError, match="rows"):
        run_xtasc_table("/nonexistent/never", steps=1, rows="bogus")


def _row(row, miou=None, acc=None, abs_err=None, rel_err=None, model=None):
    return {"row": row, "model": model or row, "miou": miou, "pixel_accuracy": acc, "abs_err": abs_err,
            "rel_err": rel_err}


def test_delta_m_over_the_two_st_nets():
    seg = _row("st_segmentation", 0.5, 0.8)
    depth = _row("st_depth", abs_err=0.02, rel_err=0.2)
    # +10 % mIoU, 0 % acc, abs err 10 % lower (+10), rel err 10 % higher (-10): mean 2.5 %.
    mt = _row("mt", 0.55, 0.8, 0.018, 0.22, "Base MT-Net")
    table = build_table([seg, depth, mt])
    assert table["rows"][2]["delta_m"] == pytest.approx(2.5)
    assert table["rows"][2]["delta_m_terms"] == pytest.approx(
        {"miou": 10.0, "pixel_accuracy": 0.0, "abs_err": 10.0, "rel_err": -10.0})
    assert table["rows"][0]["delta_m"] is None and table["base_st_net"]["delta_m"] == 0.0
    # Without the depth ST-Net there is no baseline for the depth metrics: no Delta_m.
    alone = build_table([seg, mt])
    assert alone["rows"][1]["delta_m"] is None and alone["base_st_net"]["delta_m"] is None
    assert delta_m_over(mt, {"miou": 0.0, "pixel_accuracy": 1, "abs_err": 1, "rel_err": 1}) == (None, {})


def test_format_table_layout():
    table = build_table([
        _row("st_segmentation", 0.5, 0.8), _row("st_depth", abs_err=0.02, rel_err=0.2),
        _row("mt", 0.55, 0.8, 0.018, 0.22, "Base MT-Net"),
        {**_row("xtasc", 0.5, 0.8, 0.02, 0.2, "XTasC-Net"), "transfer_miou": 0.3, "transfer_pixel_accuracy": 0.6,
         "transfer_abs_err": 0.03, "transfer_rel_err": 0.4},
    ])
    lines = format_table(table).splitlines()
    header = lines.index(next(line for line in lines if line.startswith("Model")))
    assert lines[header].split() == ["Model", "mIoU", "Pix", "Acc", "Abs", "Err", "Rel", "Err", "Delta_m"]
    assert lines[header + 1].split() == ["Base", "ST-Net", "50.00", "80.00", "0.0200", "20.00", "0.00"]
    assert lines[header + 2].split() == ["Base", "MT-Net", "55.00", "80.00", "0.0180", "22.00", "+2.50"]
    assert lines[header + 3].split() == ["XTasC-Net", "50.00", "80.00", "0.0200", "20.00", "0.00"]
    paper = lines.index(next(line for line in lines if line.startswith("Paper")))
    assert lines[paper + 2].split() == ["Base", "ST-Net", "66.40", "93.48", "0.0124", "19.78", "0.00"]
    assert lines[paper + 5].split() == ["XTasC-Net", "66.51", "93.56", "0.0122", "19.40", "1.58"]
    assert lines[-1].split() == ["XTasC-Net", "30.00", "60.00", "0.0300", "40.00"]
