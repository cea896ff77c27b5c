"""The README demo: Table 3 of the paper (sim -> real depth + normals) at laptop scale.

Runs the same short training twice, without and with the depth <-> normals consistency, evaluates
both tasks on held-out images of the "real" style, prints a table in the layout of the paper's
Table 3, and writes it as JSON (one object per row) next to the logs; its path is printed last.
"""

from __future__ import annotations

import os
import time

DEMO_STEPS = 600

VARIANTS = {
    "paper": ("table3_baseline", "table3_consistency"),
    "partial": ("table3_partial_baseline", "table3_partial_consistency"),
}

COLUMNS = (("within_11.25", "< 11.25°"), ("within_22.5", "< 22.50°"), ("within_30", "< 30.00°"))


def table_rows(results: dict[str, dict], variant: str) -> list[dict]:
    """One row per method: normals accuracy (%), depth Abs Rel (%) and the other metrics."""
    rows = []
    for method, result in results.items():
        normals = result["metrics"]["normals"]
        depth = result["metrics"]["depth"]
        rows.append({
            "method": method,
            "variant": variant,
            "steps": result["step"],
            "within_11.25": normals["within_11.25"],
            "within_22.5": normals["within_22.5"],
            "within_30": normals["within_30"],
            "abs_rel": 100.0 * depth["abs_rel"],
            "normals_mean_deg": normals["mean"],
            "normals_median_deg": normals["median"],
            "depth_rmse_m": depth["rmse"],
            "depth_a1": depth["a1"],
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """The layout of the paper's Table 3 (accuracies and Abs Rel in %)."""
    name = {"baseline": "sim -> real", "consistency": "sim -> real (with consistency)"}
    lines = [
        f"{'Method':<52}{'Normals accuracy (%)':^33}{'Depth error (%)':>16}",
        f"{'':<52}" + "".join(f"{title:>11}" for _, title in COLUMNS) + f"{'Abs Rel':>16}",
    ]
    for row in rows:
        label = name.get(row["method"], row["method"])
        if row.get("variant") == "partial":
            label += " [real depth labels]"
        lines.append(f"{label:<52}" + "".join(f"{row[k]:>11.1f}" for k, _ in COLUMNS) + f"{row['abs_rel']:>16.1f}")
    return "\n".join(lines)


def run_demo(
    workdir: str, steps: int | None = None, variant: str = "paper", progress: bool = True, gin_params=()
) -> str:
    """Train baseline and consistency runs, print and write the table; returns the JSON path."""
    import gin
    import keras

    from taskology_tf.cli import parse_gin
    from taskology_tf.core.trainer import write_json_atomic
    from taskology_tf.experiment import Experiment

    steps = DEMO_STEPS if steps is None else steps
    variants = ["paper", "partial"] if variant == "both" else [variant]
    os.makedirs(workdir, exist_ok=True)
    all_rows = []
    start = time.monotonic()
    for v in variants:
        results = {}
        for method, gin_name in zip(("baseline", "consistency"), VARIANTS[v]):
            gin.clear_config()
            keras.backend.clear_session()
            parse_gin([gin_name], [f"Experiment.train_steps = {steps}", "TaskTrainer.eval_every = 0", *gin_params])
            run_dir = os.path.join(workdir, v, method)
            print(f"[{v}/{method}] training {steps} steps -> {run_dir}", flush=True)
            t0 = time.monotonic()
            results[method] = Experiment().run(run_dir, progress=progress, desc=f"{v}/{method}")
            print(f"[{v}/{method}] done in {time.monotonic() - t0:.0f} s", flush=True)
        all_rows += table_rows(results, v)
    gin.clear_config()
    path = os.path.join(workdir, "table3.json")
    write_json_atomic(path, all_rows)
    print()
    print("Table 3 (synthetic world): trained on 'sim' labels, evaluated on held-out 'real' images")
    print(format_table(all_rows))
    print(f"\n({time.monotonic() - start:.0f} s; TensorBoard: tensorboard --logdir {workdir})")
    print(path)
    return path

