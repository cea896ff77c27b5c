"""Detecting corrupt labels from learned instance-level task parameters (instance-level task parameters, Sec. 5).

The paper's definition (Table 7, Fig. 6 right): sort the training examples by their learned
parameter for the task whose labels were corrupted, in *decreasing* order, and report the
percentage of the corrupt examples found in the top k% of the data, with k the corruption level
(top 20% for 20% corruption, top 40% for 40%)::

    accuracy = |corrupt ∩ top_k| / |corrupt|,   top_k = the round(k * N) examples with the largest values

With k equal to the corrupt share, |top_k| = |corrupt|, so this is also the precision of top_k;
perfect separation gives 1.0 and a random ranking gives k in expectation. Any parameter that
grows with an example's noise works (sigma, sigma^2, log sigma^2: the ranking is the same).
Ties are broken by example id (ascending), so the ranking is deterministic.

Inputs are per-example values ``{id: value}``, or a history over epochs ``{epoch: {id: value}}``
(also accepted: ``{id: [value per epoch]}``; see ``as_history``). ``detection_report`` summarises
each epoch (accuracy and the clean / corrupt value distributions); ``plot_parameter_distributions``
draws the paper's Fig. 6 (box plots of clean vs corrupt per epoch, and accuracy per epoch).
NumPy and matplotlib only (the Agg backend); files are written atomically.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping

import numpy as np


# ------------------------------------------------------------------------------------------------------- inputs

def _values(values: Mapping, what: str = "values") -> dict[int, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{what} must be a non-empty mapping of example id -> parameter value.")
    out = {}
    for key, value in values.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: value of example {key!r} is not a number: {value!r}.") from None
        if not math.isfinite(v):
            raise ValueError(f"{what}: value of example {key!r} is not finite ({v}).")
        out[int(key)] = v
    return out


def as_history(values: Mapping) -> dict[int, dict[int, float]]:
    """{epoch: {id: value}} from {epoch: {id: value}}, {id: [value per epoch]} or {id: value} (one epoch, 0).

    Keys may be strings (as read from JSON).
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError("expected a non-empty mapping: {epoch: {id: value}}, {id: [values per epoch]} or {id: value}.")
    first = next(iter(values.values()))
    if isinstance(first, Mapping):
        return {int(epoch): _values(v, f"epoch {epoch}") for epoch, v in sorted(values.items(), key=lambda kv: int(kv[0]))}
    if isinstance(first, (list, tuple, np.ndarray)):
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1:
            raise ValueError(f"{{id: [values per epoch]}} needs the same number of epochs for every id, got {lengths}.")
        n = lengths.pop()
        return {e: _values({i: v[e] for i, v in values.items()}, f"epoch {e}") for e in range(n)}
    return {0: _values(values)}


def load_parameter_history(path: str) -> dict[int, dict[int, float]]:
    """``as_history`` of a JSON file."""
    with open(path) as f:
        try:
            payload = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}).") from None
    return as_history(payload)


def _corrupt(corrupt_ids: Iterable[int], ids: Iterable[int]) -> set[int]:
    corrupt = {int(i) for i in corrupt_ids}
    unknown = corrupt - set(ids)
    if unknown:
        raise ValueError(f"{len(unknown)} corrupt ids have no parameter value (e.g. {sorted(unknown)[:3]}); give "
                         "values for every training example, or only the corrupt ids among them.")
    if not corrupt:
        raise ValueError("corrupt_ids is empty: there is nothing to detect.")
    return corrupt


# -------------------------------------------------------------------------------------------------------- scores

def rank_by_value(values: Mapping[int, float]) -> list[int]:
    """Example ids by decreasing value (ties: increasing id)."""
    values = _values(values)
    return sorted(values, key=lambda i: (-values[i], i))


def top_count(n: int, top_fraction: float) -> int:
    """round(top_fraction * n), the size of the top set."""
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}.")
    return int(round(top_fraction * n))


def detection_accuracy(values: Mapping[int, float], corrupt_ids: Iterable[int],
                       top_fraction: float | None = None) -> float:
    """Share (0-1) of the corrupt examples among the ``top_fraction`` of examples with the largest values.

    ``top_fraction`` default: the corrupt share ``|corrupt| / N`` (the paper's protocol).
    """
    values = _values(values)
    corrupt = _corrupt(corrupt_ids, values)
    frac = len(corrupt) / len(values) if top_fraction is None else float(top_fraction)
    top = rank_by_value(values)[: top_count(len(values), frac)]
    return len(corrupt.intersection(top)) / len(corrupt)


