"""A trainer's steps/s standalone versus in collective training with a served peer, side by side in one run.

    .venv/bin/python benchmarks/standalone_vs_collective.py --steps 60 --blocks 3

The Table 3 consistency experiment (``gin/experiments/table3_consistency.gin``) at the tiny size the
tests use (``taskology_tf.testing.TINY_TABLE3``: 32x64 images, batch 4, mediator batch 4, tiny
U-Nets; ``--height``/``--width``/``--batch_size``/``--mediator_batch_size`` change it). The depth
trainer is timed in these settings, all in this one process with the same TensorFlow settings:

  (a) standalone: the depth trainer with no relations (supervised steps only);
  (b) collective, served peer: ``Experiment.build_standalone('depth', ...)``, the normals network
      exported (version 0) and served by ``python -m taskology_tf.serving.server`` in a separate
      process on loopback, predictions prefetched for the next mediator batch (the default);
  (b16) the same with ``ServingPeer(float16_outputs=True)`` (signature ``serving_float16``);
  (i) the depth trainer with the relation and the normals network in this process
      (``InProcessPeer``, always current): the consistency work without any serving;
  (c) for reference, the in-process ``Collective``: rounds/s, one round = one depth step and one
      normals step on a shared mediator batch.

Each setting first runs ``--warmup`` steps (tracing, first requests; not timed); then the settings
take turns, ``--blocks`` blocks of ``--steps / --blocks`` steps each, so a change of the machine's
load hits all of them alike. Checkpoints, summaries, evaluation and exports are off in every
setting. The server shares the machine's cores with the trainer, as it does when one machine runs
both; on a cluster it runs on the peer's machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def start_server(base: str) -> tuple[subprocess.Popen, int]:
    """``python -m taskology_tf.serving.server`` serving ``base`` as model 'normals'; returns (process, port)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "taskology_tf.serving.server", "--model_name", "normals", "--model_base_path", base,
         "--port", "0", "--file_system_poll_wait_seconds", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        line = server.stdout.readline()
        if not line:
            server.wait(10)
            raise RuntimeError(f"the model server exited (code {server.returncode}) before printing its port")
        if line.startswith("port="):
            return server, int(line.strip().split("=", 1)[1])


class Setting:
    """One timed configuration: a label and a function running one step (or round)."""

    def __init__(self, key: str, label: str, step, unit: str = "steps/s"):
        self.key, self.label, self.step, self.unit = key, label, step, unit
        self.steps = 0
        self.seconds = 0.0
        self.block_rates: list[float] = []

    def run(self, n: int, timed: bool = True) -> None:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        elapsed = time.perf_counter() - t0
        if timed:
            self.steps += n
            self.seconds += elapsed
            self.block_rates.append(n / elapsed)

    @property
    def rate(self) -> float:
        return self.steps / self.seconds


def tracing_count(trainers) -> int:
    """How often the trainers' step functions were traced (must not change while timing)."""
    return sum(t._compute_fn.experimental_get_tracing_count() + t._apply_fn.experimental_get_tracing_count()
               for t in trainers)


