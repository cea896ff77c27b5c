"""Fault injection: what survives kills, damaged checkpoints, version swaps under load and malformed requests.

    .venv/bin/python benchmarks/fault_injection.py                    # all four parts, the sizes below
    .venv/bin/python benchmarks/fault_injection.py --parts swaps --swaps 200 --clients 8

Parts (``--parts``, comma-separated):

kills      ``taskology train`` (the normals task of table3_baseline, 32x64 synthetic images, batch 4) is
           SIGKILLed at ``--kills`` random moments (a random step, then a random fraction of a step; one in
           four during start-up instead) and restarted each time until it reaches ``--steps``; an uninterrupted
           run of the same configuration is the reference. Reports the steps lost per kill (last step
           finished before the kill minus the step the next run resumed from; must be < checkpoint_every)
           and whether the final metrics equal the reference's exactly.
corrupt    a finished run's newest checkpoint damaged three ways (``.data`` truncated, ``.index`` truncated,
           a flipped ``.data`` byte), then ``taskology train`` continued (and once under ``taskology launch``):
           resumed from the previous checkpoint? one line naming the file? finished?
swaps      ``taskology serve`` (a subprocess) of a tiny model while ``--swaps`` versions are copied in, half
           with an atomic rename, half the way ``cp -r`` does it (``saved_model.pb`` first, ``variables/`` a
           moment later), old ones deleted, under ``--clients`` threads sending Predict without pause. Each
           version v is a copy of template v % 4 whose output is input . w + (v % 4), so every answer shows
           whether it came from a complete copy of the version it names. Reports failed requests, answers from
           partial versions, the server's RSS along the way.
malformed  ``--malformed`` requests of each of 17 malformed kinds to ``taskology serve`` of the normals network
           (tiny preset, sizes multiples of 32; --max_message_bytes 8 MiB): each must get its status code,
           and a valid request must still succeed after each kind; the server must be alive at the end.

Writes the figures as JSON (``--out``) and prints a summary. Runs its processes with ``TF_DETERMINISTIC_OPS=1``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TINY = [
    "synthetic.height = 32", "synthetic.width = 64", "sim_train/synthetic.num_examples = 16",
    "real_eval/synthetic.num_examples = 8", "TaskTrainer.batch_size = 4", "TaskTrainer.eval_every = 0",
    "Experiment.tasks = ['normals']", "TaskTrainer.summary_every = 1000",
]

# Runs the real `taskology` command with two prints added: the step a run resumed from, and every finished step.
WRAPPER = """
import sys
from taskology_tf.core import collective
_init, _round = collective.Collective.__init__, collective.Collective.round
def __init__(self, *a, **k):
    _init(self, *a, **k)
    print(f"RESUMED {self.step}", flush=True)
def round(self):
    out = _round(self)
    print(f"STEP {self.step}", flush=True)
    return out
collective.Collective.__init__, collective.Collective.round = __init__, round
from taskology_tf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def env():
    e = dict(os.environ, PYTHONPATH=REPO, TF_DETERMINISTIC_OPS="1", PYTHONUNBUFFERED="1")
    e.pop("TASKOLOGY_VERBOSE", None)
    return e


def train_argv(workdir, steps, every, extra=()):
    flags = ["train", "--gin_file", "table3_baseline", "--workdir", workdir, "--no_progress"]
    for binding in (*TINY, f"Experiment.train_steps = {steps}", f"TaskTrainer.checkpoint_every = {every}", *extra):
        flags += ["--gin_param", binding]
    return [sys.executable, "-c", WRAPPER, *flags]


