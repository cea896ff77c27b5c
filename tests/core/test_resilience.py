"""Nothing lost: exact resume of every data stream, damaged checkpoints, stops on SIGINT/SIGTERM."""

import glob
import logging
import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management

from taskology_tf.core import stopping
from taskology_tf.core.collective import Collective
from taskology_tf.core.trainer import TRACING_NOTE, CheckpointDamagedError, TaskTrainer


def trainer_a(toy, workdir, **kwargs):
    kwargs.setdefault("checkpoint_every", 2)
    return TaskTrainer(toy.task_a, [], workdir=workdir, dedicated=toy.dataset(8, 1), batch_size=3, **kwargs)


def collective(toy, workdir, checkpoint_every=2):
    rel = toy.relation()
    ta = TaskTrainer(toy.task_a, [rel], workdir=f"{workdir}/a", dedicated=toy.dataset(8, 1), batch_size=3,
                     checkpoint_every=checkpoint_every)
    tb = TaskTrainer(toy.task_b, [rel], workdir=f"{workdir}/b", dedicated=toy.dataset(6, 2), batch_size=4,
                     checkpoint_every=checkpoint_every)
    return Collective([ta, tb], mediator=toy.dataset(10, 5, keys=("id", "image")), mediator_batch_size=3)


def weights(trainers):
    return [w for t in trainers for w in t.model.get_weights()]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_resumed_trainer_continues_its_data_stream_exactly(toy, tmp_path):
    """Shuffled data, batches across epoch ends: 4 + 5 steps in two processes equal 9 steps in one."""
    whole = trainer_a(toy, str(tmp_path / "whole"))
    whole.train(9)
    first = trainer_a(toy, str(tmp_path / "split"))
    first.train(4)
    first.close()
    second = trainer_a(toy, str(tmp_path / "split"))
    assert second.step == 4 and second.data_drawn.numpy().tolist() == [4, 0]
    second.train(9)
    assert_same(weights([whole]), weights([second]))


def test_a_relative_workdir_resumes_and_sets_nothing_aside(toy, tmp_path, monkeypatch):
    """`--workdir runs/x` (relative, as in the README): its checkpoints are found, not taken for damaged ones."""
    monkeypatch.chdir(tmp_path)
    first = trainer_a(toy, os.path.join("runs", "x"))
    first.train(4)
    first.close()
    second = trainer_a(toy, os.path.join("runs", "x"))
    assert second.step == 4 and second.restored_from.endswith("ckpt-4")
    assert not os.path.exists(os.path.join("runs", "x", "ckpt", "damaged"))
    second.close()


def test_resumed_collective_continues_the_shared_mediator_stream_exactly(toy, tmp_path):
    whole = collective(toy, str(tmp_path / "whole"))
    whole.train(7, progress=False)
    first = collective(toy, str(tmp_path / "split"))
    first.train(3, progress=False)
    first.close()
    second = collective(toy, str(tmp_path / "split"))
    assert second.step == 3 and second._mediator_skip == 3
    second.train(7, progress=False)
    assert_same(weights(whole.trainers.values()), weights(second.trainers.values()))


def test_collective_brings_trainers_ahead_back_to_the_common_checkpoint(toy, tmp_path, caplog):
    """Killed between two trainers' saves: a saved step 4, b only step 2. The resumed run restarts both at 2."""
    workdir = str(tmp_path)
    coll = collective(toy, workdir)
    coll.train(2, progress=False)
    at_two = weights([coll.trainers["a"]])
    coll.train(4, progress=False)
    coll.close()
    b_ckpt = os.path.join(workdir, "b", "ckpt")
    checkpoint_management.update_checkpoint_state_internal(
        save_dir=b_ckpt, model_checkpoint_path=os.path.join(b_ckpt, "ckpt-2"),
        all_model_checkpoint_paths=[os.path.join(b_ckpt, "ckpt-2")], save_relative_paths=True)
    for f in glob.glob(os.path.join(b_ckpt, "ckpt-4.*")):
        os.remove(f)
    with caplog.at_level(logging.INFO, logger="taskology_tf.core.collective"):
        again = collective(toy, workdir)
    assert {t.step for t in again.trainers.values()} == {2}
    assert "Task 'a': back to step 2" in caplog.text
    assert_same(at_two, weights([again.trainers["a"]]))
    assert again._mediator_skip == 2


