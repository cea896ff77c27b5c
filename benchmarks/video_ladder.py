"""The depth ladder of Table 1 row A: where unsupervised depth stops learning.

    python benchmarks/video_ladder.py --workdir /tmp/taskology_ladder --steps 1500 --seeds 0,1,2 \
        [--steps_list a,b,c] [--gin_param BINDING ...]

Steps (each a gin experiment, trained with the framework's Collective and evaluated on held-out sim frames):
  a  ``ladder_a``: depth through the photometric relation against the TRUE camera motion (GroundTruthPeer);
     target held-out depth Abs Rel <= 0.12 (untrained 0.756).
  b  ``ladder_b``: camera motion against the TRUE depth; target translation error <= 10 % of the true
     per-frame translation (``translation_error_rel``).
  c  ``ladder_c``: both learned (Table 1 row A on the normal traffic); target Abs Rel <= 0.20 (mean of 3 seeds).
All three run on the normal traffic (2 % moving pixels); Table 1 itself uses traffic = 'dense'.
Each (step, seed) lives in ``<workdir>/seed_<s>/<step>/`` and resumes. Prints mean ± std per step and
whether the target is met, and writes ``<workdir>/ladder_seeds.json`` (every seed's metrics).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from taskology_tf import runtime  # noqa: E402

STEPS = {  # step -> (experiment, task, metric, target, description)
    "a": ("ladder_a", "depth", "abs_rel", 0.12, "depth vs true motion"),
    "b": ("ladder_b", "motion", "translation_error_rel", 0.10, "motion vs true depth"),
    "c": ("ladder_c", "depth", "abs_rel", 0.20, "both learned (row A)"),
}


def format_ladder(rows) -> str:
    """One line per step: metric mean (± std when aggregated over seeds), target, met or not."""
    lines = [f"{'step':<6}{'what':<24}{'metric':<24}{'value':>18}{'target':>9}  met"]
    for r in rows:
        value = r["value"]
        text = "-" if value is None else f"{value:.3f}"
        met = "-" if value is None else ("yes" if float(value) <= r["target"] else "no")
        lines.append(f"{r['step']:<6}{r['what']:<24}{r['task'] + ' ' + r['metric']:<24}{text:>18}"
                     f"{r['target']:>9.2f}  {met}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/taskology_ladder", help="folder of every run (resumes)")
    p.add_argument("--steps", type=int, default=1500, help="training steps of every run")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (Experiment.seed)")
    p.add_argument("--steps_list", default="a,b,c", help="ladder steps to run, among a,b,c")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding for every run")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    runtime.configure(False)
    runtime.import_tensorflow()
    from taskology_tf.experiment import publish_table, run_rows
    from taskology_tf.seeds import parse_seeds, run_seeds

    selected = [s.strip() for s in args.steps_list.split(",") if s.strip()]
    unknown = [s for s in selected if s not in STEPS]
    if unknown or not selected:
        p.error(f"--steps_list: expected steps among a,b,c, got {args.steps_list!r}")

    def entry(step, result):
        gin_name, task, metric, target, what = STEPS[step]
        value = result["metrics"].get(task, {}).get(metric)
        return {"step": step, "experiment": gin_name, "what": what, "task": task, "metric": metric,
                "target": target, "steps": result["step"], "value": value, "metrics": result["metrics"]}

    def run_ladder(workdir, params):
        rows = run_rows(workdir, [(s, STEPS[s][4], [STEPS[s][0]], []) for s in selected], entry, args.steps,
                        params, progress=not args.no_progress, desc="ladder")
        return publish_table(workdir, "ladder", rows, "Depth ladder", format_ladder(rows), 0.0)

    run_seeds("ladder", parse_seeds(args.seeds), args.workdir, run_ladder, args.gin_param, format_doc=format_ladder,
              title="Depth ladder (benchmarks/video_ladder.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