class Run:
    """A wrapped `taskology train` subprocess whose RESUMED/STEP lines are read as they come."""

    def __init__(self, argv):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                                     start_new_session=True)
        self.resumed = None
        self.last_step = None
        self.first_step_at = None
        self.stderr = []
        self.lines = []
        self.step_event = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            with self.step_event:
                if line.startswith("RESUMED "):
                    self.resumed = int(line.split()[1])
                elif line.startswith("STEP "):
                    self.last_step = int(line.split()[1])
                    if self.first_step_at is None:
                        self.first_step_at = time.monotonic()
                self.step_event.notify_all()
        with self.step_event:
            self.step_event.notify_all()

    def wait_step(self, step, timeout=600):
        deadline = time.monotonic() + timeout
        with self.step_event:
            while (self.last_step is None or self.last_step < step) and self.proc.poll() is None:
                if not self.step_event.wait(max(0.0, deadline - time.monotonic())):
                    break
        return self.last_step is not None and self.last_step >= step

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        time.sleep(0.2)  # the reader threads take the last lines from the pipes

    def finish(self, timeout=1800):
        self.proc.wait(timeout=timeout)
        time.sleep(0.2)
        return self.proc.returncode


# -- part 1: kills ---------------------------------------------------------------------------------


def part_kills(root, kills, steps, every, seed):
    rng = random.Random(seed)
    reference_dir, killed_dir = os.path.join(root, "reference"), os.path.join(root, "killed")
    t0 = time.monotonic()
    ref = Run(train_argv(reference_dir, steps, every))
    assert ref.finish() == 0, "".join(ref.stderr)[-3000:]
    reference = json.load(open(os.path.join(reference_dir, "metrics.json")))
    startup = ref.first_step_at - ref.started
    step_seconds = (time.monotonic() - ref.first_step_at) / max(steps, 1)
    print(f"[kills] reference: {steps} steps, start-up {startup:.1f} s, {step_seconds * 1000:.0f} ms/step", flush=True)

    events = []
    previous_last = None
    for k in range(kills):
        run = Run(train_argv(killed_dir, steps, every))
        if previous_last is not None:  # the step this run resumed from, against the last one finished before
            deadline = time.monotonic() + 600
            while run.resumed is None and run.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            events[-1]["resumed"] = run.resumed
            events[-1]["lost"] = (previous_last or 0) - (run.resumed or 0)
        start = run.resumed or 0
        if rng.random() < 0.25 or start + 1 >= steps:  # during start-up: restoring, rendering data, tracing
            when = "start-up"
            deadline = run.started + rng.uniform(0.5, 0.9 * startup)
            while time.monotonic() < deadline and run.first_step_at is None and run.proc.poll() is None:
                time.sleep(0.01)
            target = None
        else:
            when = "training"
            target = rng.randint(start + 1, max(start + 1, min(steps - 1, start + 2 * every)))
            if not run.wait_step(target):
                raise RuntimeError(f"run {k} never reached step {target}: " + "".join(run.stderr)[-3000:])
            time.sleep(rng.uniform(0.0, step_seconds))  # somewhere inside the next step (or its checkpoint)
        if run.proc.poll() is not None:
            raise RuntimeError(f"run {k} ended before its kill (rc {run.proc.returncode}); use more --steps")
        run.kill()
        previous_last = run.last_step if run.last_step is not None else start
        if when == "start-up" and run.last_step is not None:
            when = "first step"  # the clock ran out as the first step finished
        events.append({"kill": k + 1, "when": when, "started_at_step": start, "last_step_done": run.last_step,
                       "target_step": target})
        print(f"[kills] kill {k + 1}/{kills} ({when}): resumed at {start}, last finished step {run.last_step}",
              flush=True)
    final = Run(train_argv(killed_dir, steps, every))
    code = final.finish()
    events[-1]["resumed"] = final.resumed
    events[-1]["lost"] = (previous_last or 0) - (final.resumed or 0)
    result = json.load(open(os.path.join(killed_dir, "metrics.json"))) if code == 0 else None
    lost = [e["lost"] for e in events]
    summary = {
        "kills": kills, "steps": steps, "checkpoint_every": every, "final_exit_code": code,
        "kills_in_startup": sum(e["when"] == "start-up" for e in events),
        "steps_lost": lost, "max_steps_lost": max(lost), "all_lost_below_interval": max(lost) < every,
        "metrics_equal_to_uninterrupted": result is not None and result["metrics"] == reference["metrics"],
        "reference_metrics": reference["metrics"], "final_metrics": result and result["metrics"],
        "seconds": round(time.monotonic() - t0, 1), "events": events,
    }
    print(f"[kills] {kills} kills, steps lost {lost} (max {max(lost)}, interval {every}); final metrics equal to the "
          f"uninterrupted run: {summary['metrics_equal_to_uninterrupted']}", flush=True)
    return summary


