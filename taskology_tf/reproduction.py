"""The results page: every paper claim we run, the paper's numbers, ours with seeds, and a verdict.

``taskology experiment report`` reads the recorded results in ``benchmarks/results/`` (``<name>.json``: the
``<name>_seeds.json`` written by ``taskology experiment NAME --seeds ...``, or a single run's table JSON)
and writes ``REPRODUCTION.md``. A claim *holds* only when our difference has the paper's sign and exceeds
twice the larger of the two standard deviations over at least three seeds (``compare``); otherwise it is
*not shown*, with the measured reason. ``benchmarks/results/<name>.md``, when present, is appended to the
experiment's section (what was tried, why a claim is not shown).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from taskology_tf.seeds import mean_std

MIN_SEEDS = 3
NAMES = ("table1", "table2", "table3", "staleness", "xtasc", "ilt")
COMMANDS = {
    "table1": "taskology experiment table1 --seeds 0,1,2",
    "table2": "taskology experiment table2 --seeds 0,1,2",
    "table3": "taskology experiment table3 --seeds 0,1,2",
    "staleness": "taskology experiment staleness --seeds 0,1,2",
    "xtasc": "taskology experiment xtasc --seeds 0,1,2",
    "ilt": "taskology experiment ilt --seeds 0,1,2",
}
TITLES = {
    "table1": "Taskology Table 1: depth, motion and segmentation (Sec. 4.1)",
    "table2": "Taskology Table 2: 3D detection with box flow (Sec. 4.2)",
    "table3": "Taskology Table 3: depth and surface normals, sim to real (Sec. 4.3)",
    "staleness": "Taskology Fig. 5: training with stale peers (Sec. 4.4)",
    "xtasc": "XTasC Table I: cross-task consistency (Nakano et al.)",
    "ilt": "Instance-level task parameters, Table 7: finding corrupt labels (Vasu et al.)",
}


@dataclass
class Verdict:
    holds: bool
    reason: str

    @property
    def word(self) -> str:
        return "holds" if self.holds else "not shown"


def compare(ours: Sequence[float], reference: Sequence[float], sign: int, min_seeds: int = MIN_SEEDS,
            exact_reference: bool = False) -> Verdict:
    """Does mean(ours) - mean(reference) have ``sign`` (+1: ours larger) by more than twice the larger std?

    ``ours``, ``reference``: per-seed values (None/NaN dropped). ``exact_reference``: the reference is a
    constant (e.g. chance level), not a measurement, so it needs no seeds.
    """
    a = [float(v) for v in ours if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in reference if v is not None and math.isfinite(float(v))]
    if not a or not b:
        return Verdict(False, "no measured values")
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    diff, margin = ma - mb, 2.0 * max(sa, sb)
    seeds = len(a) if exact_reference else min(len(a), len(b))
    if seeds < min_seeds:
        return Verdict(False, f"only {seeds} seed(s), {min_seeds} needed (difference {diff:+.4g})")
    if diff * sign <= 0:
        return Verdict(False, f"wrong sign: difference {diff:+.4g} (paper: {'+' if sign > 0 else '-'})")
    if abs(diff) <= margin:
        return Verdict(False, f"difference {diff:+.4g} within twice the larger std ({margin:.4g})")
    return Verdict(True, f"difference {diff:+.4g} > 2 x std ({margin:.4g})")


def within(ours: Sequence[float], reference: Sequence[float], min_seeds: int = MIN_SEEDS) -> Verdict:
    """A claim of no effect: is mean(ours) within twice the std of ``reference`` of mean(reference)?"""
    a = [float(v) for v in ours if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in reference if v is not None and math.isfinite(float(v))]
    if not a or not b:
        return Verdict(False, "no measured values")
    if len(a) < min_seeds or len(b) < min_seeds:
        return Verdict(False, f"only {min(len(a), len(b))} seed(s); {min_seeds} needed")
    (ma, _), (mb, sb) = mean_std(a), mean_std(b)
    if abs(ma - mb) <= 2.0 * sb:
        return Verdict(True, f"|{ma - mb:+.4g}| <= 2 x std of the reference {sb:.4g}")
    return Verdict(False, f"difference {ma - mb:+.4g} exceeds 2 x std of the reference ({2 * sb:.4g})")


@dataclass
class Claim:
    text: str
    paper: str
    ours: str
    verdict: Verdict


def _fmt(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    finite = [scale * float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return "-"
    mean, std = mean_std(finite)
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(finite)})" if len(finite) > 1 else f"{mean:.{digits}f} (n=1)"


def per_seed(doc: dict) -> list:
    """The per-seed result documents of a recorded result (a seeds file, or one run's table)."""
    if isinstance(doc, dict) and "per_seed" in doc:
        return list(doc["per_seed"].values())
    return [doc]


def _rows(seed_doc, key: str = "row") -> dict:
    rows = seed_doc["rows"] if isinstance(seed_doc, dict) else seed_doc
    return {r[key]: r for r in rows}


def _values(docs, get: Callable) -> list:
    out = []
    for d in docs:
        try:
            out.append(get(d))
        except (KeyError, TypeError, IndexError):
            out.append(None)
    return out


def _difference_claim(docs, text, paper, get_ours, get_ref, sign, scale=1.0, digits=3) -> Claim:
    ours, ref = _values(docs, get_ours), _values(docs, get_ref)
    paired = [None if a is None or b is None else a - b for a, b in zip(ours, ref)]
    return Claim(text, paper, f"{_fmt(ours, scale, digits)} vs {_fmt(ref, scale, digits)} "
                              f"(difference {_fmt(paired, scale, digits)})", compare(ours, ref, sign))


def table1_claims(docs) -> list[Claim]:
    depth = lambda row: (lambda d: _rows(d)[row]["abs_rel"])  # noqa: E731
    miou = lambda row: (lambda d: _rows(d)[row]["miou_movable"])  # noqa: E731
    return [
        _difference_claim(docs, "C < A: frozen segmentation lowers depth Abs Rel", "0.129 vs 0.165",
                          depth("C"), depth("A"), -1),
        _difference_claim(docs, "E < A: joint training lowers depth Abs Rel", "0.125 vs 0.165",
                          depth("E"), depth("A"), -1),
        _difference_claim(docs, "D > B: frozen depth & motion raise movable mIoU", "0.471 vs 0.455",
                          miou("D"), miou("B"), +1),
        _difference_claim(docs, "E > B: joint training raises movable mIoU", "0.478 vs 0.455",
                          miou("E"), miou("B"), +1),
    ]


def table2_claims(docs) -> list[Claim]:
    ap = lambda row: (lambda d: _rows(d)[row]["level_1"]["ap_3d"])  # noqa: E731
    gain = lambda pct: (lambda d: ap(f"{pct}c")(d) - ap(f"{pct}b")(d))  # noqa: E731
    return [
        _difference_claim(docs, "5 % labels: consistency raises 3D mAP (LEVEL_1)", "23.5 vs 17.6",
                          ap("5c"), ap("5b"), +1, scale=100, digits=1),
        _difference_claim(docs, "the gain at 5 % labels exceeds the gain at 100 %", "+5.9 vs +1.2 points",
                          gain(5), gain(100), +1, scale=100, digits=1),
    ]


def table3_claims(docs) -> list[Claim]:
    def cell(method, key):
        return lambda d: next(r[key] for r in d if r["method"] == method and r.get("variant", "paper") == "paper")

    return [
        _difference_claim(docs, "consistency raises normals accuracy < 11.25° on real images", "13.6 vs 9.2 %",
                          cell("consistency", "within_11.25"), cell("baseline", "within_11.25"), +1, digits=1),
        _difference_claim(docs, "consistency raises normals accuracy < 22.5° on real images", "34.9 vs 30.8 %",
                          cell("consistency", "within_22.5"), cell("baseline", "within_22.5"), +1, digits=1),
        _difference_claim(docs, "consistency lowers depth Abs Rel on real images", "24.9 vs 28.2 %",
                          cell("consistency", "abs_rel"), cell("baseline", "abs_rel"), -1, digits=1),
    ]


def staleness_claims(docs) -> list[Claim]:
    values = sorted({int(v) for d in docs for v in d["final"]})
    ref = _values(docs, lambda d: d["final"]["0"])
    claims = []
    for v in values:
        if v == 0:
            continue
        ours = _values(docs, lambda d, v=v: d["final"][str(v)])
        steps = docs[0].get("steps")
        claims.append(Claim(f"final depth Abs Rel at staleness {v} equals synchronous training "
                            f"({steps} steps, staleness = {100 * v / steps:.2g} % of the run)" if steps else
                            f"final depth Abs Rel at staleness {v} equals synchronous training",
                            "same final error up to staleness 2000", f"{_fmt(ours)} vs {_fmt(ref)}", within(ours, ref)))
    return claims


def xtasc_claims(docs) -> list[Claim]:
    delta = lambda row: (lambda d: _rows(d)[row]["delta_m"])  # noqa: E731
    return [
        _difference_claim(docs, "XTasC-Net beats Align-Net on Delta_m", "+1.58 vs +0.67 %",
                          delta("xtasc"), delta("align"), +1, digits=2),
        _difference_claim(docs, "XTasC-Net beats Base MT-Net on Delta_m", "+1.58 vs +1.44 %",
                          delta("xtasc"), delta("mt"), +1, digits=2),
    ]


def ilt_claims(docs) -> list[Claim]:
    claims = []
    paper = {"segmentation": "96.01 % (Cityscapes, 40 % corrupt)", "depth": "100 % (Cityscapes, 40 % corrupt)"}
    for noise, task in (("seg40", "segmentation"), ("depth40", "depth")):
        def acc(d, noise=noise):
            return next(r for r in d if r["noise"] == noise and r["weighting"] == "instance")["detection"]["accuracy"]

        def chance(d, noise=noise):
            return next(r for r in d if r["noise"] == noise and r["weighting"] == "instance")["detection"][
                "top_fraction"]

        ours = _values(docs, acc)
        if all(v is None for v in ours):
            continue
        level = next((c for c in _values(docs, chance) if c is not None), None)
        claims.append(Claim(f"instance parameters find corrupt {task} labels (share of corrupt examples in the top "
                            f"{100 * level:.0f} %, chance {100 * level:.0f} %)", paper[task],
                            _fmt(ours, 100, 1), compare(ours, [level], +1, exact_reference=True)))
    return claims


CLAIMS = {"table1": table1_claims, "table2": table2_claims, "table3": table3_claims,
          "staleness": staleness_claims, "xtasc": xtasc_claims, "ilt": ilt_claims}


def format_results(name: str, doc) -> str:
    """The experiment's own table for a (possibly seed-aggregated) result document."""
    if name == "table1":
        from taskology_tf.table1 import format_table
    elif name == "table2":
        from taskology_tf.table2 import format_table
    elif name == "table3":
        from taskology_tf.demo import format_table
    elif name == "xtasc":
        from taskology_tf.xtasc_table import format_table
    elif name == "ilt":
        from taskology_tf.ilt import format_table
    elif name == "staleness":
        from taskology_tf.staleness import format_table

        return format_table({int(v): c for v, c in doc["curves"].items()})
    else:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}.")
    return format_table(doc)


