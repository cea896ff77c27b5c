"""Instance-level task parameters against other loss weightings, with and without corrupt labels.

The CPU-scale version of the experiments of Vasu et al. ("Instance-level task parameters", Tables 2-4 and 7,
Fig. 6): XTasC's MT-Net (segmentation + depth, one shared encoder) trained on the synthetic world with a
fixed share of one task's labels corrupted (``gin/experiments/ilt_{clean,seg40,depth40}.gin``), once per loss
weighting (``TaskTrainer.weighting``: equal, uncertainty, dwa, gls, gradnorm, instance). Every run is evaluated
on held-out frames with clean labels. For the instance-level runs with corrupt labels the runner ranks the
training examples by the corrupted task's learnt log sigma^2 (one snapshot per epoch) and reports the share of
corrupt examples in the top fraction equal to the corrupt share (the paper's Table 7 protocol), writing
``detection.json``/``detection.txt`` and a Fig. 6-style ``parameters.png`` into the run's folder.

Each run lives in ``<workdir>/<noise>_<weighting>/`` and resumes from its checkpoints; the table is written
to ``<workdir>/ilt.json``, whose path is printed last.
"""

from __future__ import annotations

import glob
import math
import os
import time
from typing import Sequence

import numpy as np

NOISE = {  # noise setting -> (experiment file, the task whose labels are corrupt, or None)
    "clean": ("ilt_clean", None),
    "seg40": ("ilt_seg40", "segmentation"),
    "depth40": ("ilt_depth40", "depth"),
}
WEIGHTINGS = ("equal", "uncertainty", "dwa", "gls", "gradnorm", "instance")
TASK = "xtasc"  # the experiment's one task (Experiment.tasks in ilt_common.gin)
METRICS = ("miou", "pixel_accuracy", "abs_err", "rel_err")


def parse_list(value: str | Sequence[str], known: Sequence[str], what: str) -> list[str]:
    """Comma-separated names -> list in the order of ``known``; ValueError naming the unknown ones."""
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"{what} {value!r}: expected comma-separated names among {list(known)}, "
                         f"got {unknown or 'none'}.")
    return [k for k in known if k in names]


def parameter_history(snapshot_dir: str, term: str) -> dict[int, dict[int, float]]:
    """{epoch: {example id: log sigma^2 of ``term``}} from the ``epoch-<k>.npz`` snapshots of a run."""
    history = {}
    for path in glob.glob(os.path.join(snapshot_dir, "epoch-*.npz")):
        with np.load(path) as snap:
            terms = [str(t) for t in snap["terms"]]
            if term not in terms:
                raise ValueError(f"{path}: no instance parameters of term {term!r} (terms: {terms}).")
            values = snap["log_variance"][:, terms.index(term)]
            history[int(snap["epoch"])] = {int(i): float(v) for i, v in zip(snap["id"], values)}
    return dict(sorted(history.items()))


def corrupt_ids(ids, fraction: float, seed: int) -> set[int]:
    """The ids ``corrupt_labels(ids='dataset')`` (as in ilt_common.gin) corrupts among all the dataset's ``ids``."""
    from taskology_tf.data.label_noise import corrupt_id_set

    return corrupt_id_set(ids, fraction, seed, exact=True)


def detection_summary(run_dir: str, term: str, fraction: float, seed: int) -> dict | None:
    """Write the corrupt-label detection report and figure of an instance-level run; None without snapshots."""
    from taskology_tf.metrics.noise_detection import detection_report, plot_parameter_distributions, write_report

    history = parameter_history(os.path.join(run_dir, TASK, "instance_parameters"), term)
    if not history:
        return None
    last = history[max(history)]
    bad = corrupt_ids(last, fraction, seed)
    if not bad:
        return None
    report = detection_report(history, bad, top_fraction=fraction, parameter=f"log sigma^2 ({term})")
    write_report(report, os.path.join(run_dir, "detection.json"), os.path.join(run_dir, "detection.txt"))
    plot_parameter_distributions(history, bad, os.path.join(run_dir, "parameters.png"), top_fraction=fraction,
                                 parameter=f"log sigma^2 ({term})",
                                 title=f"Instance-level task parameters, {100 * fraction:.0f}% corrupt {term} labels")
    return report["final"]


def _finite(value):
    return None if value is None or not math.isfinite(float(value)) else float(value)


def format_table(rows: list[dict]) -> str:
    """Clean-label metrics per noise setting and weighting, and the detection accuracy where measured."""
    lines = [f"{'Noise':<9}{'Weighting':<13}{'mIoU':>8}{'Pix acc':>9}{'Abs err':>9}{'Rel err':>9}"
             f"{'Corrupt found in top k%':>25}"]
    for r in rows:
        cells = "".join(f"{'-' if r[m] is None else format(r[m], '.4f'):>{w}}"
                        for m, w in zip(METRICS, (8, 9, 9, 9)))
        det = r.get("detection")
        found = "-" if det is None else f"{100 * det['accuracy']:.1f}% (k={100 * det['top_fraction']:.0f}%)"
        lines.append(f"{r['noise']:<9}{r['weighting']:<13}{cells}{found:>25}")
    return "\n".join(lines)


def run_ilt(workdir: str, noise: str | Sequence[str] = "seg40,depth40", weightings: str | Sequence[str] = "equal,instance",
            steps: int | None = None, gin_params: Sequence[str] = (), progress: bool = True) -> str:
    """Train and evaluate every (noise, weighting) run, print the table, write ilt.json; returns its path."""
    import gin

    from taskology_tf.experiment import publish_table, run_rows

    settings = parse_list(noise, list(NOISE), "noise")
    strategies = parse_list(weightings, WEIGHTINGS, "weightings")
    runs = {f"{s}_{w}": (s, w) for s in settings for w in strategies}

    def row(key, result):
        setting, weighting = runs[key]
        corrupted = NOISE[setting][1]
        metrics = result["metrics"][TASK]
        entry = {"noise": setting, "weighting": weighting, "corrupted": corrupted, "steps": result["step"],
                 **{m: _finite(metrics.get(m)) for m in METRICS},
                 "metrics": {k: _finite(v) for k, v in metrics.items()}, "detection": None}
        fraction = float(gin.query_parameter("noisy_train/corrupt_labels.fraction"))
        if weighting == "instance" and corrupted and fraction > 0:
            seed = int(gin.query_parameter("noisy_train/corrupt_labels.seed"))
            entry["detection"] = detection_summary(os.path.join(workdir, key), corrupted, fraction, seed)
        return entry

    start = time.monotonic()
    rows = run_rows(workdir, [(key, f"{s} / {w}", [NOISE[s][0]], [f"{TASK}/TaskTrainer.weighting = {w!r}"])
                              for key, (s, w) in runs.items()], row, steps, gin_params, progress, desc="ILT")
    return publish_table(
        workdir, "ilt", rows,
        "Loss weightings with corrupt labels (synthetic world, MT-Net: segmentation + depth; metrics on held-out "
        "clean labels; detection: share of the corrupt examples in the top k% by the corrupted task's log sigma^2)",
        format_table(rows), time.monotonic() - start)
