"""`taskology launch`: servers and trainers as real separate processes on 127.0.0.1, restarts, clean shutdown."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from taskology_tf.launch.launcher import (
    LaunchError,
    Launcher,
    LaunchPlan,
    _last_update,
    _latest_step,
    format_table,
    launch_main,
    plan_launch,
)
from taskology_tf.testing import TINY_TABLE3, gin_param_flags

TINY = [
    *TINY_TABLE3,
    "TaskTrainer.export_every = 100",  # versions at the start and the end only: exports are the slow part
    "ServingPeer.timeout = 2.0",
    "ServingPeer.retries = 0",
]


def _flags(*params):
    return ["--gin_file", "table3_consistency", *gin_param_flags(*params, base=TINY)]


def _processes_mentioning(text):
    """PIDs of live processes whose command line contains ``text`` (reads /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append((int(entry), cmdline))
    return pids


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- planning (in-process, no children) -----------------------------------------------------------


def test_plan_reads_tasks_peers_and_steps_from_gin():
    plan = plan_launch(["table3_consistency"], ["Experiment.train_steps = 7"])
    assert plan.tasks == ["depth", "normals"] and plan.served == ["depth", "normals"]
    assert plan.peers == {"depth": ["normals"], "normals": ["depth"]}
    assert plan.train_steps == 7 and plan.remote == {}


def test_plan_with_a_remote_peer_serves_only_what_is_launched_here():
    plan = plan_launch(["table3_consistency"], remote={"normals": "10.0.0.2:8500"})
    assert plan.tasks == ["depth"] and plan.served == ["depth"]  # the remote normals job reads our depth
    assert plan.train_steps == 1500  # table3_common.gin


def test_plan_without_relations_starts_no_servers():
    plan = plan_launch(["table3_baseline"], tasks=["normals"])
    assert plan.tasks == ["normals"] and plan.served == [] and plan.peers["normals"] == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tasks=["depth"]), "give their servers with --peer"),
        (dict(tasks=["segmentation"]), "not tasks of the experiment"),
        (dict(remote={"flow": "h:1"}), "not tasks of the experiment"),
        (dict(tasks=["depth"], remote={"depth": "h:1", "normals": "h:2"}), "runs either here or elsewhere"),
        (dict(remote={"depth": "h:1", "normals": "h:2"}), "nothing to launch"),
    ],
)
def test_plan_rejects_inconsistent_flags(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        plan_launch(["table3_consistency"], **kwargs)


def test_latest_step_reads_checkpoint_index_and_export_versions(tmp_path):
    assert _latest_step(str(tmp_path)) == 0
    (tmp_path / "ckpt").mkdir()
    index = 'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-2"\n'
    (tmp_path / "ckpt" / "checkpoint").write_text(index)
    assert _latest_step(str(tmp_path)) == 4
    for name in ("2", "6", "tmp-8"):  # temporary exports do not count
        (tmp_path / "export" / name).mkdir(parents=True)
    assert _latest_step(str(tmp_path)) == 6


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain line\n", "plain line"),
        ("crlf line\r\n", "crlf line"),
        ("rendering:   0%|  | 0/8\rrendering:  50%|# | 4/8\rrendering: 100%|##| 8/8\n", "rendering: 100%|##| 8/8"),
        ("\r   \r\n", None),
        ("\n", ""),
    ],
)
def test_progress_bars_in_child_output_collapse_to_their_last_state(raw, shown):
    assert _last_update(raw) == shown


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _launcher(tmp_path, out, **kwargs):
    plan = LaunchPlan(tasks=["depth", "normals"], peers={"depth": [], "normals": []}, served=[], remote={},
                      train_steps=6)
    (tmp_path / "depth" / "ckpt").mkdir(parents=True)
    (tmp_path / "depth" / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    return Launcher(plan, str(tmp_path), [], out=out, **kwargs)


def test_progress_is_a_status_line_when_not_a_terminal(tmp_path):
    out = io.StringIO()
    launcher = _launcher(tmp_path, out, status_every=3600)
    launcher.trainers["normals"].restarts = 2
    launcher.show_progress()
    launcher.show_progress()  # unchanged and too soon: not repeated
    (tmp_path / "depth" / "export" / "6").mkdir(parents=True)
    launcher.trainers["depth"].state = "done"
    launcher.show_progress(final=True)
    assert out.getvalue().splitlines() == [
        "[launch] progress: depth 4/6 | normals 0/6 (2 restarts)",
        "[launch] progress: depth 6/6 done | normals 0/6 (2 restarts)",
    ]


def test_first_status_line_is_printed_on_a_freshly_booted_host(tmp_path, monkeypatch):
    # time.monotonic() counts from boot on Linux: on a fresh machine it is below status_every.
    monkeypatch.setattr("taskology_tf.launch.launcher.time.monotonic", lambda: 0.5)
    out = io.StringIO()
    launcher = _launcher(tmp_path, out, status_every=3600)
    launcher.show_progress()
    assert out.getvalue().splitlines() == ["[launch] progress: depth 4/6 | normals 0/6"]


def test_progress_is_one_bar_per_task_on_a_terminal(tmp_path):
    out = _Terminal()
    launcher = _launcher(tmp_path, out)
    launcher.show_progress()
    assert set(launcher._bars) == {"depth", "normals"} and launcher._bars["depth"].n == 4
    launcher.emit("[depth:trainer] a line")  # printed above the bars
    launcher._close_bars()
    text = out.getvalue()
    assert "[depth:trainer] a line" in text and "4/6" in text and "0/6" in text


def test_no_progress_shows_nothing(tmp_path):
    out = _Terminal()
    launcher = _launcher(tmp_path, out, progress=False)
    launcher.show_progress(final=True)
    assert out.getvalue() == "" and not launcher._bars


def test_format_table_lists_each_task():
    table = format_table({"step": {"depth": 6}, "metrics": {"depth": {"abs_rel": 0.25}},
                          "restarts": {"depth": 1, "normals": 3}})
    lines = table.splitlines()
    assert lines[0].split() == ["task", "step", "restarts", "metrics"]
    assert lines[1].split() == ["depth", "6", "1", "abs_rel=0.25"]
    assert lines[2].split()[:3] == ["normals", "-", "3"] and "(no metrics)" in lines[2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gin_file", "no_such_experiment"], "gin file 'no_such_experiment' not found"),
        (["--gin_file", "table3_consistency", "--gin_param", "Experiment.no_such_param = 1"], "bad gin configuration"),
        (["--gin_file", "table3_consistency", "--peer", "normals"], "expected TASK=HOST:PORT"),
        (["--gin_file", "table3_consistency", "--tasks", "depth"], "--peer TASK=HOST:PORT"),
        (["--gin_file", "table3_consistency", "--max_restarts", "-1"], "--max_restarts must be >= 0"),
    ],
)
def test_bad_configuration_exits_2_without_starting_anything(tmp_path, capsys, argv, message):
    workdir = tmp_path / "run"
    assert launch_main([*argv, "--workdir", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.startswith("taskology launch: error:")
    assert "[launch] started" not in captured.out
    assert not workdir.exists() and _processes_mentioning(str(workdir)) == []


# -- real processes ---------------------------------------------------------------------------------


def test_launch_depth_and_normals_to_the_end(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    code = launch_main([*_flags("Experiment.train_steps = 6"), "--workdir", workdir])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    for task in ("depth", "normals"):
        result = json.load(open(os.path.join(workdir, task, "metrics.json")))
        assert result["step"] == 6
        assert f"[{task}:trainer]" in out and f"[{task}:server]" in out
        assert f"the server of {task!r} serves at 127.0.0.1:" in out
    launch = json.load(open(os.path.join(workdir, "launch_metrics.json")))
    assert launch["step"] == {"depth": 6, "normals": 6} and launch["restarts"] == {"depth": 0, "normals": 0}
    assert "abs_rel" in launch["metrics"]["depth"] and "within_11.25" in launch["metrics"]["normals"]
    assert set(launch["servers"]) == {"depth", "normals"}
    for task, peer in (("depth", "normals"), ("normals", "depth")):  # what each trainer cost, per peer
        throughput = launch["throughput"][task]
        assert throughput["steps"] == 6 and throughput["timed_steps"] == 5 and throughput["steps_per_second"] > 0
        traffic = launch["peer_traffic"][task][peer]
        # Whether a peer's first version is served before 6 steps end depends on the host's load, so only the
        # accounting is checked here (exact byte counts: tests/serving); a trainer that got answers got tensors.
        assert traffic["requests"] >= traffic["answers"] >= 0
        if traffic["answers"]:
            assert traffic["bytes_received"] > traffic["bytes_sent"] > 0
    # The progress view's last line, then the table and the path of launch_metrics.json.
    assert "[launch] progress: depth 6/6 done | normals 6/6 done" in out
    assert any(line.split()[:3] == ["depth", "6", "0"] for line in out.splitlines())
    assert out.strip().splitlines()[-1] == os.path.join(workdir, "launch_metrics.json")
    assert _processes_mentioning(workdir) == []


def test_killed_trainer_resumes_and_a_remote_peer_gets_no_process(tmp_path, capsys):
    """depth runs here, normals "elsewhere" (nobody listens there: depth trains on its labels alone)."""
    workdir = str(tmp_path / "run")
    steps = 10
    killed = {}

    def kill_depth_after_first_checkpoint():
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not killed:
            if _latest_step(os.path.join(workdir, "depth")) >= 2:
                for pid, cmdline in _processes_mentioning(workdir):
                    if " train " in cmdline and "--task depth" in cmdline:
                        os.kill(pid, signal.SIGKILL)
                        killed["pid"] = pid
            time.sleep(0.05)

    killer = threading.Thread(target=kill_depth_after_first_checkpoint, daemon=True)
    killer.start()
    code = launch_main([*_flags(f"Experiment.train_steps = {steps}"), "--workdir", workdir, "--no_progress",
                        "--peer", f"normals=127.0.0.1:{_free_port()}"])
    killer.join(timeout=5)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert killed, "the depth trainer finished before it could be killed"
    assert "the trainer of 'depth' was killed by SIGKILL; restart 1/3, resuming from its checkpoint at step" in out
    resumed = int(out.split("resuming from its checkpoint at step ")[1].split(".")[0])
    assert 2 <= resumed < steps
    # The restarted trainer restored step `resumed` and published it as its first version.
    versions = sorted(int(v) for v in os.listdir(os.path.join(workdir, "depth", "export")) if v.isdigit())
    assert resumed in versions and versions[-1] == steps
    launch = json.load(open(os.path.join(workdir, "launch_metrics.json")))
    assert launch["step"] == {"depth": steps} and launch["restarts"] == {"depth": 1}
    assert launch["remote_peers"] == {"normals": launch["remote_peers"]["normals"]}
    # Nothing was started for the remote task; depth was served for it.
    assert "[normals:" not in out and not os.path.exists(os.path.join(workdir, "normals"))
    assert "[depth:server] port=" in out
    assert "progress: depth" not in out  # --no_progress
    assert _processes_mentioning(workdir) == []


def test_sigterm_to_the_launcher_stops_every_child_and_returns_130(tmp_path):
    workdir = str(tmp_path / "run")
    argv = [sys.executable, "-m", "taskology_tf.launch.launcher", *_flags("Experiment.train_steps = 1000"),
            "--workdir", workdir, "--tasks", "depth", "--peer", f"normals=127.0.0.1:{_free_port()}", "--no_progress"]
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in launcher.stdout:  # wait until both children run
            lines.append(line)
            if "started the trainer of 'depth'" in line:
                break
        children = [pid for pid, _ in _processes_mentioning(workdir) if pid != launcher.pid]
        assert len(children) == 2, "".join(lines)[-3000:]  # the depth server and trainer
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    lines.append(out)
    assert launcher.returncode == 130, "".join(lines)[-3000:]
    assert "[launch] interrupted: stopping every process." in out
    assert _processes_mentioning(workdir) == []


def _fake_python(tmp_path, body):
    """An executable standing in for the children's Python: runs ``body`` (sh) whatever the arguments."""
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def _one_trainer(tmp_path, python, max_restarts=3):
    plan = LaunchPlan(tasks=["depth"], peers={"depth": []}, served=[], remote={}, train_steps=6)
    out = io.StringIO()
    return Launcher(plan, str(tmp_path / "run"), [], python=python, max_restarts=max_restarts, progress=False,
                    out=out), out


def test_identical_failure_without_progress_is_not_retried(tmp_path):
    python = _fake_python(tmp_path, 'echo "taskology: error: checkpoint file x/ckpt-14.index is damaged"\n'
                                    'echo "(set TASKOLOGY_TRACEBACK=1 for the traceback)"\nexit 1')
    launcher, out = _one_trainer(tmp_path, python)
    assert launcher.run() == 1
    text = out.getvalue()
    assert launcher.trainers["depth"].restarts == 1  # once, in case it was transient; then it is the same again
    assert "exited with code 1 again with the same error and no new checkpoint" in text
    assert '"taskology: error: checkpoint file x/ckpt-14.index is damaged"' in text and "not restarting it" in text


def test_trainer_stopped_from_outside_with_exit_0_is_restarted(tmp_path):
    """A trainer that got SIGTERM from someone else saves and exits 0 before its last step: not 'finished'."""
    python = _fake_python(tmp_path, "exit 0")
    launcher, out = _one_trainer(tmp_path, python, max_restarts=2)
    assert launcher.run() == 1
    text = out.getvalue()
    assert "exited with code 0 at step 0 of 6 (stopped from outside); restart 1/2" in text
    assert "restarted 2 time(s) already" in text and "finished" not in text
