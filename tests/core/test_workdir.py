"""Work folders: a lock per trainer folder naming its holder, stale locks taken over, clear creation errors."""

import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from taskology_tf.core import workdir
from taskology_tf.core.trainer import TaskTrainer

REPO = pathlib.Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from taskology_tf.core.workdir import lock
held = lock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that takes the lock of a folder and keeps it; yields (process, folder)."""
    folder = str(tmp_path / "run" / "depth")
    process = subprocess.Popen([sys.executable, "-c", HOLDER, folder], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process, folder
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_second_holder_is_refused_with_the_holders_pid_and_host(holder):
    process, folder = holder
    with pytest.raises(workdir.WorkdirLockedError) as info:
        workdir.lock(folder)
    message = str(info.value)
    assert f"is in use by another trainer: PID {process.pid} on host {socket.gethostname()}" in message
    assert "choose another --workdir" in message
    assert info.value.holder["pid"] == process.pid


def test_trainer_on_a_locked_folder_stops_at_once(holder, toy):
    process, folder = holder
    with pytest.raises(workdir.WorkdirLockedError, match=f"PID {process.pid}"):
        TaskTrainer(toy.task_a, [], workdir=folder, dedicated=toy.dataset(8, 1), batch_size=4)
    # Reading it (evaluation, export) does not need the lock.
    reader = TaskTrainer(toy.task_a, [], workdir=folder, dedicated=toy.dataset(8, 1), batch_size=4, lock_workdir=False)
    assert reader.step == 0


def test_lock_of_a_killed_holder_is_taken_over(holder, caplog):
    process, folder = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    with caplog.at_level(logging.INFO, logger="taskology_tf.core.workdir"):
        held = workdir.lock(folder)
    try:
        assert f"taking over the lock left by PID {process.pid}" in caplog.text and "no longer running" in caplog.text
        record = json.loads(pathlib.Path(folder, workdir.LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    finally:
        held.release()


def test_lock_is_reentrant_in_one_process_and_released_by_the_last_holder(tmp_path):
    folder = str(tmp_path / "task")
    first = workdir.lock(folder)
    second = workdir.lock(folder)
    first.release()
    first.release()  # idempotent
    check = [sys.executable, "-c", "import sys\nfrom taskology_tf.core.workdir import lock\ntry:\n    lock(sys.argv[1])\n"
             "except Exception as e:\n    print(type(e).__name__)\nelse:\n    print('free')", folder]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run(check, capture_output=True, text=True, env=env).stdout.strip() == "WorkdirLockedError"
    second.release()
    assert subprocess.run(check, capture_output=True, text=True, env=env).stdout.strip() == "free"


def test_trainer_releases_its_lock_when_closed(toy, tmp_path):
    folder = str(tmp_path / "a")
    trainer = TaskTrainer(toy.task_a, [], workdir=folder, dedicated=toy.dataset(8, 1), batch_size=4)
    assert os.path.realpath(folder) in workdir._held
    trainer.close()
    assert os.path.realpath(folder) not in workdir._held


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "plain_file").write_text("not a folder")
    with pytest.raises(workdir.WorkdirError, match=r"cannot use --workdir .*/plain_file/run: .*/plain_file is a file, "
                                                   r"not a folder"):
        workdir.prepare(str(tmp_path / "plain_file" / "run"))
    with pytest.raises(workdir.WorkdirError, match="is a file, not a folder"):
        workdir.prepare(str(tmp_path / "plain_file"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's sysfs (no folders can be made in it)")
def test_an_unwritable_place_is_a_clear_error():
    with pytest.raises(workdir.WorkdirError, match=r"cannot create --workdir /sys/taskology_test_run: "
                                                   r"(permission denied|.*read-only)"):
        workdir.prepare("/sys/taskology_test_run")


def test_a_trainer_that_fails_to_start_leaves_its_folder_unlocked(toy, tmp_path):
    folder = str(tmp_path / "a")
    first = TaskTrainer(toy.task_a, [], workdir=folder, dedicated=toy.dataset(8, 1), batch_size=4)
    first.train(1)
    first.close()
    with pytest.raises(RuntimeError, match="does not match the task's network"):
        TaskTrainer(toy.task_b, [], workdir=folder, dedicated=toy.dataset(8, 1), batch_size=4)
    assert os.path.realpath(folder) not in workdir._held
