"""Table I of the XTasC paper (Nakano et al., Sec. V-E1): ST-Net, MT-Net, Align-Net, XTasC-Net, at CPU scale.

Runs ``gin/experiments/xtasc_{row}.gin`` for the selected rows, in the order of ``ROW_ORDER``, each in
``<workdir>/<row>/`` (resuming from its checkpoints), all with the same budget (steps, batch, learning
rate, seed, data). Prints the table in the paper's layout, segmentation mIoU and pixel accuracy, depth
Abs Err and Rel Err (of the inverse depth, 1/m, the paper's Cityscapes target) and Delta_m (eq. 17, in
percent) of each model over the Base ST-Net (the segmentation ST-Net's mIoU and pixel accuracy with the
depth ST-Net's errors), next to the paper's Cityscapes numbers, and writes everything to
``<workdir>/xtasc_table.json`` (atomically), whose path is printed last.

The Base ST-Net of Delta_m comes from the ST rows of this call or, when they are not selected, from
their ``<workdir>/st_*/metrics.json`` of an earlier call (so ``rows="xtasc"`` alone can reuse them).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping, Sequence

TASK = "xtasc"  # the task name of the experiment files (their metrics.json key)

ROW_ORDER = ("st_segmentation", "st_depth", "mt", "align", "xtasc")
ST_ROWS = ("st_segmentation", "st_depth")
JOINT_ROWS = ("mt", "align", "xtasc")
ALIASES = {"st": ST_ROWS, "all": ROW_ORDER}

# row -> (model name as in the paper, experiment file)
ROWS = {
    "st_segmentation": ("Base ST-Net (segmentation)", "xtasc_st_segmentation"),
    "st_depth": ("Base ST-Net (depth)", "xtasc_st_depth"),
    "mt": ("Base MT-Net", "xtasc_mt"),
    "align": ("Align-Net", "xtasc_align"),
    "xtasc": ("XTasC-Net", "xtasc_xtasc"),
}

# The metrics of Table I (and of Delta_m), as named in the task's metrics.
SEGMENTATION_METRICS = ("miou", "pixel_accuracy")
DEPTH_METRICS = ("abs_err", "rel_err")
METRICS = SEGMENTATION_METRICS + DEPTH_METRICS
TRANSFER_METRICS = ("transfer_miou", "transfer_pixel_accuracy", "transfer_abs_err", "transfer_rel_err")

# The paper's Table I (Cityscapes validation, 7 classes, ResNet-34, uncertainty weights): mIoU, pixel
# accuracy and Rel Err in percent, Abs Err of the inverse disparity, Delta_m in percent.
PAPER = {
    "Base ST-Net": {"miou": 66.40, "pixel_accuracy": 93.48, "abs_err": 0.0124, "rel_err": 19.78, "delta_m": 0.00},
    "Base MT-Net": {"miou": 66.84, "pixel_accuracy": 93.57, "abs_err": 0.0122, "rel_err": 19.61, "delta_m": 1.44},
    "Align-Net": {"miou": 66.61, "pixel_accuracy": 93.53, "abs_err": 0.0124, "rel_err": 19.83, "delta_m": 0.67},
    "XTasC-Net": {"miou": 66.51, "pixel_accuracy": 93.56, "abs_err": 0.0122, "rel_err": 19.40, "delta_m": 1.58},
}


def parse_rows(rows: str | Sequence[str]) -> list[str]:
    """Row names in the table's order, e.g. 'xtasc,st' -> ['st_segmentation', 'st_depth', 'xtasc'].

    Names: those of ``ROW_ORDER``, or ``st`` (both ST rows) and ``all``; comma- or space-separated in a string.
    ValueError for an unknown or empty selection.
    """
    items = rows.replace(",", " ").split() if isinstance(rows, str) else [str(r).strip() for r in rows]
    items = [r.lower() for r in items if r]
    known = list(ROW_ORDER) + list(ALIASES)
    unknown = [r for r in items if r not in known]
    if not items or unknown:
        raise ValueError(f"rows {rows!r}: expected names among {known} (e.g. 'all' or 'st,mt,xtasc'), "
                         f"got {unknown or 'none'}.")
    selected = set()
    for r in items:
        selected.update(ALIASES.get(r, (r,)))
    return [r for r in ROW_ORDER if r in selected]


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_metrics(metrics: Mapping) -> dict:
    """The Table I metrics and the transferred predictions' metrics of one run's ``metrics`` (None where absent)."""
    values = metrics.get(TASK, {})
    return {k: _finite(values.get(k)) for k in METRICS + TRANSFER_METRICS}


def base_st_net(st_segmentation: Mapping | None, st_depth: Mapping | None) -> dict:
    """The Base ST-Net's metrics: segmentation from the segmentation ST-Net, depth from the depth ST-Net."""
    seg, depth = st_segmentation or {}, st_depth or {}
    out = {k: _finite(seg.get(k)) for k in SEGMENTATION_METRICS}
    out.update({k: _finite(depth.get(k)) for k in DEPTH_METRICS})
    return out


