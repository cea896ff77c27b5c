"""The ``taskology`` command: train, eval, export, data synth, demo."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path

from taskology_tf import runtime
from taskology_tf.staleness import DEFAULT_STEPS as STALENESS_STEPS
from taskology_tf.staleness import DEFAULT_VALUES as STALENESS_VALUES

REPO_ROOT = Path(__file__).resolve().parents[1]


class UsageError(Exception):
    """A problem with the command line or configuration; printed without a traceback."""


class _GinIncludeNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Path not found:")


def resolve_gin_file(path: str) -> str:
    """Find a gin file as given, relative to the repository, or by experiment name under gin/experiments."""
    candidates = [Path(path), REPO_ROOT / path, REPO_ROOT / "gin" / "experiments" / path,
                  REPO_ROOT / "gin" / "experiments" / f"{path}.gin"]
    for c in candidates:
        if c.is_file():
            return str(c)
    available = sorted(p.stem for p in (REPO_ROOT / "gin" / "experiments").glob("*.gin"))
    raise UsageError(f"gin file {path!r} not found. Experiments available: {', '.join(available) or '(none)'}.")


def parse_gin(gin_files, gin_params, imports=()) -> None:
    import gin

    from taskology_tf import experiment  # noqa: F401  (registers Experiment with gin)
    from taskology_tf.core import optimizers  # noqa: F401  (registers keras optimizers with gin)
    from taskology_tf.core import trainer  # noqa: F401  (registers TaskTrainer with gin)
    from taskology_tf.core.registry import _import_builtins
    from taskology_tf.data import sources  # noqa: F401
    from taskology_tf.launch import kubernetes  # noqa: F401  (registers kubernetes_resources with gin)
    from taskology_tf.serving import peer  # noqa: F401  (registers ServingPeer with gin)

    _import_builtins()
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"--import {module}: {e}. Is it on PYTHONPATH?") from e
    files = [resolve_gin_file(f) for f in gin_files]
    gin.add_config_file_search_path(str(REPO_ROOT))
    # gin first tries an `include` relative to the working directory and logs an error before it finds the file
    # on the search path; that message is noise when the file is then found.
    logging.getLogger().addFilter(_GinIncludeNoise())
    try:
        gin.parse_config_files_and_bindings(files, gin_params, finalize_config=False)
    except Exception as e:  # gin raises ValueError/KeyError/ImportError/SyntaxError with its own text.
        raise UsageError(
            f"bad gin configuration: {e}\nCheck the spelling of the configurable and parameter names "
            "(see the files under gin/ for the available ones)."
        ) from e


def _add_config_flags(p: argparse.ArgumentParser, workdir_required: bool = True) -> None:
    p.add_argument("--gin_file", action="append", default=[], help="gin experiment file (repeatable)")
    p.add_argument("--gin_param", action="append", default=[], help="gin binding, e.g. Experiment.train_steps=100")
    p.add_argument("--workdir", required=workdir_required, help="folder for checkpoints, logs, exports, metrics")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   help="Python module to import first (registers your own tasks/relations)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskology", description=__doc__,
        epilog="--verbose (anywhere on the line, or TASKOLOGY_VERBOSE=1) also shows TensorFlow's start-up messages "
        "(CUDA, absl), which are hidden by default.")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up messages too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an experiment's tasks collectively in one process, or one task as its "
                       "own job with --task (resumes)")
    _add_config_flags(p)
    p.add_argument("--task", default=None, help="train only this task, reading its peers from model servers")
    p.add_argument("--peer", action="append", default=[], metavar="TASK=HOST:PORT",
                   help="model server of a peer task (with --task; repeatable)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")

    # `serve` and `launch` parse their own flags (dispatched in main() before argparse); listed here for --help.
    sub.add_parser("serve", help="serve exported models over TF Serving's gRPC API (taskology serve --help)",
                   add_help=False)
    sub.add_parser("launch", help="start servers and one trainer per task as separate processes, or write "
                   "them as Kubernetes manifests with --target kubernetes (taskology launch --help)", add_help=False)
    sub.add_parser("experiment", help="run one of the paper's experiments by name, e.g. `taskology experiment "
                   "table1` (taskology experiment --help lists them)", add_help=False)

    p = sub.add_parser("eval", help="evaluate the latest checkpoints of an experiment")
    _add_config_flags(p)

    p = sub.add_parser("export", help="export tasks' networks as versioned SavedModels")
    _add_config_flags(p)
    p.add_argument("--task", action="append", default=[], help="task to export (default: all)")
    p.add_argument("--export_dir", default=None, help="base folder (default: <workdir>/<task>/export)")
    p.add_argument("--allow_untrained", action="store_true",
                   help="export a task that has no checkpoint (its initial, random weights) instead of failing")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write the synthetic world to TFRecords")
    p.add_argument("--out_dir", required=True, help="folder for the shards (created if needed)")
    p.add_argument("--style", default="sim", choices=["sim", "city", "real", "coco"],
                   help="rendering style: sim (clean), city (the driving video of Table 1 and Fig. 5), real (sensor "
                   "noise, other textures), coco (segmentation classes of COCO panoptic). Default sim")
    p.add_argument("--split", default="train",
                   help="split name: in the file names, and it seeds the scenes (train and val differ). Default train")
    p.add_argument("--num_examples", type=int, default=256, help="examples to render (256 per shard). Default 256")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes (with --split). Default 0")
    p.add_argument("--height", type=int, default=64,
                   help="image height in pixels (multiples of 32 suit the networks). Default 64")
    p.add_argument("--width", type=int, default=128,
                   help="image width in pixels (multiples of 32 suit the networks). Default 128")
    p.add_argument("--with_next", action="store_true",
                   help="also render the next frame (image_next, its labels and the object motion) of each example")
    p = data.add_parser("convert-waymo", help="convert Waymo Open Dataset segment files (Frame protos) to the "
                        "project's TFRecords (points from range images, boxes, track ids, poses, calibrations)")
    p.add_argument("--input", action="append", required=True, help="segment file or glob pattern (repeatable)")
    p.add_argument("--output", required=True, help="output folder (one file per input, same name)")
    p.add_argument("--second_return", action="store_true", help="also convert the second LiDAR returns")

    p = sub.add_parser("demo", help="the Table 3 demo: depth + normals, sim -> real, with and without consistency")
    p.add_argument("--workdir", default="/tmp/taskology_demo",
                   help="folder for both runs' checkpoints, logs, metrics and table3.json (resumes). "
                   "Default /tmp/taskology_demo")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the demo's)")
    p.add_argument("--variant", default="paper", choices=["paper", "partial", "both"],
                   help="paper: no real labels at all; partial: the real style has depth labels (not normals)")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding for both runs")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    _add_seeds_flag(p)

    p = sub.add_parser("staleness", help="Sec. 4.4 / Fig. 5: unsupervised depth + ego-motion trained with stale "
                       "peers; plots depth Abs Rel against step per staleness (resumes)")
    p.add_argument("--workdir", default="/tmp/taskology_staleness",
                   help="folder for every run and staleness.png (resumes). Default /tmp/taskology_staleness")
    p.add_argument("--values", default=",".join(map(str, STALENESS_VALUES)),
                   help="comma-separated staleness values in steps (peer refresh period; 0 = synchronous). Default "
                   f"{','.join(map(str, STALENESS_VALUES))}: the paper's 0,10,100 plus 1, the largest 1/30 of the default "
                   "run (the paper's 1000 and 2000 were small fractions of runs lasting hours)")
    p.add_argument("--steps", type=int, default=STALENESS_STEPS,
                   help=f"training steps per run (default {STALENESS_STEPS})")
    p.add_argument("--eval_every", type=int, default=250, help="evaluate depth every this many steps")
    p.add_argument("--gin_file", action="append", default=[],
                   help="experiment file(s) (default: gin/experiments/staleness_common.gin)")
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding for every run")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    _add_seeds_flag(p)

    _table_parser(sub, "table1", "Sec. 4.1 / Table 1: depth, motion and segmentation, rows A-E in order "
                  "(C starts from B's segmentation, D from C's depth and motion)", "ABCDE",
                  "rows to run, e.g. ABCDE or BC (always run in the paper's order)")
    _table_parser(sub, "table2", "Sec. 4.2 / Table 2: 3D vehicle detection with box flow, 5/20/100 %% labels, "
                  "without and with the box-flow consistency", "all",
                  "rows to run, e.g. 5b,5c,20b,20c,100b,100c (label %% then b = no consistency, c = with it), "
                  "5 for both rows of 5 %%, or all; always run in the paper's order")
    _table_parser(sub, "xtasc", "XTasC Table I: Base ST-Net, Base MT-Net, Align-Net, XTasC-Net on segmentation "
                  "+ depth with Delta_m over the ST-Nets", "all",
                  "rows to run, e.g. all, st,xtasc or mt,align (st_segmentation, st_depth, mt, align, xtasc; "
                  "always run in this order)")
    p = _table_parser(sub, "ilt", "instance-level task parameters vs other loss weightings with corrupt labels "
                      "(MT-Net on the synthetic world), with corrupt-label detection", None, None)
    p.add_argument("--noise", default="seg40,depth40", help="noise settings among clean, seg40, depth40")
    p.add_argument("--weightings", default="equal,instance",
                   help="among equal, uncertainty, dwa, gls, gradnorm, instance")
    p = sub.add_parser("report", help="write REPRODUCTION.md: every paper claim we run, the paper's numbers, ours "
                       "(mean ± std over seeds) and a verdict, from the recorded results")
    p.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results"),
                   help="folder of recorded results: <experiment>.json (a <workdir>/<experiment>_seeds.json) and "
                   "optional <experiment>.md notes. Default benchmarks/results")
    p.add_argument("--out", default=str(REPO_ROOT / "REPRODUCTION.md"), help="page to write. Default REPRODUCTION.md")
    return parser


def _table_parser(sub, name: str, doc: str, rows_default: str | None, rows_help: str | None):
    """The subcommand of a paper table: --workdir, --steps, [--rows], --gin_param, --no_progress."""
    p = sub.add_parser(name, help=f"{doc}; prints the table (resumes)")
    p.add_argument("--workdir", default=f"/tmp/taskology_{name}",
                   help=f"folder for every row's run and the table (resumes). Default /tmp/taskology_{name}")
    p.add_argument("--steps", type=int, default=None, help="training steps per row (default: the experiment files')")
    if rows_default is not None:
        p.add_argument("--rows", default=rows_default, help=rows_help)
    p.add_argument("--gin_param", action="append", default=[], help="extra gin binding for every row")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    _add_seeds_flag(p)
    return p


def _add_seeds_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default=None, metavar="S1,S2,...",
                   help="run once per seed (Experiment.seed) in <workdir>/seed_<s>/ (resumable) and print mean±std "
                   "per cell; writes <workdir>/<experiment>_seeds.json with every seed's values")


def _require_experiment(args) -> None:
    """A usage error unless the gin configuration names the experiment's tasks (normally from --gin_file)."""
    import gin

    try:
        gin.query_parameter("Experiment.tasks")
    except ValueError:
        available = sorted(p.stem for p in (REPO_ROOT / "gin" / "experiments").glob("*.gin"))
        raise UsageError(
            f"no experiment given: `taskology {args.command}` needs --gin_file with the experiment (e.g. --gin_file "
            f"table3_consistency), or --gin_param \"Experiment.tasks = [...]\". Experiments: {', '.join(available)}."
        ) from None


