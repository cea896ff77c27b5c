"""Table 1 of the paper (Sec. 4.1): depth, motion and segmentation, rows A to E, at CPU scale.

Runs ``gin/experiments/table1_{a..e}.gin`` in order, each in ``<workdir>/<row>/`` (resuming from its
checkpoints), and hands each frozen network its source: C's frozen segmentation starts from B's
``<workdir>/B/segmentation``, D's frozen depth and motion from C's ``<workdir>/C/depth`` and
``<workdir>/C/motion``, and D's and E's frozen ``segmentation_teacher`` (Eq. 4's labels) from B's
(``TaskTrainer.init_checkpoint`` bindings). Prints depth Abs Rel and
segmentation mIoU (movable classes, as in the paper, and all classes) in the layout of the paper's
Table 1 and writes the rows to ``<workdir>/table1.json``, whose path is printed last.
"""

from __future__ import annotations

import math
import os
import time
from typing import Sequence

ROW_ORDER = "ABCDE"

# row -> (configuration as in the paper, experiment file, columns the paper reports)
ROWS = {
    "A": ("Depth & motion only", "table1_a", ("depth",)),
    "B": ("Segmentation only", "table1_b", ("segmentation",)),
    "C": ("Frozen segmentation model B with depth & motion", "table1_c", ("depth",)),
    "D": ("Frozen depth & motion model C & segmentation", "table1_d", ("segmentation",)),
    "E": ("Depth, motion and segmentation training jointly", "table1_e", ("depth", "segmentation")),
}

# The paper's Table 1 (Cityscapes evaluation; segmentation mIoU on pedestrians and vehicles).
PAPER = {
    "A": {"abs_rel": 0.165, "miou_movable": None},
    "B": {"abs_rel": None, "miou_movable": 0.455},
    "C": {"abs_rel": 0.129, "miou_movable": None},
    "D": {"abs_rel": None, "miou_movable": 0.471},
    "E": {"abs_rel": 0.125, "miou_movable": 0.478},
}

# row -> {task whose init_checkpoint is bound: (source row, source task)}
SOURCES = {
    "C": {"segmentation": ("B", "segmentation")},
    "D": {"depth": ("C", "depth"), "motion": ("C", "motion"), "segmentation_teacher": ("B", "segmentation")},
    "E": {"segmentation_teacher": ("B", "segmentation")},
}


def parse_rows(rows: str | Sequence[str]) -> list[str]:
    """Row letters in the paper's order, e.g. 'eba' -> ['A', 'B', 'E']; ValueError for unknown letters."""
    letters = [r.strip().upper() for r in (rows.replace(",", "") if isinstance(rows, str) else rows) if r.strip()]
    unknown = sorted(set(letters) - set(ROW_ORDER))
    if not letters or unknown:
        raise ValueError(f"rows {rows!r}: expected letters among {ROW_ORDER} (e.g. 'ABCDE' or 'BC'), "
                         f"got {unknown or 'none'}.")
    return [r for r in ROW_ORDER if r in letters]


def init_bindings(row: str, workdir: str) -> list[str]:
    """Gin bindings that point row ``row``'s frozen tasks at their source run's checkpoints under ``workdir``."""
    return [f"{task}/TaskTrainer.init_checkpoint = {os.path.join(workdir, src_row, src_task)!r}"
            for task, (src_row, src_task) in SOURCES.get(row, {}).items()]


def _check_sources(row: str, workdir: str, running: Sequence[str]) -> None:
    from taskology_tf.core.trainer import resolve_checkpoint

    for task, (src_row, src_task) in SOURCES.get(row, {}).items():
        folder = os.path.join(workdir, src_row, src_task)
        if src_row not in running and resolve_checkpoint(folder) is None:
            raise ValueError(
                f"row {row} starts its frozen {task!r} network from row {src_row}'s checkpoint, but {folder} has "
                f"none; run row {src_row} first (e.g. --rows {src_row}{row}) with the same --workdir."
            )


def _finite(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def table_row(row: str, result: dict) -> dict:
    """One JSON row: the measured Abs Rel and mIoU (None where the row has no such task) and all metrics."""
    name, gin_name, reported = ROWS[row]
    metrics = result["metrics"]
    depth = metrics.get("depth", {})
    seg = metrics.get("segmentation", {})
    return {
        "row": row,
        "configuration": name,
        "experiment": gin_name,
        "steps": result["step"],
        "reported": list(reported),  # the columns the paper fills for this row
        "abs_rel": _finite(depth.get("abs_rel")),
        "abs_rel_moving": _finite(depth.get("moving_abs_rel")),
        "abs_rel_static": _finite(depth.get("static_abs_rel")),
        "miou_movable": _finite(seg.get("miou_movable")),
        "miou": _finite(seg.get("miou")),
        "paper": PAPER[row],
        "metrics": {task: {k: _finite(v) for k, v in values.items()} for task, values in metrics.items()},
    }


def format_table(rows: list[dict]) -> str:
    """The layout of the paper's Table 1, with only the cells the paper fills (others '-'), plus the depth error
    on moving-object and on static pixels (where the gain of segmentation should come from) and all-class mIoU."""
    def cell(row, key, column, width):
        value = row.get(key)
        text = "-" if value is None or column not in row.get("reported", (column,)) else f"{value:.3f}"
        return f"{text:>{width}}"

    lines = [f"{'Configuration':<52}{'Depth Error (Abs. Rel.)':>25}{'moving':>16}{'static':>16}"
             f"{'Segmentation mIoU':>20}{'mIoU (all classes)':>21}"]
    for row in rows:
        label = f"{row['row']}. {row['configuration']}"
        lines.append(f"{label:<52}" + cell(row, "abs_rel", "depth", 25) + cell(row, "abs_rel_moving", "depth", 16)
                     + cell(row, "abs_rel_static", "depth", 16) + cell(row, "miou_movable", "segmentation", 20)
                     + cell(row, "miou", "segmentation", 21))
    return "\n".join(lines)


def run_table1(workdir: str, steps: int | None = None, rows: str | Sequence[str] = ROW_ORDER,
               gin_params: Sequence[str] = (), progress: bool = True) -> str:
    """Train and evaluate the rows in order (B before C, C before D), print the table, write table1.json.

    ``steps``: training steps of every row (None: the experiment files' ``Experiment.train_steps``).
    ``gin_params``: extra bindings for every row. Returns the path of table1.json.
    """
    from taskology_tf.experiment import publish_table, run_rows

    selected = parse_rows(rows)
    for row in selected:
        _check_sources(row, workdir, selected[:selected.index(row)])
    start = time.monotonic()
    table = run_rows(workdir, [(row, ROWS[row][0], [ROWS[row][1]], init_bindings(row, workdir)) for row in selected],
                     table_row, steps, gin_params, progress, desc="Table 1")
    return publish_table(
        workdir, "table1", table,
        "Table 1 (synthetic world): segmentation labels from the 'coco' style, unlabelled dense-traffic 'city' "
        "video as mediator, evaluation on held-out dense-traffic 'city' frames (mIoU on the movable classes, as in "
        "the paper)",
        format_table(table), time.monotonic() - start)