def detection_curve(history: Mapping, corrupt_ids: Iterable[int], top_fraction: float | None = None) -> dict[int, float]:
    """{epoch: ``detection_accuracy``} over a history (``as_history``)."""
    corrupt = {int(i) for i in corrupt_ids}
    return {epoch: detection_accuracy(v, corrupt, top_fraction) for epoch, v in as_history(history).items()}


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"count": 0}
    q = np.percentile(x, [0, 25, 50, 75, 100])
    return {"count": int(x.size), "mean": float(x.mean()), "min": float(q[0]), "q25": float(q[1]),
            "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}


def detection_report(history: Mapping, corrupt_ids: Iterable[int], top_fraction: float | None = None,
                     parameter: str = "task parameter") -> dict:
    """Per epoch: accuracy (0-1), top-k sizes, random-ranking expectation, clean/corrupt value statistics.

    Returns {"parameter", "top_fraction", "epochs": [{...}], "final": the last epoch's entry}.
    """
    corrupt_all = {int(i) for i in corrupt_ids}
    epochs = []
    for epoch, values in as_history(history).items():
        corrupt = _corrupt(corrupt_all, values)
        frac = len(corrupt) / len(values) if top_fraction is None else float(top_fraction)
        n_top = top_count(len(values), frac)
        top = set(rank_by_value(values)[:n_top])
        is_bad = np.array([i in corrupt for i in values])
        v = np.array(list(values.values()))
        epochs.append({
            "epoch": epoch,
            "num_examples": len(values),
            "num_corrupt": len(corrupt),
            "top_fraction": frac,
            "num_top": n_top,
            "corrupt_in_top": len(corrupt & top),
            "accuracy": len(corrupt & top) / len(corrupt),
            "random_expectation": n_top / len(values),
            "clean": _stats(v[~is_bad]),
            "corrupt": _stats(v[is_bad]),
        })
    return {"parameter": parameter, "top_fraction": top_fraction, "epochs": epochs, "final": epochs[-1]}


def format_report(report: Mapping) -> str:
    """A text table of ``detection_report``: accuracy and clean / corrupt medians per epoch."""
    final = report["final"]
    lines = [
        f"Corrupt-label detection from {report['parameter']} (instance-level task parameters, Table 7 protocol):",
        f"share of the {final['num_corrupt']} corrupt examples found in the top {100 * final['top_fraction']:.1f}% "
        f"({final['num_top']} of {final['num_examples']}) by decreasing value; random ranking: "
        f"{100 * final['random_expectation']:.1f}%.",
        f"{'epoch':>6}{'accuracy %':>12}{'clean median':>15}{'corrupt median':>16}",
    ]
    for e in report["epochs"]:
        lines.append(f"{e['epoch']:>6}{100 * e['accuracy']:>12.2f}{e['clean'].get('median', float('nan')):>15.4g}"
                     f"{e['corrupt'].get('median', float('nan')):>16.4g}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- output

def _atomic_path(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    return os.path.join(folder, f".{base}.tmp-{os.getpid()}{ext}")


def write_report(report: Mapping, json_path: str, text_path: str | None = None) -> str:
    """Write ``report`` as JSON (and ``format_report`` as text when ``text_path`` is given), atomically."""
    tmp = _atomic_path(json_path)
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, json_path)
    if text_path is not None:
        tmp = _atomic_path(text_path)
        with open(tmp, "w") as f:
            f.write(format_report(report) + "\n")
        os.replace(tmp, text_path)
    return json_path


def plot_parameter_distributions(history: Mapping, corrupt_ids: Iterable[int], path: str,
                                 top_fraction: float | None = None, parameter: str = "task parameter",
                                 title: str | None = None, max_epochs: int = 25, log_scale: bool = False) -> str:
    """Fig. 6 of the paper as a PNG at ``path`` (written atomically): left, box plots of the values of clean
    and corrupt examples per epoch (at most ``max_epochs`` evenly spaced epochs); right, detection accuracy
    (%) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = as_history(history)
    corrupt = {int(i) for i in corrupt_ids}
    curve = detection_curve(history, corrupt, top_fraction)
    epochs = sorted(history)
    if len(epochs) > max_epochs:
        epochs = [epochs[int(round(j))] for j in np.linspace(0, len(epochs) - 1, max_epochs)]
    clean = [[v for i, v in history[e].items() if i not in corrupt] for e in epochs]
    noisy = [[v for i, v in history[e].items() if i in corrupt] for e in epochs]

    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110, gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(epochs), dtype=float)
    styles = (("clean", clean, -0.2, "tab:blue"), ("corrupt", noisy, 0.2, "tab:red"))
    for name, data, offset, color in styles:
        keep = [k for k, d in enumerate(data) if d]
        if not keep:
            continue
        box = ax.boxplot([data[k] for k in keep], positions=x[keep] + offset, widths=0.35, patch_artist=True,
                         showfliers=False, manage_ticks=False)
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.plot([], [], color=color, linewidth=8, alpha=0.5, label=f"{name} labels")
    ax.set_xticks(x)
    ax.set_xticklabels([str(e) for e in epochs], rotation=90 if len(epochs) > 12 else 0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(parameter)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(f"{parameter}: clean vs corrupt examples")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    all_epochs = sorted(curve)
    ax_acc.plot(all_epochs, [100 * curve[e] for e in all_epochs], marker="o", markersize=3)
    frac = top_fraction if top_fraction is not None else len(corrupt) / len(history[all_epochs[-1]])
    ax_acc.set_ylim(0, 101)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(f"% of corrupt examples in top {100 * frac:.0f}%")
    ax_acc.set_title("detection accuracy")
    ax_acc.grid(True, alpha=0.3)
    fig.suptitle(title or "Instance-level task parameters of clean and corrupt examples (cf. Fig. 6)")
    fig.tight_layout()
    tmp = _atomic_path(path)
    try:
        fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path