def delta_m_over(model: Mapping, baseline: Mapping) -> tuple[float | None, dict]:
    """(Delta_m in percent, per-metric terms) of ``model`` over ``baseline`` on ``METRICS``; (None, {}) if any
    of the metrics is missing, not finite or 0 in the baseline."""
    from taskology_tf.metrics.delta_m import delta_m_terms

    if any(_finite(model.get(k)) is None or not _finite(baseline.get(k)) for k in METRICS):
        return None, {}
    terms = delta_m_terms({k: model[k] for k in METRICS}, {k: baseline[k] for k in METRICS}, list(METRICS))
    return sum(terms.values()) / len(terms), terms


def table_row(row: str, result: Mapping, params: int | None = None) -> dict:
    """One JSON row: the run's Table I metrics (Delta_m filled in by ``build_table``) and all its metrics."""
    name, gin_name = ROWS[row]
    return {
        "row": row,
        "model": name,
        "experiment": gin_name,
        "steps": int(result["step"]),
        "params": params,
        **row_metrics(result["metrics"]),
        "metrics": {task: {k: _finite(v) for k, v in values.items()} for task, values in result["metrics"].items()},
    }


def build_table(rows: Sequence[Mapping], baseline_rows: Mapping[str, Mapping] | None = None) -> dict:
    """The json document: ``rows`` (with ``delta_m`` and ``delta_m_terms``), ``base_st_net``, ``metrics``, ``paper``.

    ``baseline_rows``: ST rows {row: row dict} to use when they are not among ``rows`` (earlier runs).
    """
    by_row = {**dict(baseline_rows or {}), **{r["row"]: r for r in rows}}
    base = base_st_net(by_row.get("st_segmentation"), by_row.get("st_depth"))
    out_rows = []
    for r in rows:
        r = dict(r)
        if r["row"] in JOINT_ROWS:
            r["delta_m"], r["delta_m_terms"] = delta_m_over(r, base)
        else:
            r["delta_m"], r["delta_m_terms"] = None, {}
        out_rows.append(r)
    base_delta = 0.0 if all(base[k] for k in METRICS) else None
    baseline_from = {row: ("this run" if any(r["row"] == row for r in rows) else "earlier run")
                     for row in ST_ROWS if row in by_row}
    return {
        "rows": out_rows,
        "base_st_net": {**base, "delta_m": base_delta, "from": baseline_from},
        "metrics": list(METRICS),
        "units": {"miou": "fraction", "pixel_accuracy": "fraction", "abs_err": "1/m (inverse depth)",
                  "rel_err": "fraction", "delta_m": "percent"},
        "paper": PAPER,
    }


def _cell(value, kind: str, width: int) -> str:
    if value is None:
        text = "-"
    elif kind == "percent":  # a fraction printed in percent, as the paper does
        text = f"{100.0 * value:.2f}"
    elif kind == "abs":
        text = f"{value:.4f}"
    else:  # already in percent
        text = f"{value:+.2f}" if value else "0.00"
    return f"{text:>{width}}"


