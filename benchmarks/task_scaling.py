"""Many tasks on one machine: `taskology launch` with 2, 4, 8 field tasks in a ring and in a star.

    nice -n 19 .venv/bin/python benchmarks/task_scaling.py --tasks 2,4,8 --topology ring,star --steps 200

Each configuration runs ``taskology launch --gin_file scaling_fields`` (``gin/experiments/scaling_fields.gin``:
tiny field tasks of ``tasks/field.py`` tied by ``relations/field_consistency.py``) as it would be run by
hand: a model server and a trainer process per task, real gRPC on loopback. Measured per configuration:

  * per trainer (``<workdir>/launch_metrics.json``): steps/s and CPU cores of its training loop without
    the traced first step (``TaskTrainer.throughput``), and the requests and serialized bytes it exchanged
    with its peers' servers (``ServingPeer.traffic``), per step and per second (bytes/step x steps/s);
  * CPU of every process: all of them together exactly (``RUSAGE_CHILDREN`` of the launch), per role
    (trainers, servers) by sampling ``/proc/<pid>/stat`` of the processes whose command line holds the
    configuration's work folder, every ``--sample_seconds`` (the last interval before a process exits is
    missed); peak resident memory (``VmHWM``) per process;
  * that it ended well: the launch exits 0, every trainer exits 0 at the last step with no restart, and no
    process mentioning the work folder is left afterwards (no orphans).

A 2-task ring and a 2-task star are the same experiment (one relation): it runs once. Results go to
``<workdir>/task_scaling.json`` and a markdown table to stdout. ``--gin_param`` adds bindings to every
launch (e.g. ``ServingPeer.float16_outputs = True``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- /proc -------------------------------------------------------------------------------------------


def parse_stat(text: str) -> tuple[float, int, str]:
    """(CPU seconds = utime + stime, start time in clock ticks since boot, state) of a ``/proc/<pid>/stat`` line.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
    """
    rest = text.rsplit(")", 1)[1].split()
    state, utime, stime, start = rest[0], int(rest[11]), int(rest[12]), int(rest[19])
    return (utime + stime) / CLOCK_TICKS, start, state


def classify(argv: list[str]) -> tuple[str, str] | None:
    """(role, task) of a process of ``taskology launch`` from its argv: ('trainer', T) for ``train --task T``,
    ('server', T) for ``serve --model_name T``, ('launcher', '') for ``launch``; None for anything else."""
    if "taskology_tf.cli" not in argv:
        return None
    args = argv[argv.index("taskology_tf.cli") + 1:]
    command = args[0] if args else ""

    def flag(name):
        return args[args.index(name) + 1] if name in args[:-1] else ""

    if command == "train":
        return "trainer", flag("--task")
    if command == "serve":
        return "server", flag("--model_name")
    if command == "launch":
        return "launcher", ""
    return None


def _read(path: str, mode: str = "r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def processes_mentioning(text: str) -> dict[int, list[str]]:
    """pid -> argv of the live (not zombie) processes whose command line contains ``text``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        raw = _read(f"/proc/{entry}/cmdline", "rb")
        stat = _read(f"/proc/{entry}/stat")
        if not raw or not stat or text.encode() not in raw:
            continue
        if parse_stat(stat)[2] != "Z":
            found[int(entry)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return found


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (``VmHWM``), MiB."""
    status = _read(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


class Sampler:
    """Polls /proc for the processes of one launch (command line contains ``marker``): the last CPU seconds and
    peak memory seen of each (pid, start time), and its role and task."""

    def __init__(self, marker: str, every: float):
        self.marker, self.every = marker, every
        self.seen: dict[tuple[int, int], dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="proc-sampler")

    def sample(self) -> None:
        for pid, argv in processes_mentioning(self.marker).items():
            kind = classify(argv)
            stat = _read(f"/proc/{pid}/stat")
            if kind is None or stat is None:
                continue
            cpu, start, _ = parse_stat(stat)
            entry = self.seen.setdefault((pid, start), {"role": kind[0], "task": kind[1], "cpu": 0.0, "rss": 0.0})
            entry["cpu"] = max(entry["cpu"], cpu)
            entry["rss"] = max(entry["rss"], peak_rss_mib(pid) or 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# -- one configuration ---------------------------------------------------------------------------------


def launch_argv(workdir: str, tasks: int, topology: str, steps: int, gin_params=()) -> list[str]:
    """The ``taskology launch`` command of one configuration."""
    params = [f"field_tasks.count = {tasks}", f"field_relations.topology = '{topology}'",
              f"Experiment.train_steps = {steps}", *gin_params]
    argv = [sys.executable, "-m", "taskology_tf.cli", "launch", "--gin_file", "scaling_fields", "--workdir", workdir,
            "--no_progress", "--max_restarts", "0"]
    for p in params:
        argv += ["--gin_param", p]
    return argv


def run_configuration(workdir: str, tasks: int, topology: str, steps: int, gin_params=(), sample_seconds=1.0,
                      timeout=1800.0) -> dict:
    """Launch one configuration to its end; returns what was measured (see the module doc)."""
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(workdir) or ".", exist_ok=True)
    argv = launch_argv(workdir, tasks, topology, steps, gin_params)
    log_path = workdir + ".log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    with open(log_path, "w") as log, Sampler(workdir, sample_seconds) as sampler:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher stops its children on SIGTERM
            code = proc.wait()
        sampler.sample()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(1.0)  # children the launcher signalled last are gone by now, or orphans
    left = processes_mentioning(workdir)
    try:
        with open(os.path.join(workdir, "launch_metrics.json")) as f:
            launch = json.load(f)
    except (OSError, ValueError):
        launch = {}
    cpu_total = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return summarize(tasks, topology, steps, code, wall, cpu_total, launch, list(sampler.seen.values()),
                     sorted(left), load_before + os.getloadavg(), log_path)


def summarize(tasks, topology, steps, code, wall, cpu_total, launch, processes, left, load, log_path) -> dict:
    """One configuration's record: per trainer (steps/s, CPU, peers, requests and bytes per step and per
    second) and for the whole launch (CPU by role, memory, exit codes, restarts, processes left over)."""
    trainers = {}
    for task, throughput in sorted(launch.get("throughput", {}).items()):
        traffic = launch.get("peer_traffic", {}).get(task, {})
        total = {k: sum(t.get(k, 0) for t in traffic.values())
                 for k in ("requests", "answers", "bytes_sent", "bytes_received")}
        steps_run = max(throughput.get("steps", 0), 1)
        rate = throughput.get("steps_per_second")
        per_step = (total["bytes_sent"] + total["bytes_received"]) / steps_run
        trainers[task] = {
            "peers": len(traffic), "steps_per_second": rate, "cpu_cores": throughput.get("cpu_cores"),
            "first_step_seconds": throughput.get("first_step_seconds"), "loop_seconds": throughput.get("seconds"),
            "requests_per_step": total["requests"] / steps_run, "bytes_per_step": per_step,
            "bytes_sent_per_step": total["bytes_sent"] / steps_run,
            "bytes_per_second": per_step * rate if rate else None,
            "peer_unavailable_steps": sum(launch.get("peer_unavailable_steps", {}).get(task, {}).values()),
        }
    roles = {}
    for p in processes:
        role = roles.setdefault(p["role"], {"processes": 0, "cpu_seconds": 0.0, "peak_rss_mib": 0.0})
        role["processes"] += 1
        role["cpu_seconds"] += p["cpu"]
        role["peak_rss_mib"] = max(role["peak_rss_mib"], p["rss"])
    exit_codes = launch.get("exit_code", {})
    finished = (code == 0 and len(exit_codes) == tasks and all(c == 0 for c in exit_codes.values())
                and all(r == 0 for r in launch.get("restarts", {}).values())
                and all(s == steps for s in launch.get("step", {}).values()) and len(launch.get("step", {})) == tasks)
    return {"tasks": tasks, "topology": topology, "steps": steps, "launch_exit_code": code, "finished": finished,
            "orphans": left, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu_total, 1),
            "cpu_cores": round(cpu_total / wall, 2) if wall > 0 else None, "roles": roles, "trainers": trainers,
            "load_average_before_after": [round(x, 2) for x in load], "log": log_path}


# -- the table ---------------------------------------------------------------------------------------


def _spread(values, fmt="{:.1f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high, mean = min(values), max(values), statistics.fmean(values)
    if fmt.format(low) == fmt.format(high):
        return fmt.format(mean)
    return f"{fmt.format(mean)} ({fmt.format(low)}-{fmt.format(high)})"


def _range(values) -> str:
    low, high = min(values, default=0), max(values, default=0)
    return str(low) if low == high else f"{low}-{high}"


def _kb(x):
    return None if x is None else x / 1000.0


def format_table(records: list[dict]) -> str:
    """Markdown: one row per configuration; per-trainer columns are mean (min-max) over its trainers."""
    header = ("| tasks | topology | peers per trainer | steps/s per trainer | sum of steps/s | trainer CPU cores "
              "| peer kB per step | peer kB/s per trainer | requests per step | CPU cores used (trainers / servers) "
              "| peak MiB per trainer / server | training loop s / wall s | finished, orphans |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in records:
        t = r["trainers"].values()
        roles = r["roles"]
        split = " / ".join(f"{roles.get(k, {}).get('cpu_seconds', 0.0) / r['wall_seconds']:.2f}"
                           for k in ("trainer", "server"))
        ok = ("yes" if r["finished"] else "**no**") + f", {len(r['orphans'])}"
        memory = " / ".join(f"{roles.get(k, {}).get('peak_rss_mib', 0.0):.0f}" for k in ("trainer", "server"))
        total_rate = sum(x["steps_per_second"] or 0.0 for x in t)
        lines.append(
            f"| {r['tasks']} | {r['topology']} | {_range([x['peers'] for x in t])} "
            f"| {_spread([x['steps_per_second'] for x in t], '{:.2f}')} | {total_rate:.1f} "
            f"| {_spread([x['cpu_cores'] for x in t], '{:.2f}')} "
            f"| {_spread([_kb(x['bytes_per_step']) for x in t], '{:.0f}')} "
            f"| {_spread([_kb(x['bytes_per_second']) for x in t], '{:.0f}')} "
            f"| {_spread([x['requests_per_step'] for x in t], '{:.2f}')} "
            f"| {r['cpu_cores']:.2f} ({split}) | {memory} "
            f"| {_spread([x.get('loop_seconds') for x in t], '{:.0f}')} / {r['wall_seconds']:.0f} | {ok} |")
    return "\n".join(lines)


def configurations(tasks: list[int], topologies: list[str]) -> list[tuple[int, str]]:
    """(tasks, topology) to run, in order; a 2-task star is the 2-task ring (one relation) and is left out."""
    seen, out = set(), []
    for n in tasks:
        for topology in topologies:
            key = (n, "ring" if n == 2 else topology)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="2,4,8", help="task counts, comma-separated")
    p.add_argument("--topology", default="ring,star", help="ring, star, dense; comma-separated")
    p.add_argument("--steps", type=int, default=200, help="training steps of every trainer")
    p.add_argument("--workdir", default="/tmp/taskology_task_scaling", help="one folder per configuration below it")
    p.add_argument("--gin_param", action="append", default=[], help="extra binding for every launch")
    p.add_argument("--sample_seconds", type=float, default=1.0, help="/proc sampling period")
    args = p.parse_args(argv)
    tasks = [int(x) for x in args.tasks.split(",") if x.strip()]
    topologies = [x.strip() for x in args.topology.split(",") if x.strip()]
    records = []
    for n, topology in configurations(tasks, topologies):
        workdir = os.path.join(os.path.abspath(args.workdir), f"{topology}_{n}")
        print(f"[{n} tasks, {topology}] {workdir} (load {os.getloadavg()[0]:.2f})", flush=True)
        record = run_configuration(workdir, n, topology, args.steps, args.gin_param, args.sample_seconds)
        records.append(record)
        print(f"[{n} tasks, {topology}] {'finished' if record['finished'] else 'FAILED (see ' + record['log'] + ')'} "
              f"in {record['wall_seconds']:.0f} s; {len(record['orphans'])} process(es) left over", flush=True)
        with open(os.path.join(os.path.abspath(args.workdir), "task_scaling.json"), "w") as f:
            json.dump(records, f, indent=1)
    print()
    print(format_table(records))
    print(os.path.join(os.path.abspath(args.workdir), "task_scaling.json"))
    return 0 if all(r["finished"] and not r["orphans"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
