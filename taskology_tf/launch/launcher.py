"""Run each task of an experiment as its own trainer process, with a model server per task, on one machine.

    taskology launch --gin_file table3_consistency --workdir /tmp/run [--tasks depth,normals]
                     [--peer TASK=HOST:PORT ...] [--max_restarts 3] [--no_progress]
    taskology launch --target kubernetes --gin_file table3_consistency --image IMAGE --storage gs://B/run --out DIR

``--target kubernetes`` writes the same ``LaunchPlan`` as manifests (``kubernetes.py``) and starts nothing;
what follows is the local target (the default).

What happens:

1. The gin config is parsed here only to learn the task names, the peers each task reads (from the
   relations) and ``Experiment.train_steps``; no dataset is rendered and no network is built.
2. Every launched task that some task reads as a peer gets a server
   (``taskology serve --model_name T --model_base_path <workdir>/T/export --port 0``); the launcher
   reads ``port=<n>`` from its stdout and checks that the port accepts connections. The export folder
   may still be empty: the server answers and loads version 0 as soon as the trainer publishes it
   (every trainer exports its current network when it starts).
3. Then one trainer per launched task (``taskology train --task T --peer P=HOST:PORT ...`` with the
   same ``--gin_file``/``--gin_param``/``--import`` flags). Peers given with ``--peer`` run elsewhere:
   nothing is started for them.
4. Every child's output is copied to stdout, each line prefixed ``[task:trainer]`` or
   ``[task:server]``; a progress view shows each trainer's latest checkpointed/exported step.
5. A trainer that exits non-zero (or is killed) is restarted with the same command and resumes from
   its last checkpoint, up to ``--max_restarts`` times; exit code 2 (a usage error) is not retried, nor
   a failure identical to the previous one (same exit code and last line of output) with no checkpoint
   written in between: a deterministic error (a damaged file, a locked workdir) would only repeat. A
   trainer that exits 0 before its last step (stopped by a SIGTERM from outside, checkpoint saved) is
   restarted too.
   A server that dies is restarted on the same port if it can bind it, else on a new one (trainers
   started afterwards get the new address).
6. When every trainer has finished, the servers get SIGTERM (SIGKILL after a grace period), a metrics
   table is printed and ``<workdir>/launch_metrics.json`` written (with each trainer's steps/s and CPU of
   its last attempt, ``throughput``, and the requests and bytes it exchanged with each peer's server,
   ``peer_traffic``). Ctrl-C / SIGTERM stops every child
   the same way and returns 130.

Children run in their own process groups; on Linux they also get SIGTERM if the launcher dies
(``PR_SET_PDEATHSIG``), so no orphan survives even a ``kill -9`` of the launcher.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_PORT_LINE = re.compile(r"^port=(\d+)\s*$")
_CKPT_LINE = re.compile(r'^model_checkpoint_path:\s*".*?-(\d+)"\s*$', re.M)


class LaunchError(Exception):
    """A problem with the launch flags or configuration; printed without a traceback (exit code 2)."""


# -- the plan: which processes, read from the gin config ----------------------------------------------


@dataclasses.dataclass
class LaunchPlan:
    """What to start.

    tasks: the experiment's tasks launched here, in the experiment's order.
    peers: task -> the peer tasks its relations read (every experiment task).
    served: launched tasks that get a model server (some task reads them).
    remote: task -> ``host:port`` of peers running elsewhere (nothing started for them).
    train_steps: ``Experiment.train_steps`` (the step every trainer runs to).
    """

    tasks: list[str]
    peers: dict[str, list[str]]
    served: list[str]
    remote: dict[str, str]
    train_steps: int


def _query(name: str, default):
    """The value gin binds to ``name`` (references such as macros evaluated), or ``default`` if unbound."""
    import gin

    try:
        value = gin.query_parameter(name)
    except ValueError:
        return default
    if isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
    return value


def _experiment_default(param: str):
    import inspect

    from taskology_tf.experiment import Experiment

    return inspect.signature(Experiment.__init__).parameters[param].default


def plan_launch(gin_files: Sequence[str], gin_params: Sequence[str] = (), imports: Sequence[str] = (),
                tasks: Sequence[str] | None = None, remote: dict[str, str] | None = None) -> LaunchPlan:
    """Read the experiment's tasks, relations and train_steps from gin and decide what to start.

    Cheap: builds the relations (small objects) but neither the tasks' networks nor any dataset.
    Leaves gin's config cleared. Raises ``LaunchError`` for a bad config or inconsistent flags.
    """
    import gin

    from taskology_tf.cli import UsageError, parse_gin
    from taskology_tf.core.registry import UnknownNameError, relation_factory, task_factory
    from taskology_tf.core.validation import check_gin_scopes, checked_task_copies, whole_number

    remote = dict(remote or {})
    try:
        parse_gin(list(gin_files), list(gin_params), list(imports))
        all_tasks = _query("Experiment.tasks", None)
        if not all_tasks:
            raise LaunchError("the gin config sets no Experiment.tasks; name the tasks, e.g. "
                              "Experiment.tasks = ['depth', 'normals'].")
        all_tasks = [str(t) for t in all_tasks]
        copies = checked_task_copies(_query("Experiment.task_copies", None), all_tasks)
        for name in all_tasks:
            task_factory(copies.get(name, name))  # an unknown task fails here, before any process starts
        relations = []
        relation_names = list(_query("Experiment.relations", ()) or ())
        ground_truth = [str(t) for t in (_query("Experiment.ground_truth", ()) or ())]
        for name in relation_names:
            factory = relation_factory(name)
            with gin.config_scope(name):
                relations.append(factory())
        train_steps = whole_number("Experiment.train_steps",
                                   _query("Experiment.train_steps", _experiment_default("train_steps")))
        check_gin_scopes(all_tasks, relation_names)
    except UsageError as e:
        raise LaunchError(str(e)) from e
    except UnknownNameError as e:
        raise LaunchError(str(e)) from e
    except (ValueError, TypeError) as e:
        raise LaunchError(f"bad gin configuration: {e}") from e
    finally:
        gin.clear_config()

    for rel in relations:
        missing = [t for t in rel.tasks if t not in all_tasks]
        if missing:
            raise LaunchError(f"relation {rel.name!r} ties tasks {list(rel.tasks)} but Experiment.tasks is "
                              f"{all_tasks}; add {missing} to Experiment.tasks or remove the relation.")
    # Ground-truth tasks answer inside each trainer (GroundTruthPeer): nobody launches or serves them.
    peers = {t: sorted({p for r in relations if t in r.tasks for p in r.tasks if p != t and p not in ground_truth})
             for t in all_tasks}
    all_tasks = [t for t in all_tasks if t not in ground_truth]

    unknown = [t for t in remote if t not in all_tasks]
    if unknown:
        raise LaunchError(f"--peer names {unknown}, not tasks of the experiment {all_tasks}.")
    if tasks is None:
        launched = [t for t in all_tasks if t not in remote]
    else:
        unknown = [t for t in tasks if t not in all_tasks]
        if unknown:
            raise LaunchError(f"--tasks names {unknown}, not tasks of the experiment {all_tasks}.")
        both = [t for t in tasks if t in remote]
        if both:
            raise LaunchError(f"{both} given both in --tasks and as --peer; a task runs either here or elsewhere.")
        launched = [t for t in all_tasks if t in tasks]
    if not launched:
        raise LaunchError("nothing to launch: every task of the experiment is given as --peer.")
    for t in launched:
        missing = [p for p in peers[t] if p not in launched and p not in remote]
        if missing:
            raise LaunchError(f"task {t!r} reads the predictions of {missing}: launch them too (--tasks) or "
                              f"give their servers with --peer TASK=HOST:PORT.")
    readers = {p for t in all_tasks for p in peers[t]}
    served = [t for t in launched if t in readers]
    return LaunchPlan(tasks=launched, peers=peers, served=served, remote=remote, train_steps=train_steps)


# -- child processes ---------------------------------------------------------------------------------


def _death_signal_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the launcher dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return preexec


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Child:
    """One supervised process (a task's trainer or server) and the thread copying its output."""

    def __init__(self, task: str, role: str):
        self.task = task
        self.role = role
        self.label = f"[{task}:{role}]"
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.argv: list[str] = []
        self.restarts = 0
        self.state = "new"  # new, starting (servers), running, done, failed, stopped
        self.exit_code: int | None = None
        self.started_at = 0.0
        self.port: int | None = None  # servers: the port the latest attempt that came up printed
        self.port_seen = threading.Event()
        self.last_lines: collections.deque[str] = collections.deque(maxlen=50)  # of the current attempt
        self.last_failure: tuple[int, str, int] | None = None  # (exit code, last line, checkpoint step)

    def failure_line(self) -> str:
        """The last meaningful line of the attempt's output (an error message, usually)."""
        for line in reversed(self.last_lines):
            text = line.strip()
            if text and "TASKOLOGY_TRACEBACK" not in text:
                return text
        return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _last_update(line: str) -> str | None:
    """A line of child output without its newline; of a progress bar redrawn with ``\\r``, its last state only.

    None for a line that was nothing but carriage returns (a bar's clean-up).
    """
    line = line.rstrip("\r\n")
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else None


def _connectable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _latest_step(task_dir: str) -> int:
    """The newest step of a task's checkpoints or exports (0 when none yet)."""
    step = 0
    try:
        with open(os.path.join(task_dir, "ckpt", "checkpoint")) as f:
            m = _CKPT_LINE.search(f.read())
        if m:
            step = int(m.group(1))
    except OSError:
        pass
    try:
        versions = [int(v) for v in os.listdir(os.path.join(task_dir, "export")) if v.isdigit()]
        step = max([step, *versions])
    except OSError:
        pass
    return step


def _checkpoint_step(task_dir: str) -> int:
    try:
        with open(os.path.join(task_dir, "ckpt", "checkpoint")) as f:
            m = _CKPT_LINE.search(f.read())
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


class Launcher:
    """Starts, watches, restarts and stops the processes of a ``LaunchPlan``; ``run()`` returns the exit code.

    ``config_flags``: the ``--gin_file``/``--gin_param``/``--import`` flags every trainer gets.
    ``on_start(task, role, pid)`` (optional) is called after each process start (tests use it).
    """

    def __init__(self, plan: LaunchPlan, workdir: str, config_flags: Sequence[str], host: str = "127.0.0.1",
                 python: str = sys.executable, max_restarts: int = 3, progress: bool = True,
                 out: TextIO | None = None, grace_seconds: float = 10.0, server_timeout: float = 180.0,
                 status_every: float = 5.0, on_start: Callable[[str, str, int], None] | None = None):
        self.plan = plan
        self.workdir = os.path.abspath(workdir)
        self.config_flags = list(config_flags)
        self.host = host
        self.connect_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.python = python
        self.max_restarts = max_restarts
        self.progress = progress
        self.out = out if out is not None else sys.stdout
        self.grace_seconds = grace_seconds
        self.server_timeout = server_timeout
        self.status_every = status_every
        self.on_start = on_start
        self.servers = {t: _Child(t, "server") for t in plan.served}
        self.trainers = {t: _Child(t, "trainer") for t in plan.tasks}
        self.stop_requested = threading.Event()
        self._print_lock = threading.Lock()
        self._bars: dict[str, object] = {}
        self._last_status: tuple[str, float | None] = ("", None)  # None: nothing printed yet
        self._preexec = _death_signal_preexec()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # line-by-line output from the children
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        self.env = env

    # -- output --------------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        with self._print_lock:
            if self._bars:
                from tqdm.auto import tqdm

                tqdm.write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)

    def log(self, message: str) -> None:
        self.emit(f"[launch] {message}")

    def _copy_output(self, child: _Child, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            line = _last_update(raw.decode("utf-8", errors="replace"))
            if line is None:
                continue
            child.last_lines.append(line)
            if child.role == "server" and not child.port_seen.is_set():
                m = _PORT_LINE.match(line)
                if m:
                    child.port = int(m.group(1))
                    child.port_seen.set()
            self.emit(f"{child.label} {line}")
        proc.stdout.close()

    # -- starting ------------------------------------------------------------------------------------

    def _cli(self, *args: str) -> list[str]:
        return [self.python, "-m", "taskology_tf.cli", *args]

    def address(self, task: str) -> str:
        """``host:port`` of task's server for its peers: its server here, or the --peer address."""
        if task in self.plan.remote:
            return self.plan.remote[task]
        port = self.servers[task].port
        host = self.connect_host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _spawn(self, child: _Child, argv: list[str]) -> None:
        child.argv = argv
        child.port_seen.clear()
        child.exit_code = None
        child.last_lines.clear()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True,
                                preexec_fn=self._preexec)
        child.proc = proc
        child.started_at = time.monotonic()
        child.reader = threading.Thread(target=self._copy_output, args=(child, proc), daemon=True,
                                        name=f"launch-output-{child.task}-{child.role}")
        child.reader.start()
        if self.on_start is not None:
            self.on_start(child.task, child.role, proc.pid)

    def start_server(self, task: str, port: int = 0) -> None:
        child = self.servers[task]
        # ``taskology serve``: same flags as tensorflow_model_server.
        argv = self._cli("serve", "--model_name", task, "--model_base_path", os.path.join(self.workdir, task, "export"),
                         "--port", str(port), "--host", self.host)
        self._spawn(child, argv)
        child.state = "starting"
        self.log(f"started the server of {task!r} (pid {child.pid}).")

    def start_trainer(self, task: str) -> None:
        child = self.trainers[task]
        argv = self._cli("train", "--task", task, "--workdir", self.workdir, "--no_progress", *self.config_flags)
        for peer in self.plan.peers[task]:
            argv += ["--peer", f"{peer}={self.address(peer)}"]
        self._spawn(child, argv)
        child.state = "running"
        peers = ", ".join(f"{p} at {self.address(p)}" for p in self.plan.peers[task]) or "none"
        self.log(f"started the trainer of {task!r} (pid {child.pid}; peers: {peers}).")

    # -- watching ------------------------------------------------------------------------------------

    def _reap(self, child: _Child) -> int:
        code = child.proc.wait()
        if child.reader is not None:
            child.reader.join(timeout=5.0)  # the last lines of a dead process
        child.exit_code = code
        return code

    def _check_server(self, child: _Child) -> None:
        if child.state == "starting" and child.alive():
            if child.port_seen.is_set() and _connectable(self.connect_host, child.port):
                child.state = "running"
                self.log(f"the server of {child.task!r} serves at {self.address(child.task)}.")
            elif time.monotonic() - child.started_at > self.server_timeout:
                self.log(f"the server of {child.task!r} did not report its port within {self.server_timeout:.0f} s; "
                         "stopping it.")
                self._stop([child], grace=2.0)
                self._server_exited(child, child.exit_code if child.exit_code is not None else 1)
            return
        if child.state in ("starting", "running") and not child.alive():
            self._server_exited(child, self._reap(child))

    def _server_exited(self, child: _Child, code: int) -> None:
        if code == EXIT_USAGE:
            child.state = "failed"
            self.log(f"the server of {child.task!r} {_describe_exit(code)} (a usage error); not restarting it.")
            return
        if child.restarts >= self.max_restarts:
            child.state = "failed"
            self.log(f"the server of {child.task!r} {_describe_exit(code)}; it was restarted {child.restarts} "
                     "time(s) already, giving up (its peers train on without its predictions).")
            return
        child.restarts += 1
        # Keep the port the trainers know, unless the last attempt failed before binding it (port in use).
        port = child.port if child.port is not None and child.port_seen.is_set() else 0
        self.log(f"the server of {child.task!r} {_describe_exit(code)}; restart {child.restarts}/{self.max_restarts}"
                 + (f" on port {port}." if port else " on a new port."))
        self.start_server(child.task, port)

    def _check_trainer(self, child: _Child) -> None:
        if child.state != "running" or child.alive():
            return
        code = self._reap(child)
        step = _checkpoint_step(os.path.join(self.workdir, child.task))
        if code == 0:
            if step >= self.plan.train_steps or os.path.exists(os.path.join(self.workdir, child.task, "metrics.json")):
                child.state = "done"
                self.log(f"the trainer of {child.task!r} finished.")
                return
            code_text = f"exited with code 0 at step {step} of {self.plan.train_steps} (stopped from outside)"
        else:
            code_text = _describe_exit(code)
        if code == EXIT_USAGE:
            child.state = "failed"
            self.log(f"the trainer of {child.task!r} {code_text} (a usage error); not restarting it.")
            return
        failure = (code, child.failure_line(), step)
        if code != 0 and failure == child.last_failure:
            child.state = "failed"
            self.log(f"the trainer of {child.task!r} {code_text} again with the same error and no new checkpoint "
                     f"(\"{failure[1][:300]}\"); not restarting it: it would only fail the same way.")
            return
        child.last_failure = failure
        if child.restarts >= self.max_restarts:
            child.state = "failed"
            self.log(f"the trainer of {child.task!r} {code_text}; it was restarted {child.restarts} "
                     f"time(s) already (--max_restarts {self.max_restarts}), giving up.")
            return
        child.restarts += 1
        resume = f"resuming from its checkpoint at step {step}." if step else "starting over (no checkpoint yet)."
        self.log(f"the trainer of {child.task!r} {code_text}; "
                 f"restart {child.restarts}/{self.max_restarts}, {resume}")
        self.start_trainer(child.task)

    def tick(self) -> None:
        """Check every child once: restart the dead, notice servers that came up."""
        for child in self.servers.values():
            self._check_server(child)
        for child in self.trainers.values():
            self._check_trainer(child)

    # -- progress ------------------------------------------------------------------------------------

    def steps(self) -> dict[str, int]:
        return {t: _latest_step(os.path.join(self.workdir, t)) for t in self.plan.tasks}

    def status_line(self) -> str:
        total = self.plan.train_steps
        parts = []
        for task, step in self.steps().items():
            child = self.trainers[task]
            note = {"done": " done", "failed": " FAILED"}.get(child.state, "")
            if child.restarts:
                note += f" ({child.restarts} restart{'s' if child.restarts > 1 else ''})"
            parts.append(f"{task} {step}/{total}{note}")
        return "progress: " + " | ".join(parts)

    def _use_bars(self) -> bool:
        isatty = getattr(self.out, "isatty", None)
        return self.progress and bool(isatty and isatty())

    def show_progress(self, final: bool = False) -> None:
        if not self.progress:
            return
        if self._use_bars():
            from tqdm.auto import tqdm

            with self._print_lock:
                if not self._bars:
                    for i, task in enumerate(self.plan.tasks):
                        self._bars[task] = tqdm(total=self.plan.train_steps, desc=task, position=i, leave=True,
                                                file=self.out, dynamic_ncols=True)
                for task, step in self.steps().items():
                    bar = self._bars[task]
                    bar.n = min(step, self.plan.train_steps)
                    restarts = self.trainers[task].restarts
                    bar.set_postfix_str(f"restarts={restarts}" if restarts else "", refresh=False)
                    bar.refresh()
            return
        line, last = self._last_status
        now = time.monotonic()
        new = self.status_line()
        due = last is None or now - last >= self.status_every  # no fixed clock origin: monotonic may start near 0
        if final or (new != line and due):
            self._last_status = (new, now)
            self.log(new)

    def _close_bars(self) -> None:
        with self._print_lock:
            for bar in self._bars.values():
                bar.close()
            self._bars = {}

    # -- stopping ------------------------------------------------------------------------------------

    def _signal(self, child: _Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)  # the child leads its own process group
        except (ProcessLookupError, PermissionError):
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _stop(self, children: Sequence[_Child], grace: float | None = None) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left; reaps everything."""
        grace = self.grace_seconds if grace is None else grace
        running = [c for c in children if c.alive()]
        for c in running:
            self._signal(c, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in running:
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{c.role} of {c.task!r} (pid {c.pid}) ignored SIGTERM for {grace:.0f} s; killing it.")
                self._signal(c, signal.SIGKILL)
        for c in children:
            if c.proc is not None:
                self._reap(c)
                if c.state in ("starting", "running"):
                    c.state = "stopped"

    def stop_all(self, grace: float | None = None) -> None:
        self._stop([*self.trainers.values(), *self.servers.values()], grace)

    # -- the run -------------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> bool:
        """Sleep; True when a stop was requested."""
        return self.stop_requested.wait(seconds)

    def run(self) -> int:
        t0 = time.time()
        os.makedirs(self.workdir, exist_ok=True)
        try:
            for task in self.plan.served:
                self.start_server(task)
            while any(c.state == "starting" for c in self.servers.values()):
                if self._wait(0.2):
                    return self._interrupted()
                self.tick()
            failed = [t for t, c in self.servers.items() if c.state == "failed"]
            if failed:
                self.log(f"the server(s) of {failed} could not be started; stopping.")
                return 1
            for task in self.plan.tasks:
                self.start_trainer(task)
            while any(c.state == "running" for c in self.trainers.values()):
                if self._wait(0.2):
                    return self._interrupted()
                self.tick()
                self.show_progress()
            self.show_progress(final=True)
            self._close_bars()
            self._stop(list(self.servers.values()))
            return self._finish(time.time() - t0)
        finally:
            self._close_bars()
            self.stop_all(grace=self.grace_seconds)

    def _interrupted(self) -> int:
        self._close_bars()
        self.log("interrupted: stopping every process.")
        self.stop_all()
        return EXIT_INTERRUPTED

    def _finish(self, wall_seconds: float) -> int:
        from taskology_tf.core.trainer import write_json_atomic

        import json

        result = {"step": {}, "metrics": {}, "restarts": {}, "exit_code": {}, "peer_unavailable_steps": {},
                  "throughput": {}, "peer_traffic": {}, "servers": {}, "remote_peers": dict(self.plan.remote),
                  "wall_seconds": round(wall_seconds, 1)}
        for task, child in self.trainers.items():
            result["restarts"][task] = child.restarts
            result["exit_code"][task] = child.exit_code
            if child.state != "done":
                continue
            path = os.path.join(self.workdir, task, "metrics.json")
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError) as e:
                self.log(f"the trainer of {task!r} finished but {path} is unreadable ({e}).")
                continue
            result["step"][task] = data.get("step")
            result["metrics"][task] = data.get("metrics", {}).get(task, {})
            result["peer_unavailable_steps"][task] = data.get("peer_unavailable_steps", {})
            result["throughput"][task] = data.get("throughput", {})  # of the trainer's last attempt
            result["peer_traffic"][task] = data.get("peer_traffic", {})
        for task, child in self.servers.items():
            result["servers"][task] = {"address": self.address(task) if child.port is not None else None,
                                       "restarts": child.restarts}
        path = os.path.join(self.workdir, "launch_metrics.json")
        write_json_atomic(path, result)
        self.emit(format_table(result))
        print(path, file=self.out, flush=True)
        failed = [t for t, c in self.trainers.items() if c.state != "done"]
        if failed:
            self.log(f"the trainer(s) of {failed} did not finish.")
            return 1
        return 0


def format_table(result: dict) -> str:
    """The final per-task table: step, restarts and metrics (k=v)."""
    rows = [("task", "step", "restarts", "metrics")]
    for task in result["restarts"]:
        metrics = result["metrics"].get(task)
        text = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) if metrics else "(no metrics)"
        step = result["step"].get(task)
        rows.append((task, "-" if step is None else str(step), str(result["restarts"][task]), text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


# -- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskology launch",
        description="Train an experiment's tasks as separate processes on this machine: a model server and a "
        "trainer per task, restarted when they crash.",
    )
    p.add_argument("--gin_file", action="append", default=[], help="gin experiment file (repeatable)")
    p.add_argument("--gin_param", action="append", default=[], help="gin binding, e.g. Experiment.train_steps=100")
    p.add_argument("--target", choices=("local", "kubernetes"), default="local",
                   help="local (default): run every process on this machine; kubernetes: write manifests to --out "
                   "instead (see taskology_tf/launch/kubernetes.py)")
    p.add_argument("--workdir", default=None, help="folder for every task's checkpoints, logs, exports, metrics "
                   "(--target local; required there)")
    p.add_argument("--import", dest="imports", action="append", default=[],
                   help="Python module to import first (registers your own tasks/relations)")
    p.add_argument("--tasks", default=None, help="comma-separated tasks to run here (default: all but --peer ones)")
    p.add_argument("--peer", action="append", default=[], metavar="TASK=HOST:PORT",
                   help="a task running elsewhere, served at HOST:PORT; nothing is started for it (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="interface the servers bind (default 127.0.0.1)")
    p.add_argument("--max_restarts", type=int, default=3, help="restarts per process before giving up (default 3)")
    p.add_argument("--no_progress", action="store_true", help="no progress view")
    p.add_argument("--python", default=sys.executable, help="Python interpreter of the children")
    p.add_argument("--grace_seconds", type=float, default=10.0, help="SIGTERM-to-SIGKILL delay when stopping")
    p.add_argument("--server_timeout", type=float, default=180.0, help="seconds a server may take to come up")
    k = p.add_argument_group("--target kubernetes")
    k.add_argument("--image", default=None, help="the trainer image (built from the Dockerfile), e.g. "
                   "registry.example.com/taskology:0.1")
    k.add_argument("--storage", default=None, help="the shared work folder every pod uses: a TensorFlow filesystem "
                   "URL (gs://BUCKET/run) or an absolute path on --storage_claim")
    k.add_argument("--storage_claim", default=None, help="ReadWriteMany PersistentVolumeClaim mounted at --storage "
                   "(when --storage is a path)")
    k.add_argument("--out", default=None, help="folder the manifests are written to (then: kubectl apply -f OUT)")
    k.add_argument("--name", default=None, help="prefix of every object's name (default: the first gin file's name)")
    k.add_argument("--namespace", default=None, help="namespace of the objects (default: kubectl's current one)")
    k.add_argument("--serving_image", default=None, help="tensorflow_model_server image (default tensorflow/serving:latest)")
    k.add_argument("--poll_seconds", type=int, default=10, help="servers' --file_system_poll_wait_seconds (default 10)")
    return p


def _parse_peers(items: Sequence[str]) -> dict[str, str]:
    peers = {}
    for item in items:
        name, sep, address = item.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not name or not colon or not host or not port.isdigit():
            raise LaunchError(f"--peer {item!r}: expected TASK=HOST:PORT, e.g. --peer normals=10.0.0.2:8500.")
        if name in peers:
            raise LaunchError(f"--peer {name!r} is given twice.")
        peers[name] = address
    return peers


def launch_main(argv: Sequence[str] | None = None) -> int:
    """``taskology launch``: parse flags, plan, run every process to the end; returns the exit code."""
    from taskology_tf import runtime

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.target == "kubernetes":
        return kubernetes_main(args)
    runtime.configure()  # the children inherit it
    runtime.import_tensorflow()
    try:
        kubernetes_only = [f"--{f}" for f in ("image", "storage", "storage_claim", "out", "name", "namespace",
                                               "serving_image") if getattr(args, f) is not None]
        if kubernetes_only:
            raise LaunchError(f"{', '.join(kubernetes_only)} only apply with --target kubernetes.")
        if not args.workdir:
            raise LaunchError("give the work folder with --workdir (e.g. --workdir /tmp/run).")
        if args.max_restarts < 0:
            raise LaunchError(f"--max_restarts must be >= 0, got {args.max_restarts}.")
        if not args.gin_file:
            raise LaunchError("give the experiment with --gin_file (e.g. --gin_file table3_consistency).")
        tasks = _parse_tasks(args.tasks)
        remote = _parse_peers(args.peer)
        plan = plan_launch(args.gin_file, args.gin_param, args.imports, tasks, remote)
        from taskology_tf.cli import resolve_gin_file
        from taskology_tf.core import workdir as workdir_lib

        gin_files = [os.path.abspath(resolve_gin_file(f)) for f in args.gin_file]
        try:
            workdir_lib.prepare(args.workdir)
        except workdir_lib.WorkdirError as e:
            raise LaunchError(str(e)) from None
    except LaunchError as e:
        print(f"taskology launch: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    flags = [x for f in gin_files for x in ("--gin_file", f)]
    flags += [x for p in args.gin_param for x in ("--gin_param", p)]
    flags += [x for m in args.imports for x in ("--import", m)]
    launcher = Launcher(plan, args.workdir, flags, host=args.host, python=args.python,
                        max_restarts=args.max_restarts, progress=not args.no_progress,
                        grace_seconds=args.grace_seconds, server_timeout=args.server_timeout)
    launcher.log(f"tasks here: {plan.tasks}; servers: {plan.served or 'none'}; "
                 f"remote peers: {plan.remote or 'none'}; {plan.train_steps} steps each.")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum, frame):
            launcher.stop_requested.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return launcher.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _parse_tasks(text: str | None) -> list[str] | None:
    """``--tasks depth,normals`` -> ['depth', 'normals']; None when the flag was not given."""
    if text is None:
        return None
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise LaunchError("--tasks is empty; name tasks separated by commas, e.g. --tasks depth,normals.")
    return tasks


def kubernetes_main(args) -> int:
    """``taskology launch --target kubernetes``: the same plan, written as manifests to ``--out``."""
    from taskology_tf.launch import kubernetes

    try:
        if not args.gin_file:
            raise LaunchError("give the experiment with --gin_file (e.g. --gin_file table3_consistency).")
        if args.workdir:
            raise LaunchError("--workdir is for --target local; on Kubernetes the work folder is --storage.")
        if not args.out:
            raise LaunchError("--target kubernetes needs --out DIR, the folder the manifests are written to.")
        tasks = _parse_tasks(args.tasks)
        name = args.name or os.path.splitext(os.path.basename(args.gin_file[0]))[0].lower().replace("_", "-")
        cluster = kubernetes.Cluster(
            image=args.image or "", storage=(args.storage or "").rstrip("/"), name=name,
            storage_claim=args.storage_claim, namespace=args.namespace,
            serving_image=args.serving_image or kubernetes.DEFAULT_SERVING_IMAGE, poll_seconds=args.poll_seconds,
            max_restarts=args.max_restarts)
        kubernetes.check_cluster(cluster)  # flag mistakes first, before gin is parsed
        plan = plan_launch(args.gin_file, args.gin_param, args.imports, tasks, _parse_peers(args.peer))
        settings = kubernetes.read_settings(args.gin_file, args.gin_param, args.imports, plan.tasks)
        files = kubernetes.manifests(plan, cluster, settings, args.imports)
        paths = kubernetes.write_manifests(files, args.out)
    except (LaunchError, kubernetes.KubernetesError) as e:
        print(f"taskology launch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"[launch] wrote {len(paths)} manifest files to {args.out}: servers {plan.served or 'none'}, "
          f"trainers {plan.tasks}; apply them with: kubectl apply -f {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(launch_main(sys.argv[1:]))