def cmd_train(args) -> None:
    from taskology_tf.experiment import Experiment

    parse_gin(args.gin_file, args.gin_param, args.imports)
    _require_experiment(args)
    if args.task:
        return cmd_train_task(args, Experiment())
    if args.peer:
        raise UsageError("--peer only makes sense with --task (one task as its own job).")
    result = Experiment().run(args.workdir, progress=not args.no_progress)
    _print_metrics(result["metrics"])
    print(os.path.join(args.workdir, "metrics.json"))


def _parse_peers(items) -> dict[str, str]:
    peers = {}
    for item in items:
        name, sep, address = item.partition("=")
        if not sep or not name or ":" not in address:
            raise UsageError(f"--peer {item!r}: expected TASK=HOST:PORT, e.g. --peer normals=127.0.0.1:8501.")
        peers[name] = address
    return peers


def cmd_train_task(args, experiment) -> None:
    """One task as its own job: own data and optimizer, peers' stale predictions from their servers."""
    from taskology_tf.core.trainer import write_json_atomic

    if args.task not in experiment.tasks:
        raise UsageError(f"--task {args.task!r} is not in the experiment's tasks {experiment.task_names}.")
    trainer = experiment.build_standalone(args.task, args.workdir, _parse_peers(args.peer))
    if not trainer.export_every:
        trainer.export_every = max(1, trainer.checkpoint_every)
    trainer.export()  # version 0 (or the resumed step): peers can start right away
    try:
        metrics = trainer.train(experiment.train_steps, progress=not args.no_progress)
    finally:
        trainer.close()
    trainer.export()
    path = os.path.join(args.workdir, args.task, "metrics.json")
    traffic = {name: peer.traffic.as_dict() for name, peer in trainer.peers.items()
               if getattr(peer, "traffic", None) is not None}
    write_json_atomic(path, {"step": trainer.step, "metrics": {args.task: metrics},
                             "peer_unavailable_steps": trainer.peer_unavailable_steps,
                             "throughput": trainer.throughput, "peer_traffic": traffic})
    _print_metrics({args.task: metrics})
    print(path)


