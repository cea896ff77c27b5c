"""What the box-flow consistency did to a trained Table 2 row: logit compression and flow drift.

    python benchmarks/box_flow_diagnostics.py ROW_DIR [ROW_DIR ...] [--gin_param BINDING ...]

ROW_DIR is one row of `taskology experiment table2` (e.g. /tmp/taskology_table2/seed_0/5c); its
``operative_config.gin`` rebuilds the detector, whose latest checkpoint is evaluated on the row's held-out
sequences. Prints per row: 3D / BEV AP (LEVEL_1), the flow's end-point error at labelled objects (m), the
99th percentile and maximum of the current frame's class logits over every anchor, the median length of
the flow to the previous frame over every anchor (m), and the fraction of those flows that end outside the
grid. The paper's squared form was measured to flatten the logits and let background flow drift off the
grid (benchmarks/table2_cpu.md); ``box_flow.form = 'confident'`` is meant to do neither.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def diagnose(row_dir: str, gin_params=()) -> dict:
    """Metrics and logit/flow statistics of the detection task trained in ``row_dir``."""
    import gin
    import keras
    import numpy as np

    from taskology_tf.cli import parse_gin
    from taskology_tf.core.trainer import batched
    from taskology_tf.experiment import Experiment

    config = os.path.join(row_dir, "operative_config.gin")
    if not os.path.exists(config):
        raise SystemExit(f"{config} is missing: is {row_dir} a finished table2 row?")
    gin.clear_config()
    keras.backend.clear_session()
    parse_gin([config], list(gin_params))
    trainer = Experiment().build_trainer("detection", row_dir, lock_workdir=False)
    if trainer.step == 0:
        raise SystemExit(f"No checkpoint under {row_dir}/detection/ckpt.")
    metrics = trainer.evaluate(write=False)
    grid = trainer.task.grid
    logits, lengths, outside = [], [], []
    for batch in batched(trainer.eval_data, trainer.batch_size, repeat=False):
        preds = {k: v.numpy() for k, v in trainer.predict(batch).items()}
        logits.append(preds["class_logits"][..., -1].ravel())
        if "box_flow" in preds:
            flow = preds["box_flow"][..., 0, :2]  # [B, H, W, n_a, 2]: to the previous frame, metres
            lengths.append(np.linalg.norm(flow, axis=-1).ravel())
            cols = np.arange(grid.width)[None, None, :, None] + flow[..., 0] / grid.cell_size
            rows = np.arange(grid.height)[None, :, None, None] + flow[..., 1] / grid.cell_size
            off = (np.round(cols) < 0) | (np.round(cols) > grid.width - 1) | (np.round(rows) < 0) | \
                (np.round(rows) > grid.height - 1)
            outside.append(off.ravel())
    logits = np.concatenate(logits)
    out = {"step": trainer.step, "ap_3d": metrics.get("ap_3d_l1"), "ap_bev": metrics.get("ap_bev_l1"),
           "flow_epe": metrics.get("flow_epe"), "logit_p99": float(np.percentile(logits, 99)),
           "logit_max": float(logits.max())}
    if lengths:
        out["flow_median"] = float(np.median(np.concatenate(lengths)))
        out["flow_off_grid"] = float(np.mean(np.concatenate(outside)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row_dirs", nargs="+", help="table2 row folders (with operative_config.gin and detection/)")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding")
    args = p.parse_args(argv)
    from taskology_tf import runtime

    runtime.configure(False)
    runtime.import_tensorflow()
    print(f"{'row':<40}{'step':>6}{'3D AP':>8}{'BEV AP':>8}{'flow EPE':>10}{'logit p99':>11}{'max':>7}"
          f"{'|flow| med':>12}{'off grid':>10}")
    for row_dir in args.row_dirs:
        r = diagnose(row_dir, args.gin_param)
        def fmt(key, scale=1.0, spec=".2f"):
            return "-" if r.get(key) is None else format(r[key] * scale, spec)
        print(f"{row_dir[-40:]:<40}{r['step']:>6}{fmt('ap_3d', 100, '.1f'):>8}{fmt('ap_bev', 100, '.1f'):>8}"
              f"{fmt('flow_epe'):>10}{fmt('logit_p99'):>11}{fmt('logit_max'):>7}{fmt('flow_median'):>12}"
              f"{fmt('flow_off_grid', 100, '.0f') + ' %':>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
