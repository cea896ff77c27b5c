"""Seed statistics for the paper's experiments: run an experiment once per seed, report mean ± std per cell.

``taskology experiment NAME --seeds 0,1,2`` runs NAME's usual command once per seed in
``<workdir>/seed_<s>/`` (each resumable, ``Experiment.seed = s`` bound for every row), then aggregates the
per-seed result documents cell by cell (``aggregate``) and writes ``<workdir>/<name>_seeds.json``: the seeds,
every seed's document, the means and the sample standard deviations. The experiment's own table is printed
with every measured cell as ``mean±std``.

Only initialisation and shuffling change with the seed; data and evaluation frames stay the same, so the
spread is the training noise a reader would see rerunning the command.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from typing import Callable, Sequence

_SPEC = re.compile(r"^(?P<align>.?[<>=^])?(?P<sign>[+\- ])?(?P<alt>#)?(?P<zero>0)?(?P<width>\d+)?"
                   r"(?P<grouping>[,_])?(?P<precision>\.\d+)?(?P<type>[a-zA-Z%])?$")


class Spread(float):
    """A mean over seeds (the float value) with its sample standard deviation ``std`` and seed count ``n``.

    Formats as ``mean±std`` (``f"{x:.3f}"`` -> ``'0.123±0.004'``, width applied to the whole), so a table
    formatter written for single runs prints seed statistics unchanged. Scaling by a constant scales both;
    JSON writes the mean.
    """

    def __new__(cls, mean: float, std: float, n: int):
        self = super().__new__(cls, mean)
        self.std = float(std)
        self.n = int(n)
        return self

    def __format__(self, spec: str) -> str:
        m = _SPEC.match(spec)
        if not m:
            return format(float(self), spec)
        g = {k: v or "" for k, v in m.groupdict().items()}
        number = g["precision"] + g["type"]
        text = f"{format(float(self), g['sign'] + g['alt'] + g['grouping'] + number)}±{format(self.std, number)}"
        if g["width"]:
            text = format(text, (g["align"] or ">") + g["width"])
        return text

    def __mul__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, Spread):
            return Spread(float(self) * other, self.std * abs(other), self.n)
        return float(self) * other

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, Spread) and other:
            return Spread(float(self) / other, self.std / abs(other), self.n)
        return float(self) / other

    def __neg__(self):
        return Spread(-float(self), self.std, self.n)

    def __repr__(self) -> str:
        return f"Spread({float(self)!r}, std={self.std!r}, n={self.n})"


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; ValueError for non-integers, duplicates or an empty list."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2.") from None
    if not seeds:
        raise ValueError(f"--seeds {text!r}: give at least one seed, e.g. 0,1,2.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed.")
    return seeds


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of finite ``values``."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(docs: Sequence):
    """Cell-by-cell statistics of same-shaped result documents (one per seed).

    Dicts and lists are walked in parallel; a numeric leaf that differs between seeds becomes a ``Spread``
    over its finite values (None and NaN are left out; all missing -> None); leaves equal in every
    document (step counts, names, the paper's numbers) are kept as they are.
    """
    if not docs:
        raise ValueError("aggregate needs at least one document.")
    first = docs[0]
    if isinstance(first, dict):
        return {k: aggregate([d.get(k) if isinstance(d, dict) else None for d in docs]) for k in first}
    if isinstance(first, list) and all(isinstance(d, list) and len(d) == len(first) for d in docs):
        return [aggregate([d[i] for d in docs]) for i in range(len(first))]
    if all(d == first for d in docs[1:]) and not (isinstance(first, float) and math.isnan(first)):
        return first
    if any(_is_number(d) for d in docs) and all(d is None or _is_number(d) for d in docs):
        finite = [float(d) for d in docs if d is not None and math.isfinite(float(d))]
        if not finite:
            return None
        return Spread(*mean_std(finite), len(finite))
    return first


def stds(doc):
    """``doc`` with every ``Spread`` replaced by its std and every other leaf by None (same shape)."""
    if isinstance(doc, dict):
        return {k: stds(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [stds(v) for v in doc]
    return doc.std if isinstance(doc, Spread) else None


def run_seeds(name: str, seeds: Sequence[int], workdir: str, run: Callable[[str, list], str],
              gin_params: Sequence[str] = (), format_doc: Callable | None = None, title: str = "") -> str:
    """Run experiment ``name`` once per seed and write ``<workdir>/<name>_seeds.json``; returns its path.

    ``run(seed_workdir, gin_params) -> path of the run's result JSON`` is the experiment's usual runner.
    ``format_doc(doc) -> str`` prints the aggregated document as the experiment's table.
    """
    from taskology_tf.core.trainer import write_json_atomic

    per_seed, seconds = {}, {}
    for seed in seeds:
        print(f"=== {name}: seed {seed} ({list(seeds).index(seed) + 1} of {len(seeds)}) ===", flush=True)
        start = time.monotonic()
        path = run(os.path.join(workdir, f"seed_{seed}"), [*gin_params, f"Experiment.seed = {int(seed)}"])
        seconds[str(seed)] = round(time.monotonic() - start, 1)
        with open(path) as f:
            per_seed[str(seed)] = json.load(f)
    mean = aggregate(list(per_seed.values()))
    out = os.path.join(workdir, f"{name}_seeds.json")
    write_json_atomic(out, {
        "experiment": name,
        "seeds": [int(s) for s in seeds],
        "command": "taskology " + " ".join(sys.argv[1:]) if sys.argv[1:] else None,
        "gin_params": list(gin_params),
        "seconds": seconds,
        "mean": mean,
        "std": stds(mean),
        "per_seed": per_seed,
    })
    if format_doc is not None:
        print()
        print(f"{title} — mean±std over seeds {', '.join(map(str, seeds))}" if title else
              f"mean±std over seeds {', '.join(map(str, seeds))}")
        print(format_doc(mean))
    from taskology_tf.reproduction import NAMES

    record = (f"; record it with: cp {out} benchmarks/results/{name}.json && taskology experiment report"
              if name in NAMES else "")  # the results page's experiments (not, e.g., the depth ladder)
    print(f"\n({sum(seconds.values()):.0f} s{record})")
    print(out)
    return out
