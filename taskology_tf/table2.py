"""Table 2 of the paper (Sec. 4.2): 3D vehicle detection with box flow, 5 % / 20 % / 100 % labels,
each without and with the box-flow consistency term, at CPU scale on the synthetic LiDAR world.

Runs ``gin/experiments/table2_{5,20,100}_{baseline,consistency}.gin`` in the paper's order, each in
``<workdir>/<row>/`` (row names ``5b``, ``5c``, ``20b``, ``20c``, ``100b``, ``100c``: label percentage,
then ``b`` = "No Consistency", ``c`` = "Adding L^con"), resuming from its checkpoints. Both rows of a
label fraction start from the same weights and see the same labelled batches (same seeds); the ``c`` row
adds the ``box_flow`` relation on the unlabelled mediator. Prints 3D and BEV mAP/mAPH in the layout of
the paper's Table 2 at LEVEL_1 (the paper does not name the level; LEVEL_2 follows in extra columns),
next to the paper's numbers, and writes the rows to ``<workdir>/table2.json`` (metrics as fractions in
[0, 1], as ``metrics.detection`` gives them), whose path is printed last.
"""

from __future__ import annotations

import math
import re
import time
from typing import Sequence

FRACTIONS = (5, 20, 100)
ROW_ORDER = ("5b", "5c", "20b", "20c", "100b", "100c")
METHODS = {"b": "No Consistency", "c": "Adding L^con"}
EXPERIMENTS = {"b": "baseline", "c": "consistency"}

# The paper's Table 2 (Waymo Open Dataset, vehicles), as fractions: (3D AP, 3D APH, BEV AP, BEV APH).
PAPER = {
    "5b": (0.176, 0.096, 0.443, 0.243),
    "5c": (0.235, 0.120, 0.511, 0.265),
    "20b": (0.308, 0.164, 0.630, 0.341),
    "20c": (0.316, 0.191, 0.657, 0.392),
    "100b": (0.530, 0.476, 0.750, 0.668),
    "100c": (0.542, 0.496, 0.750, 0.685),
}
COLUMNS = ("ap_3d", "aph_3d", "ap_bev", "aph_bev")
LEVELS = {"level_1": "l1", "level_2": "l2"}


def experiment_file(row: str) -> str:
    """The experiment file of a row, e.g. '5c' -> 'table2_5_consistency'."""
    return f"table2_{row[:-1]}_{EXPERIMENTS[row[-1]]}"


def parse_rows(rows: str | Sequence[str]) -> list[str]:
    """Row names in the paper's order. ``rows``: names separated by commas or spaces (or a sequence);
    ``5b``/``5c`` are one row, ``5`` both rows of a fraction, ``all`` every row. E.g. '20c, 5' ->
    ['5b', '5c', '20c']. ValueError for anything else."""
    tokens = re.split(r"[,\s]+", rows) if isinstance(rows, str) else list(rows)
    tokens = [str(t).strip().lower() for t in tokens if str(t).strip()]
    picked, unknown = set(), []
    for token in tokens:
        if token == "all":
            picked.update(ROW_ORDER)
        elif token in ROW_ORDER:
            picked.add(token)
        elif token.rstrip("%") in {str(f) for f in FRACTIONS}:
            picked.update({f"{token.rstrip('%')}b", f"{token.rstrip('%')}c"})
        else:
            unknown.append(token)
    if unknown or not picked:
        raise ValueError(
            f"rows {rows!r}: expected row names among {', '.join(ROW_ORDER)} (label % then b = no consistency, "
            f"c = with consistency), a label % ({', '.join(map(str, FRACTIONS))}) for both its rows, or 'all'; "
            f"got {unknown or 'none'}."
        )
    return [r for r in ROW_ORDER if r in picked]


def _finite(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def table_row(row: str, result: dict) -> dict:
    """One JSON row: 3D/BEV AP/APH at LEVEL_1 and LEVEL_2 (fractions), flow EPE, the paper's numbers, all metrics."""
    metrics = result["metrics"].get("detection", {})
    out = {
        "row": row,
        "method": METHODS[row[-1]],
        "labels_percent": int(row[:-1]),
        "consistency": row[-1] == "c",
        "experiment": experiment_file(row),
        "steps": result["step"],
    }
    for level, suffix in LEVELS.items():
        out[level] = {c: _finite(metrics.get(f"{c}_{suffix}")) for c in COLUMNS}
    out["flow_epe"] = _finite(metrics.get("flow_epe"))
    out["num_gt"] = _finite(metrics.get("num_gt_l2"))
    out["paper"] = dict(zip(COLUMNS, PAPER[row]))
    out["metrics"] = {task: {k: _finite(v) for k, v in values.items()} for task, values in result["metrics"].items()}
    return out


def _pair(values: dict | None, a: str, b: str) -> str:
    if not values or values.get(a) is None or values.get(b) is None:
        return "-"
    return f"{100 * values[a]:.1f}/{100 * values[b]:.1f}"


def format_table(rows: list[dict]) -> str:
    """The layout of the paper's Table 2 (mAP/mAPH in %), measured at LEVEL_1 and LEVEL_2, and the paper's numbers."""
    head = (f"{'Method':<16}{'Labels':>7}{'3D mAP/mAPH':>15}{'BEV mAP/mAPH':>15}"
            f"{'L2 3D':>13}{'L2 BEV':>13}{'paper 3D':>13}{'paper BEV':>13}")
    lines = [f"{'':<23}{'LEVEL_1 (%)':^30}{'LEVEL_2 (%)':^26}{'paper (%)':^26}", head]
    for row in rows:
        l1, l2, paper = row.get("level_1"), row.get("level_2"), row.get("paper")
        lines.append(
            f"{row['method']:<16}{str(row['labels_percent']) + '%':>7}"
            f"{_pair(l1, 'ap_3d', 'aph_3d'):>15}{_pair(l1, 'ap_bev', 'aph_bev'):>15}"
            f"{_pair(l2, 'ap_3d', 'aph_3d'):>13}{_pair(l2, 'ap_bev', 'aph_bev'):>13}"
            f"{_pair(paper, 'ap_3d', 'aph_3d'):>13}{_pair(paper, 'ap_bev', 'aph_bev'):>13}"
        )
    return "\n".join(lines)


def run_table2(workdir: str, steps: int | None = None, rows: str | Sequence[str] = ROW_ORDER,
               gin_params: Sequence[str] = (), progress: bool = True) -> str:
    """Train and evaluate the rows in the paper's order, print the table, write ``<workdir>/table2.json``.

    ``steps``: training steps of every row (None: the experiment files' ``Experiment.train_steps``).
    ``rows``: see ``parse_rows``. ``gin_params``: extra bindings for every row. Rows resume from the
    checkpoints in ``<workdir>/<row>`` (a finished row is only evaluated again). Returns the json's path.
    """
    from taskology_tf.experiment import publish_table, run_rows

    selected = parse_rows(rows)
    start = time.monotonic()
    table = run_rows(workdir, [(row, f"{METHODS[row[-1]]}, {row[:-1]}% labels", [experiment_file(row)], [])
                               for row in selected], table_row, steps, gin_params, progress, desc="Table 2")
    return publish_table(
        workdir, "table2", table,
        "Table 2 (synthetic LiDAR world): vehicles, n_f = 3 frames 0.5 s apart; labels kept on a fraction of the "
        "frames; consistency rows add box flow on the same sequences unlabelled; evaluation on held-out sequences "
        "(current frame, IoU 0.7)", format_table(table), time.monotonic() - start)
