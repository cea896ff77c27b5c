"""The results page: verdict rules, claims read from recorded results, the page and the command."""

import json
import os

import pytest

from taskology_tf.cli import main
from taskology_tf.reproduction import compare, render, within


@pytest.mark.parametrize("ours,ref,sign,holds,reason", [
    ([0.10, 0.11, 0.12], [0.20, 0.21, 0.22], -1, True, ">"),
    ([0.10, 0.11, 0.12], [0.20, 0.21, 0.22], +1, False, "wrong sign"),
    ([0.10, 0.20, 0.30], [0.20, 0.25, 0.30], -1, False, "within twice"),
    ([0.10, 0.11], [0.20, 0.21], -1, False, "only 2 seed"),
    ([0.9, 0.95, 0.97], [0.4], +1, False, "only 1 seed"),
    ([], [0.2], -1, False, "no measured"),
])
def test_compare(ours, ref, sign, holds, reason):
    verdict = compare(ours, ref, sign)
    assert verdict.holds is holds and reason in verdict.reason


def test_compare_against_a_constant_needs_seeds_only_on_our_side():
    assert compare([0.9, 0.95, 0.97], [0.4], +1, exact_reference=True).holds
    assert not compare([0.9], [0.4], +1, exact_reference=True).holds


def test_within():
    assert within([0.30, 0.31, 0.32], [0.30, 0.33, 0.36]).holds
    assert not within([0.50, 0.51, 0.52], [0.30, 0.31, 0.32]).holds
    assert not within([0.30], [0.30, 0.31, 0.32]).holds


def _table1_seed(a, c, b, d):
    rows = []
    for row, abs_rel, miou in (("A", a, None), ("B", None, b), ("C", c, None), ("D", None, d), ("E", a, b)):
        rows.append({"row": row, "configuration": row, "steps": 10, "reported": ["depth", "segmentation"],
                     "abs_rel": abs_rel, "miou_movable": miou, "miou": miou})
    return rows


def test_render_gives_verdicts_per_claim_and_says_what_is_missing():
    table1 = {"experiment": "table1", "seeds": [0, 1, 2], "command": "taskology experiment table1 --seeds 0,1,2",
              "seconds": {"0": 60, "1": 60, "2": 60},
              "per_seed": {str(s): _table1_seed(0.30 + 0.01 * s, 0.20 + 0.01 * s, 0.40, 0.40 + 0.001 * s)
                           for s in range(3)}}
    page = render({"table1": table1}, notes={"table2": "Detector does not learn yet."}, today="2026-12-04")
    lines = page.splitlines()
    claim_c = next(line for line in lines if "C < A" in line)
    assert "**holds**" in claim_c and "0.210 ± 0.010 (n=3)" in claim_c
    claim_d = next(line for line in lines if "D > B" in line)
    assert "**not shown**" in claim_d and "within twice" in claim_d
    claim_e = next(line for line in lines if "E < A" in line)
    assert "wrong sign" in claim_e  # E equals A here: a zero difference is not the paper's sign
    assert "not run with --seeds yet" in next(line for line in lines if line.startswith("| Taskology Table 2"))
    assert "Detector does not learn yet." in page
    assert "seeds 0, 1, 2; 1 min per seed for the recorded command" in page


def test_report_command_writes_the_page(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    staleness = {"steps": 100, "final": {"0": 0.3, "10": 0.31}, "curves": {
        "0": [{"step": 0, "abs_rel": 0.7}, {"step": 100, "abs_rel": 0.3}],
        "10": [{"step": 0, "abs_rel": 0.7}, {"step": 100, "abs_rel": 0.31}]}}
    (results / "staleness.json").write_text(json.dumps(staleness))
    out = tmp_path / "REPRODUCTION.md"
    assert main(["experiment", "report", "--results", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    assert "staleness 10" in page and "staleness = 10 % of the run" in page and "only 1 seed" in page and "one run (no --seeds)" in page
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert main(["experiment", "report", "--results", str(tmp_path / "none"), "--out", str(out)]) == 1
    assert "no results folder" in capsys.readouterr().err


def test_committed_page_is_what_the_committed_results_give():
    """REPRODUCTION.md is generated: regenerating it from benchmarks/results/ gives the same text."""
    import re

    from taskology_tf.reproduction import NAMES, load_results, render

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results, page = os.path.join(root, "benchmarks", "results"), os.path.join(root, "REPRODUCTION.md")
    if not os.path.exists(page):
        pytest.skip("no REPRODUCTION.md in this tree")
    text = open(page).read()
    today = re.search(r"on (\d{4}-\d{2}-\d{2});", text).group(1)
    notes = {n: open(os.path.join(results, f"{n}.md")).read() for n in NAMES
             if os.path.exists(os.path.join(results, f"{n}.md"))}
    assert render(load_results(results), notes, today) == text, "run `taskology experiment report` and commit it"