def damage(path, how):
    data = open(path, "rb").read()
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("part, how", [("data", "truncate"), ("index", "truncate"), ("data", "flip")])
def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact(toy, tmp_path, caplog, part, how):
    workdir = str(tmp_path)
    trainer = trainer_a(toy, workdir)
    trainer.train(4)
    at_four = weights([trainer])
    trainer.train(6)
    trainer.close()
    bad = glob.glob(os.path.join(workdir, "ckpt", f"ckpt-6.{part}*"))[0]
    damage(bad, how)
    with caplog.at_level(logging.WARNING, logger="taskology_tf.core.trainer"):
        again = trainer_a(toy, workdir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"checkpoint file {bad} is damaged" in warnings[0] and "resuming from ckpt-4 (step 4)" in warnings[0]
    assert again.step == 4 and again.restored_from.endswith("ckpt-4")
    assert_same(at_four, weights([again]))
    assert os.path.exists(os.path.join(workdir, "ckpt", "damaged", os.path.basename(bad)))
    again.train(8)  # saving goes on past the damaged step
    assert tf.train.latest_checkpoint(os.path.join(workdir, "ckpt")).endswith("ckpt-8")
    assert sorted(os.path.basename(p) for p in again._manager.checkpoints) == ["ckpt-4", "ckpt-6", "ckpt-8"]


def test_every_checkpoint_damaged_is_an_error_not_a_silent_restart(toy, tmp_path):
    workdir = str(tmp_path)
    trainer = trainer_a(toy, workdir)
    trainer.train(4)
    trainer.close()
    for path in glob.glob(os.path.join(workdir, "ckpt", "ckpt-*.index")):
        damage(path, "truncate")
    with pytest.raises(CheckpointDamagedError, match=r"every checkpoint under .* is damaged .*ckpt-2.index"):
        trainer_a(toy, workdir)


def test_checkpoint_from_before_data_positions_still_resumes(toy, tmp_path, caplog):
    workdir = str(tmp_path)
    trainer = trainer_a(toy, workdir)
    trainer.train(2)
    trainer.close()
    legacy = tf.train.Checkpoint(**trainer._ckpt_objects)  # what older versions wrote
    path = legacy.save(os.path.join(workdir, "legacy", "ckpt"))
    fresh = trainer_a(toy, str(tmp_path / "other"))
    with caplog.at_level(logging.INFO, logger="taskology_tf.core.trainer"):
        fresh.restore(path)
    assert fresh.step == 2 and fresh.data_drawn.numpy().tolist() == [0, 0]
    assert "predates saved data positions" in caplog.text
    assert_same(weights([trainer]), weights([fresh]))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_finishes_the_step_saves_and_stops(toy, tmp_path, monkeypatch, capsys, signum, code):
    coll = collective(toy, str(tmp_path), checkpoint_every=100)
    rounds = Collective.round

    def round_then_signal(self):
        result = rounds(self)
        if self.step == 3:
            os.kill(os.getpid(), signum)  # arrives during the step's work: handled once it is done
        return result

    monkeypatch.setattr(Collective, "round", round_then_signal)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a pytest-xdist worker
    with stopping.handle_signals():
        with pytest.raises(stopping.TrainingStopped) as info:
            coll.train(50, progress=False)
    assert info.value.step == 3 and info.value.exit_code == code
    assert "received: stopping after this step and saving a checkpoint" in capsys.readouterr().err
    for name in ("a", "b"):
        assert os.path.exists(os.path.join(str(tmp_path), name, "ckpt", "ckpt-3.index"))
    assert {t.step for t in coll.trainers.values()} == {3}
    assert signal.getsignal(signal.SIGINT) == before  # restored afterwards
    coll.close()


def test_a_signal_outside_the_training_loop_stops_at_once(toy):
    with stopping.handle_signals():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        with pytest.raises(stopping.TrainingStopped, match="stopped by SIGTERM before training started"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass


def test_progress_bar_says_the_first_step_is_tracing(toy, tmp_path, capsys):
    trainer = trainer_a(toy, None)
    trainer.train(1, progress=True)
    assert TRACING_NOTE in capsys.readouterr().err