# -- part 2: damaged newest checkpoint ----------------------------------------------------------------


def _damage(path, how):
    data = open(path, "rb").read()
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
    open(path, "wb").write(data)


def part_corrupt(root, every):
    t0 = time.monotonic()
    cases = []
    for name, part, how, launch in (("data truncated", "data", "truncate", False),
                                    ("index truncated", "index", "truncate", False),
                                    ("data byte flipped", "data", "flip", False),
                                    ("data truncated, under taskology launch", "data", "truncate", True)):
        workdir = os.path.join(root, name.replace(" ", "_").replace(",", ""))
        first = Run(train_argv(workdir, 3 * every, every))
        assert first.finish() == 0, "".join(first.stderr)[-3000:]
        newest = os.path.join(workdir, "normals", "ckpt", f"ckpt-{3 * every}")
        bad = glob.glob(f"{newest}.{part}*")[0]
        _damage(bad, how)
        if launch:
            argv = [sys.executable, "-m", "taskology_tf.cli", "launch", "--gin_file", "table3_baseline",
                    "--workdir", workdir, "--no_progress"]
            for binding in (*TINY, f"Experiment.train_steps = {4 * every}", f"TaskTrainer.checkpoint_every = {every}"):
                argv += ["--gin_param", binding]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=1800)
            output, code = proc.stdout + proc.stderr, proc.returncode
            launch_metrics = json.load(open(os.path.join(workdir, "launch_metrics.json"))) if code == 0 else {}
            restarts = launch_metrics.get("restarts", {}).get("normals")
            resumed = None
            for line in output.splitlines():
                if "resuming from ckpt-" in line:
                    resumed = int(line.split("resuming from ckpt-")[1].split()[0])
        else:
            again = Run(train_argv(workdir, 4 * every, every))
            code = again.finish()
            output, resumed, restarts = "".join(again.stderr), again.resumed, None
        lines = [l for l in output.splitlines() if "is damaged" in l]
        case = {"case": name, "damaged_file": os.path.relpath(bad, workdir), "exit_code": code,
                "resumed_from_step": resumed, "expected_step": 2 * every, "lines_naming_the_file": len(
                    [l for l in lines if os.path.basename(bad) in l]), "line": lines[0][:400] if lines else None,
                "set_aside": os.path.exists(os.path.join(workdir, "normals", "ckpt", "damaged", os.path.basename(bad)))}
        if launch:
            case["launcher_restarts"] = restarts
        cases.append(case)
        print(f"[corrupt] {name}: exit {code}, resumed from step {resumed} (expected {2 * every}), "
              f"{case['lines_naming_the_file']} line(s) naming {os.path.basename(bad)}", flush=True)
    return {"cases": cases, "seconds": round(time.monotonic() - t0, 1),
            "all_resumed_from_previous": all(c["resumed_from_step"] == c["expected_step"] and c["exit_code"] == 0
                                             for c in cases)}


# -- part 3: version swaps under load --------------------------------------------------------------


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def start_server(base, extra=(), name="m"):
    argv = [sys.executable, "-m", "taskology_tf.cli", "serve", "--model_name", name, "--model_base_path", base,
            "--port", "0", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    line = proc.stdout.readline()
    if not line.startswith("port="):
        raise RuntimeError(f"the server did not start: {line} {''.join(log)[-2000:]}")
    return proc, int(line.strip().split("=")[1]), log


def _tiny_model(bias):
    import keras

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(image)
    depth = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant([[[[0.5], [-1.0], [2.0]]]]),
                                bias_initializer=keras.initializers.Constant(bias))(x)
    return keras.Model({"image": image}, {"depth": depth})