def format_table(table: Mapping) -> str:
    """Table I's layout (mIoU, Pix Acc, Abs Err, Rel Err, Delta_m) measured, then the paper's Cityscapes numbers."""
    header = f"{'Model':<14}{'mIoU':>8}{'Pix Acc':>9}{'Abs Err':>9}{'Rel Err':>9}{'Delta_m':>9}"
    kinds = (("miou", "percent", 8), ("pixel_accuracy", "percent", 9), ("abs_err", "abs", 9),
             ("rel_err", "percent", 9), ("delta_m", "delta", 9))
    rows = {r["row"]: r for r in table["rows"]}
    lines = [f"{'':<14}{'Segmentation':>17}{'Depth':>18}{'Perf.':>9}",
             f"{'':<14}{'(higher better)':>17}{'(lower better)':>18}{'(higher)':>9}", header]
    base = table["base_st_net"]
    if any(base.get(k) is not None for k in METRICS):
        lines.append(f"{'Base ST-Net':<14}" + "".join(_cell(base.get(k), kind, w) for k, kind, w in kinds))
    for row in JOINT_ROWS:
        if row in rows:
            r = rows[row]
            lines.append(f"{r['model']:<14}" + "".join(_cell(r.get(k), kind, w) for k, kind, w in kinds))
    lines += ["", "Paper (Table I, Cityscapes, ResNet-34, 93k steps):", header]
    for name, values in PAPER.items():
        lines.append(f"{name:<14}{values['miou']:>8.2f}{values['pixel_accuracy']:>9.2f}{values['abs_err']:>9.4f}"
                     f"{values['rel_err']:>9.2f}{values['delta_m']:>9.2f}")
    transfer = [rows[r] for r in ("align", "xtasc") if r in rows]
    if transfer:
        lines += ["", "Transferred predictions (TTNets: depth->segmentation, segmentation->depth):",
                  f"{'Model':<14}{'mIoU':>8}{'Pix Acc':>9}{'Abs Err':>9}{'Rel Err':>9}"]
        for r in transfer:
            lines.append(f"{r['model']:<14}" + "".join(
                _cell(r.get(k), kind, w) for k, kind, w in zip(TRANSFER_METRICS, ("percent", "percent", "abs", "percent"),
                                                             (8, 9, 9, 9))))
    return "\n".join(lines)


def _earlier_st_rows(workdir: str, selected: Sequence[str]) -> dict:
    """ST rows not selected now but run before in ``workdir`` (their metrics.json), as table rows."""
    out = {}
    for row in ST_ROWS:
        path = os.path.join(workdir, row, "metrics.json")
        if row not in selected and os.path.exists(path):
            with open(path) as f:
                out[row] = table_row(row, json.load(f))
    return out


def _trainable_params() -> int:
    """Trainable parameters of the configured task's network (gin still holds the row's configuration)."""
    import gin
    import numpy as np

    from taskology_tf.core.registry import task_factory

    with gin.config_scope(TASK):
        model = task_factory(TASK)(name=TASK).build_model()
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def run_xtasc_table(workdir: str, steps: int | None = None, rows: str | Sequence[str] = ROW_ORDER,
                    gin_params: Sequence[str] = (), progress: bool = True) -> str:
    """Train and evaluate the rows in order, print Table I, write ``<workdir>/xtasc_table.json``; return its path.

    ``steps``: training steps of every row (None: the experiment files' ``Experiment.train_steps``).
    ``rows``: names of ``ROW_ORDER`` (``parse_rows``). ``gin_params``: extra bindings for every row.
    """
    from taskology_tf.experiment import publish_table, run_rows

    selected = parse_rows(rows)
    start = time.monotonic()
    done = run_rows(workdir, [(row, ROWS[row][0], [ROWS[row][1]], []) for row in selected],
                    lambda row, result: table_row(row, result, _trainable_params()), steps, gin_params, progress,
                    desc="XTasC")
    table = build_table(done, _earlier_st_rows(workdir, selected))
    return publish_table(
        workdir, "xtasc_table", table,
        "XTasC Table I (synthetic world): clean labelled 'sim' frames, evaluation on held-out 'sim' frames; "
        "mIoU, Pix Acc, Rel Err in %, Abs Err of the inverse depth [1/m], Delta_m in % over the Base ST-Net",
        format_table(table), time.monotonic() - start)