def load_results(results_dir: str) -> dict:
    """name -> recorded result document, for the names with ``<results_dir>/<name>.json``."""
    out = {}
    for name in NAMES:
        path = os.path.join(results_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                try:
                    out[name] = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} is not valid JSON ({e}); record it again with --seeds.") from None
    return out


def _seed_line(doc) -> str:
    if "per_seed" not in doc:
        return "one run (no --seeds)"
    seconds = doc.get("seconds") or {}
    per = (f"; {sum(seconds.values()) / max(len(seconds), 1) / 60:.0f} min per seed for the recorded command on the "
           "recording machine (rows it found trained were only evaluated)") if seconds else ""
    return f"seeds {', '.join(map(str, doc['seeds']))}{per}"


def _steps(doc) -> str:
    seed_doc = per_seed(doc)[0]
    steps = set()

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("steps"), int):
                steps.add(x["steps"])
            for v in x.values():
                if isinstance(v, (dict, list)):
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(seed_doc)
    return ", ".join(map(str, sorted(steps))) or "?"


def render(results: dict, notes: dict | None = None, today: str | None = None) -> str:
    """REPRODUCTION.md's text for ``results`` (name -> recorded document) and ``notes`` (name -> markdown)."""
    notes = notes or {}
    today = today or datetime.date.today().isoformat()
    lines = [
        "# Reproduction",
        "",
        f"Generated by `taskology experiment report` from `benchmarks/results/` on {today}; do not edit by hand.",
        "Every number is ours at CPU scale on the synthetic world unless stated; the paper's numbers are on its",
        "datasets at full scale, so only the *sign and significance* of each effect is compared. A claim **holds**",
        f"when our difference has the paper's sign and exceeds twice the larger standard deviation over at least "
        f"{MIN_SEEDS}",
        "seeds (same steps for every row); a claim of *no* difference (Fig. 5) holds when our value lies within twice",
        "the reference's std. Otherwise it is **not shown**, with the measured reason.",
        "",
        "| Experiment | Claim | Paper | Ours (mean ± std, seeds) | Verdict |",
        "|---|---|---|---|---|",
    ]
    sections = []
    for name in NAMES:
        title = TITLES[name]
        if name not in results:
            lines.append(f"| {title} | all claims | | not run with --seeds yet | **not shown**: not recorded |")
            sections += [f"## {title}", "", f"Not recorded yet. Run `{COMMANDS[name]}` and copy "
                         f"`<workdir>/{name}_seeds.json` to `benchmarks/results/{name}.json`.", ""]
            if notes.get(name):
                sections += [notes[name].strip(), ""]
            continue
        doc = results[name]
        docs = per_seed(doc)
        try:
            claims = CLAIMS[name](docs)
        except (KeyError, TypeError, StopIteration) as e:
            claims = []
            lines.append(f"| {title} | all claims | | recorded result lacks {e} | **not shown** |")
        for c in claims:
            lines.append(f"| {title} | {c.text} | {c.paper} | {c.ours} | **{c.verdict.word}**: {c.verdict.reason} |")
        sections += [f"## {title}", "",
                     f"- Command: `{doc.get('command') or COMMANDS[name]}`",
                     f"- Seeds: {_seed_line(doc)}; training steps per row: {_steps(doc)}",
                     "", "```", format_results(name, _mean_doc(doc)), "```", ""]
        if notes.get(name):
            sections += [notes[name].strip(), ""]
    return "\n".join(lines + [""] + sections).rstrip() + "\n"


def _mean_doc(doc):
    if "per_seed" not in doc:
        return doc
    from taskology_tf.seeds import aggregate

    return aggregate(per_seed(doc))


def write_report(results_dir: str, out: str) -> str:
    """Render the page from ``results_dir`` (plus ``<name>.md`` notes) and write it to ``out`` atomically."""
    from taskology_tf.core.trainer import write_text_atomic

    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"no results folder {results_dir}; record results with `taskology experiment NAME "
                                f"--seeds 0,1,2` and copy <workdir>/NAME_seeds.json to {results_dir}/NAME.json.")
    notes = {}
    for name in NAMES:
        path = os.path.join(results_dir, f"{name}.md")
        if os.path.exists(path):
            with open(path) as f:
                notes[name] = f.read()
    write_text_atomic(out, render(load_results(results_dir), notes))
    return out