def cmd_eval(args) -> None:
    from taskology_tf.core.trainer import write_json_atomic
    from taskology_tf.experiment import Experiment

    parse_gin(args.gin_file, args.gin_param, args.imports)
    _require_experiment(args)
    experiment = Experiment()
    metrics, step = {}, {}
    for name in experiment.trained_tasks:
        trainer = experiment.build_trainer(name, args.workdir, lock_workdir=False)  # reads; may run beside training
        if trainer.step == 0:
            raise UsageError(f"No checkpoint of task {name!r} under {args.workdir}/{name}/ckpt; train first.")
        metrics[name] = trainer.evaluate()
        step[name] = trainer.step
    path = os.path.join(args.workdir, "eval_metrics.json")
    write_json_atomic(path, {"step": step, "metrics": metrics})
    _print_metrics(metrics)
    print(path)


def cmd_export(args) -> None:
    from taskology_tf.experiment import Experiment
    from taskology_tf.serving.export import export_model

    parse_gin(args.gin_file, args.gin_param, args.imports)
    _require_experiment(args)
    experiment = Experiment()
    names = args.task or experiment.trained_tasks
    for name in names:
        if name not in experiment.tasks:
            raise UsageError(f"--task {name!r} is not in the experiment's tasks {experiment.task_names}.")
    for name in names:
        print(f"taskology export: {name}: building the network and restoring its checkpoint ...", file=sys.stderr,
              flush=True)
        trainer = experiment.build_trainer(name, args.workdir, lock_workdir=False)  # reads; may run beside training
        if trainer.restored_from is None and not args.allow_untrained:
            raise UsageError(
                f"task {name!r} has no checkpoint under {os.path.join(args.workdir, name, 'ckpt')}: exporting it "
                "would publish its initial, random weights. Train first (taskology train with the same --workdir), "
                "or pass --allow_untrained to export them anyway."
            )
        base = args.export_dir and os.path.join(args.export_dir, name) or os.path.join(args.workdir, name, "export")
        print(f"taskology export: {name}: writing step {trainer.step} to {base} (tracing the serving signatures "
              "takes a while) ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        path = export_model(trainer.model, base, trainer.step, image_size_multiple=trainer.task.image_size_multiple)
        print(f"taskology export: {name}: done in {time.monotonic() - start:.0f} s.", file=sys.stderr, flush=True)
        print(path, flush=True)


def cmd_data(args) -> None:
    if args.data_command == "convert-waymo":
        from taskology_tf.data.waymo import convert_files

        for path in convert_files(args.input, args.output, returns=(1, 2) if args.second_return else (1,)):
            print(path)
        return
    from taskology_tf.data.tfrecord import write_synthetic

    paths = write_synthetic(args.out_dir, style=args.style, split=args.split, num_examples=args.num_examples,
                            seed=args.seed, height=args.height, width=args.width, with_next=args.with_next)
    for p in paths:
        print(p)


def _staleness_values(args) -> list[int]:
    try:
        values = [int(v) for v in args.values.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--values {args.values!r}: expected comma-separated integers, e.g. 0,10,100.") from None
    if not values or min(values) < 0:
        raise UsageError(f"--values {args.values!r}: give one or more staleness values >= 0.")
    if args.steps <= 0 or args.eval_every <= 0:
        raise UsageError("--steps and --eval_every must be positive.")
    return values


def _experiment_runner(args):
    """``run(workdir, gin_params) -> result JSON path`` of the experiment command ``args.command``."""
    progress = not args.no_progress
    if args.command == "demo":
        from taskology_tf.demo import run_demo

        return lambda workdir, params: run_demo(workdir, steps=args.steps, variant=args.variant, progress=progress,
                                                gin_params=params)
    if args.command == "staleness":
        from taskology_tf.staleness import DEFAULT_GIN, run_staleness

        values = _staleness_values(args)

        def run(workdir, params):
            run_staleness(workdir, values, steps=args.steps, eval_every=args.eval_every,
                          gin_files=args.gin_file or [DEFAULT_GIN], gin_params=params, progress=progress)
            return os.path.join(workdir, "staleness.json")

        return run
    if args.command == "table1":
        from taskology_tf.table1 import run_table1 as run_table
    elif args.command == "table2":
        from taskology_tf.table2 import run_table2 as run_table
    elif args.command == "xtasc":
        from taskology_tf.xtasc_table import run_xtasc_table as run_table
    else:
        from taskology_tf.ilt import run_ilt

        return lambda workdir, params: run_ilt(workdir, noise=args.noise, weightings=args.weightings,
                                               steps=args.steps, gin_params=params, progress=progress)
    return lambda workdir, params: run_table(workdir, steps=args.steps, rows=args.rows, gin_params=params,
                                             progress=progress)


# experiment command -> the name of its results (``<name>_seeds.json``, REPRODUCTION.md's sections)
SEEDED = {"table1": "table1", "table2": "table2", "demo": "table3", "staleness": "staleness", "xtasc": "xtasc",
          "ilt": "ilt"}


def run_experiment_command(args) -> str:
    """Run a paper experiment once, or once per seed with --seeds (mean±std); returns the result JSON's path."""
    run = _experiment_runner(args)
    if args.seeds is None:
        return run(args.workdir, args.gin_param)
    from taskology_tf import seeds as seeds_lib
    from taskology_tf.reproduction import format_results

    try:
        seeds = seeds_lib.parse_seeds(args.seeds)
    except ValueError as e:
        raise UsageError(str(e)) from None
    name = SEEDED[args.command]
    path = seeds_lib.run_seeds(name, seeds, args.workdir, run, args.gin_param,
                               format_doc=lambda doc: format_results(name, doc), title=EXPERIMENTS[name][1])
    if name == "staleness":
        from taskology_tf.staleness import plot_seeds

        print(plot_seeds(path, os.path.join(args.workdir, "staleness.png")))
    return path


def _print_metrics(metrics) -> None:
    for task, values in metrics.items():
        print(f"{task}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))


# `taskology experiment NAME ...`: the paper's experiments by name -> the subcommand that runs them.
EXPERIMENTS = {
    "table1": ("table1", "Sec. 4.1 / Table 1: depth, motion and segmentation, rows A-E"),
    "table2": ("table2", "Sec. 4.2 / Table 2: 3D vehicle detection with box flow, 5/20/100 % labels, +- consistency"),
    "table3": ("demo", "Sec. 4.3 / Table 3: depth and normals, sim -> real, with and without consistency"),
    "staleness": ("staleness", "Sec. 4.4 / Fig. 5: unsupervised depth + ego-motion with stale peers"),
    "xtasc": ("xtasc", "XTasC Table I: ST-, MT-, Align- and XTasC-Net, segmentation + depth, Delta_m"),
    "ilt": ("ilt", "instance-level task parameters (Vasu et al.): weightings with corrupt labels, Table 7 detection"),
    "report": ("report", "REPRODUCTION.md from benchmarks/results: each claim, ours with seeds, a verdict"),
}


def experiment_argv(argv: list[str]) -> list[str]:
    """``experiment NAME ARGS`` -> the subcommand's own argv (``NAME``'s command followed by ``ARGS``)."""
    listing = "\n".join(f"  {name:10s} {doc} (taskology {cmd})" for name, (cmd, doc) in EXPERIMENTS.items())
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(f"usage: taskology experiment NAME [options]\n\nexperiments:\n{listing}\n\n"
              "`taskology experiment NAME --help` lists NAME's options.")
        raise SystemExit(0 if len(argv) >= 2 else 2)
    if argv[1] not in EXPERIMENTS:
        print(f"taskology: error: unknown experiment {argv[1]!r}; known experiments:\n{listing}", file=sys.stderr)
        raise SystemExit(2)
    return [EXPERIMENTS[argv[1]][0]] + argv[2:]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # anywhere on the line, for every command (and inherited by child processes)
    argv = [a for a in argv if a != "--verbose"]
    runtime.configure(verbose)  # before TensorFlow loads: TF_ENABLE_ONEDNN_OPTS, log levels
    runtime.enter_user_directory()  # `bazel run`: relative paths are relative to where the user stands
    problem = runtime.missing_dependencies()
    if problem:
        print(f"taskology: error: {problem}", file=sys.stderr)
        return 2
    if argv[:1] == ["experiment"]:
        argv = experiment_argv(argv)
    if argv[:1] == ["serve"]:
        from taskology_tf.serving.flags import parse_serve_flags

        parsed = parse_serve_flags(argv[1:])  # --help and flag mistakes answer before TensorFlow loads
        if isinstance(parsed, int):
            return parsed
        runtime.import_tensorflow()
        from taskology_tf.serving.server import serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["launch"]:
        from taskology_tf.launch.launcher import launch_main

        return launch_main(argv[1:])
    args = build_parser().parse_args(argv)
    runtime.import_tensorflow()
    quiet = getattr(args, "no_progress", False)
    before = os.environ.get("TQDM_DISABLE")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # every bar, the data renderers' (and their worker processes') too
    try:
        return _run(args)
    finally:
        import gin

        gin.clear_config()
        if quiet and before is None:
            del os.environ["TQDM_DISABLE"]
        elif quiet:
            os.environ["TQDM_DISABLE"] = before


def _run(args) -> int:
    from taskology_tf.core import stopping

    with stopping.handle_signals():
        return _run_command(args)


def _run_command(args) -> int:
    from taskology_tf.core import stopping

    try:
        if args.command == "train":
            cmd_train(args)
        elif args.command == "eval":
            cmd_eval(args)
        elif args.command == "export":
            cmd_export(args)
        elif args.command == "data":
            cmd_data(args)
        elif args.command in SEEDED:
            run_experiment_command(args)
        elif args.command == "report":
            from taskology_tf.reproduction import write_report

            print(write_report(args.results, args.out))
    except UsageError as e:
        print(f"taskology: error: {e}", file=sys.stderr)
        return 2
    except stopping.TrainingStopped as e:
        print(f"taskology: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\ntaskology: interrupted (nothing saved since the last checkpoint).", file=sys.stderr)
        return 130
    except Exception as e:
        from taskology_tf.core.registry import UnknownNameError
        from taskology_tf.core.trainer import CheckpointError, NonFiniteLossError
        from taskology_tf.core.workdir import WorkdirError
        from taskology_tf.data.errors import DataError
        from taskology_tf.data.example import ExampleSpecError

        known = (UnknownNameError, ExampleSpecError, NonFiniteLossError, FileNotFoundError, ValueError, TypeError,
                 WorkdirError, CheckpointError, DataError)
        if isinstance(e, known) and not os.environ.get("TASKOLOGY_TRACEBACK"):
            print(f"taskology: error: {e}\n(set TASKOLOGY_TRACEBACK=1 for the traceback)", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