def trainer_step(trainer):
    def step():
        if trainer.train_step() is None:
            raise RuntimeError(f"trainer {trainer.name!r} had nothing to do this step")
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="timed steps (rounds for the Collective) per setting")
    p.add_argument("--blocks", type=int, default=3, help="the settings take turns in this many blocks")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per setting first (tracing)")
    p.add_argument("--batch_size", type=int, default=None, help="dedicated batch (default: the tiny config's 4)")
    p.add_argument("--mediator_batch_size", type=int, default=None, help="mediator batch (default: the tiny config's 4)")
    p.add_argument("--height", type=int, default=None, help="image height (default: the tiny config's 32)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the tiny config's 64)")
    p.add_argument("--no_float16", action="store_true", help="skip the (b16) float16-outputs setting")
    p.add_argument("--gin_param", action="append", default=[], help="further gin bindings (after the tiny config)")
    args = p.parse_args()
    if args.steps <= 0 or args.blocks <= 0 or args.steps % args.blocks or args.warmup < 1:
        p.error("need --steps > 0 divisible by --blocks > 0, and --warmup >= 1 (the first step traces).")

    import gin
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one trace per trainer is expected (and checked: see tracing_count)

    from taskology_tf.cli import parse_gin
    from taskology_tf.core.peer import InProcessPeer
    from taskology_tf.experiment import Experiment
    from taskology_tf.serving.client import PredictClient
    from taskology_tf.serving.export import export_model
    from taskology_tf.testing import TINY_TABLE3

    params = list(TINY_TABLE3)
    for name, value in (("synthetic.height", args.height), ("synthetic.width", args.width),
                        ("TaskTrainer.batch_size", args.batch_size)):
        if value is not None:
            params.append(f"{name} = {value}")
    if args.mediator_batch_size is not None:
        params += [f"Experiment.mediator_batch_size = {args.mediator_batch_size}",
                   f"TaskTrainer.mediator_batch_size = {args.mediator_batch_size}"]
    params += ["TaskTrainer.checkpoint_every = 0", "TaskTrainer.summary_every = 0", "TaskTrainer.eval_every = 0",
               "TaskTrainer.export_every = 0", *args.gin_param]
    parse_gin(["table3_consistency"], params)
    if args.mediator_batch_size is None:  # a standalone trainer's own mediator stream: the experiment's batch
        gin.bind_parameter("TaskTrainer.mediator_batch_size", gin.query_parameter("Experiment.mediator_batch_size"))

    root = tempfile.mkdtemp(prefix="taskology_standalone_vs_collective_")
    experiment = Experiment()
    load_start = load_average()
    server = None
    peers = []
    trainers = []
    try:
        # The peer's network, version 0, served in its own process.
        normals = experiment.build_trainer("normals", os.path.join(root, "peer"))
        trainers.append(normals)
        base = os.path.join(root, "served", "normals")
        export_model(normals.model, base, 0, warmup_inputs={
            "image": next(iter(experiment.mediator.batch(experiment.mediator_batch_size)))["image"].numpy()})
        server, port = start_server(base)
        address = f"127.0.0.1:{port}"
        with PredictClient(address, "normals", timeout=10.0) as client:
            if not client.wait_until_available(120.0):
                raise RuntimeError(f"the model server at {address} did not load version 0 within 120 s")

        settings = []
        standalone = Experiment(relations=[]).build_trainer("depth", os.path.join(root, "a"))
        trainers.append(standalone)
        settings.append(Setting("a", "(a) standalone, supervised only", trainer_step(standalone)))

        served = experiment.build_standalone("depth", os.path.join(root, "b"), {"normals": address})
        trainers.append(served)
        peers.append(served.peers["normals"])
        settings.append(Setting("b", "(b) collective, served peer (float32)", trainer_step(served)))

        if not args.no_float16:
            served16 = experiment.build_standalone("depth", os.path.join(root, "b16"), {"normals": address},
                                                   float16_outputs=True)
            trainers.append(served16)
            peers.append(served16.peers["normals"])
            settings.append(Setting("b16", "(b16) collective, served peer (float16)", trainer_step(served16)))

        local_peer = InProcessPeer(experiment.tasks["normals"], normals.model, live_step=lambda: normals.step)
        in_process = experiment.build_trainer("depth", os.path.join(root, "i"), mediator=experiment.mediator,
                                              peers={"normals": local_peer})
        trainers.append(in_process)
        settings.append(Setting("i", "(i) depth + relation, peer in process", trainer_step(in_process)))

        collective = experiment.build_collective(os.path.join(root, "c"))
        trainers.extend(collective.trainers.values())
        settings.append(Setting("c", "(c) in-process Collective", collective.round, unit="rounds/s"))

        t0 = time.perf_counter()
        for setting in settings:
            setting.run(args.warmup, timed=False)
        warmup_s = time.perf_counter() - t0
        traced = tracing_count(trainers)
        per_block = args.steps // args.blocks
        for _ in range(args.blocks):
            for setting in settings:
                setting.run(per_block)
        load_end = load_average()
        retraced = tracing_count(trainers) - traced
    finally:
        for peer in peers:
            peer.close()
        for trainer in trainers:
            trainer.close()
        if server is not None:
            server.terminate()
            server.wait(10)
        gin.clear_config()
        shutil.rmtree(root, ignore_errors=True)

    first = settings[0]
    cfg = experiment.mediator.element_spec["image"].shape
    print(f"Table 3 tiny config: images {cfg[0]}x{cfg[1]}, batch {standalone.batch_size}, "
          f"mediator batch {served.mediator_batch_size}; {args.steps} timed steps per setting in {args.blocks} "
          f"interleaved blocks after {args.warmup} warm-up steps each (warm-up {warmup_s:.1f} s in all)")
    print(f"load average (1, 5, 15 min): start {load_start}; end {load_end}; {os.cpu_count()} CPUs")
    print(f"{'setting':<44}{'rate':>8} {'unit':<9}{'ms/step':>9}{'blocks min-max':>17}{'vs (a)':>8}")
    for s in settings:
        print(f"{s.label:<44}{s.rate:>8.2f} {s.unit:<9}{1000 / s.rate:>9.1f}"
              f"{min(s.block_rates):>9.2f}-{max(s.block_rates):<7.2f}{s.rate / first.rate:>8.2f}")
    for trainer, key in ((served, "b"), (None if args.no_float16 else served16, "b16")):
        if trainer is not None:
            peer = trainer.peers["normals"]
            print(f"({key}) peer: served version {peer.version}, unavailable steps "
                  f"{trainer.peer_unavailable_steps.get('normals', 0)}")
    if retraced:
        print(f"WARNING: the step functions were traced {retraced} more time(s) while timing; the rates include tracing.")
    b = next(s for s in settings if s.key == "b")
    print(f"ratio (b)/(a) = {b.rate / first.rate:.2f}  (collective with a served peer / standalone, steps/s)")


if __name__ == "__main__":
    main()