def part_swaps(root, swaps, clients, templates=4):
    import numpy as np

    from taskology_tf.serving.client import PredictClient
    from taskology_tf.serving.export import export_model, remove_version

    t0 = time.monotonic()
    template_dir, base = os.path.join(root, "templates"), os.path.join(root, "served")
    for t in range(templates):
        export_model(_tiny_model(float(t)), template_dir, t, float16_signature=False)
    os.makedirs(base)
    shutil.copytree(os.path.join(template_dir, "0"), os.path.join(base, "0"))
    server, port, log = start_server(base, ["--file_system_poll_wait_seconds", "0.02"])
    image = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    expected = (image.astype(np.float32) / 255.0) @ np.array([[0.5], [-1.0], [2.0]], np.float32)
    stop = threading.Event()
    stats = {"requests": 0, "failed": 0, "partial": 0, "versions_seen": set(), "errors": []}
    lock = threading.Lock()

    def client_loop():
        with PredictClient(f"127.0.0.1:{port}", "m", timeout=30.0, retries=0) as client:
            while not stop.is_set():
                try:
                    outputs, version = client.predict({"image": image})
                    ok = np.allclose(outputs["depth"], expected + version % templates, atol=1e-5)
                    with lock:
                        stats["requests"] += 1
                        stats["versions_seen"].add(version)
                        stats["partial"] += 0 if ok else 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    with lock:
                        stats["requests"] += 1
                        stats["failed"] += 1
                        if len(stats["errors"]) < 5:
                            stats["errors"].append(repr(e)[:300])

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    status = PredictClient(f"127.0.0.1:{port}", "m", timeout=30.0, retries=3)
    rss = [(0, rss_kib(server.pid))]
    load_seconds = []
    try:
        for v in range(1, swaps + 1):
            source, target = os.path.join(template_dir, str(v % templates)), os.path.join(base, str(v))
            started = time.monotonic()
            if v % 2:  # atomic: complete before it appears
                shutil.copytree(source, os.path.join(base, f".tmp-{v}"))
                os.replace(os.path.join(base, f".tmp-{v}"), target)
            else:  # like cp -r: the graph first, the variables a moment later
                os.makedirs(target)
                for entry in os.listdir(source):
                    if entry != "variables":
                        src = os.path.join(source, entry)
                        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(target, entry))
                time.sleep(0.05)
                shutil.copytree(os.path.join(source, "variables"), os.path.join(target, "variables"))
            while True:
                states = dict(status.status())
                if states.get(v) == "AVAILABLE":
                    break
                if time.monotonic() - started > 120:
                    raise RuntimeError(f"version {v} not served after 120 s: {states}; {''.join(log)[-2000:]}")
                time.sleep(0.01)
            load_seconds.append(time.monotonic() - started)
            if v >= 3:
                remove_version(base, v - 2)  # keep the newest two on disk
            if v % 50 == 0:
                rss.append((v, rss_kib(server.pid)))
                print(f"[swaps] {v}/{swaps} versions, {stats['requests']} requests, {stats['failed']} failed, "
                      f"{stats['partial']} partial, server RSS {rss[-1][1] / 1024:.0f} MiB", flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        status.close()
        alive = server.poll() is None
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    first = [r for v, r in rss if 0 < v <= max(100, swaps // 10)] or [rss[0][1]]
    last = [r for v, r in rss if v > swaps - max(100, swaps // 10)] or [rss[-1][1]]
    loads = sorted(load_seconds)
    return {
        "swaps": swaps, "clients": clients, "requests": stats["requests"], "failed_requests": stats["failed"],
        "partial_versions_served": stats["partial"], "distinct_versions_answered": len(stats["versions_seen"]),
        "errors": stats["errors"], "server_alive": alive,
        "rss_mib": [(v, round(r / 1024, 1)) for v, r in rss],
        "rss_first_mib": round(sum(first) / len(first) / 1024, 1), "rss_last_mib": round(sum(last) / len(last) / 1024, 1),
        "swap_to_served_seconds_p50": round(loads[len(loads) // 2], 3),
        "swap_to_served_seconds_max": round(loads[-1], 3),
        "load_failures_logged": sum("failed" in l and "loading version" in l for l in log),
        "seconds": round(time.monotonic() - t0, 1),
    }


# -- part 4: malformed requests ----------------------------------------------------------------------


def part_malformed(root, count):
    import grpc
    import numpy as np
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from taskology_tf.serving.codec import to_tensor_proto

    t0 = time.monotonic()
    workdir = os.path.join(root, "normals_run")
    argv = [sys.executable, "-m", "taskology_tf.cli", "export", "--gin_file", "table3_baseline", "--workdir", workdir,
            "--allow_untrained"] + [x for b in TINY for x in ("--gin_param", b)]
    subprocess.run(argv, check=True, capture_output=True, env=env(), timeout=1800)
    base = os.path.join(workdir, "normals", "export")
    limit = 8 * 2**20
    server, port, log = start_server(base, ["--max_message_bytes", str(limit)], name="normals")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 2**20),
                                                                  ("grpc.max_receive_message_length", 64 * 2**20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
    rng = np.random.default_rng(0)

    def request(image=None, name="normals", signature="", key="image", version=None, label=None, filters=()):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = name
        r.model_spec.signature_name = signature
        if version is not None:
            r.model_spec.version.value = version
        if label is not None:
            r.model_spec.version_label = label
        r.output_filter.extend(filters)
        if image is not None:
            r.inputs[key].CopyFrom(image if not isinstance(image, np.ndarray) else to_tensor_proto(image))
        return r

    def declared(shape, dtype=types_pb2.DT_UINT8, content=b""):
        proto = to_tensor_proto(np.zeros((0,), np.uint8))
        proto.dtype = dtype
        del proto.tensor_shape.dim[:]
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        proto.tensor_content = content
        return proto

    good = rng.integers(0, 256, (2, 32, 64, 3), dtype=np.uint8)
    kinds = {
        "unknown model": (request(good, name="nope"), grpc.StatusCode.NOT_FOUND),
        "unknown signature": (request(good, signature="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong input name": (request(good, key="img"), grpc.StatusCode.INVALID_ARGUMENT),
        "float32 instead of uint8": (request(good.astype(np.float32)), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong rank": (request(good[0]), grpc.StatusCode.INVALID_ARGUMENT),
        "31x63 image (not multiples of 32)": (request(good[:, :31, :63]), grpc.StatusCode.INVALID_ARGUMENT),
        "40x72 image (not multiples of 32)": (request(rng.integers(0, 256, (1, 40, 72, 3), dtype=np.uint8)),
                                              grpc.StatusCode.INVALID_ARGUMENT),
        "content shorter than its shape": (request(declared([2, 32, 64, 3], content=b"\0" * 100)),
                                           grpc.StatusCode.INVALID_ARGUMENT),
        "declared batch 12000, no content (41 bytes)": (request(declared([12000, 32, 64, 3])),
                                                        grpc.StatusCode.INVALID_ARGUMENT),
        "declared 3e10 elements, no content": (request(declared([1, 100000, 100000, 3])),
                                               grpc.StatusCode.INVALID_ARGUMENT),
        "negative dimension": (request(declared([1, -1, 64, 3])), grpc.StatusCode.INVALID_ARGUMENT),
        "unsupported dtype (complex64)": (request(declared([1, 32, 64, 3], types_pb2.DT_COMPLEX64)),
                                          grpc.StatusCode.INVALID_ARGUMENT),
        "reply over the 8 MiB limit (12 x 256x256, 2.3 MiB in)": (
            request(rng.integers(0, 256, (12, 256, 256, 3), dtype=np.uint8)), grpc.StatusCode.INVALID_ARGUMENT),
        "request over the 8 MiB limit (9 MiB)": (request(rng.integers(0, 256, (48, 256, 256, 3), dtype=np.uint8)),
                                         grpc.StatusCode.RESOURCE_EXHAUSTED),
        "version not loaded": (request(good, version=99), grpc.StatusCode.NOT_FOUND),
        "version label": (request(good, label="stable"), grpc.StatusCode.INVALID_ARGUMENT),
        "unknown output_filter": (request(good, filters=["nope"]), grpc.StatusCode.INVALID_ARGUMENT),
        "undecodable bytes": (b"\xff\xff\xff\xff not a PredictRequest", grpc.StatusCode.INTERNAL),
    }
    results = {}
    rss_before = rss_kib(server.pid)
    for kind, (req, want) in kinds.items():
        codes, started, example = {}, time.monotonic(), None
        for _ in range(count):
            try:
                (raw if isinstance(req, bytes) else stub.Predict)(req, timeout=120)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
                example = example or e.details()[:200]
            codes[code.name] = codes.get(code.name, 0) + 1
        ok_after = stub.Predict(request(good), timeout=120).model_spec.version.value == 0
        results[kind] = {"expected": want.name, "codes": codes, "all_right": codes == {want.name: count},
                         "valid_request_after": ok_after, "ms_per_request": round(
                             1000 * (time.monotonic() - started) / count, 1), "example": example}
        print(f"[malformed] {kind}: {codes} (expected {want.name}), valid request after: {ok_after}", flush=True)
    alive = server.poll() is None
    rss_after = rss_kib(server.pid)
    channel.close()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    tracebacks = sum("Traceback" in l for l in log)
    return {"per_kind": count, "kinds": results, "server_alive": alive,
            "all_right": all(r["all_right"] and r["valid_request_after"] for r in results.values()),
            "server_rss_mib_before_after": [round(rss_before / 1024, 1), round(rss_after / 1024, 1)],
            "tracebacks_in_server_log": tracebacks, "seconds": round(time.monotonic() - t0, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="kills,corrupt,swaps,malformed", help="which parts, comma-separated")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of the trainer (default 20)")
    p.add_argument("--steps", type=int, default=200, help="training steps of the killed run (default 200)")
    p.add_argument("--checkpoint_every", type=int, default=10, help="checkpoint interval in steps (default 10)")
    p.add_argument("--swaps", type=int, default=1000, help="versions copied in (default 1000)")
    p.add_argument("--clients", type=int, default=16, help="client threads during the swaps (default 16)")
    p.add_argument("--malformed", type=int, default=100, help="requests of each malformed kind (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--out", default=None, help="JSON file for the figures (default: <tmp>/fault_injection.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()

    from taskology_tf import runtime

    runtime.configure()
    runtime.import_tensorflow()
    root = tempfile.mkdtemp(prefix="taskology_faults_")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    figures = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
               "load_average_at_start": os.getloadavg()}
    try:
        if "kills" in parts:
            figures["kills"] = part_kills(os.path.join(root, "kills"), args.kills, args.steps, args.checkpoint_every,
                                          args.seed)
        if "corrupt" in parts:
            figures["corrupt"] = part_corrupt(os.path.join(root, "corrupt"), args.checkpoint_every)
        if "swaps" in parts:
            os.makedirs(os.path.join(root, "swaps"))
            figures["swaps"] = part_swaps(os.path.join(root, "swaps"), args.swaps, args.clients)
        if "malformed" in parts:
            os.makedirs(os.path.join(root, "malformed"))
            figures["malformed"] = part_malformed(os.path.join(root, "malformed"), args.malformed)
    finally:
        figures["load_average_at_end"] = os.getloadavg()
        out = args.out or os.path.join(tempfile.gettempdir(), "fault_injection.json")
        with open(out, "w") as f:
            json.dump(figures, f, indent=2, default=str)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ("events", "kinds", "cases", "rss_mib")}
                      if isinstance(v, dict) else v for k, v in figures.items()}, indent=2, default=str))
    print(out)


if __name__ == "__main__":
    main()
