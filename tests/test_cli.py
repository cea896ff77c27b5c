"""The `taskology` command end to end on tiny configs, and its error messages."""

import json
import os
import sys
import textwrap

import pytest

import tensorflow as tf

from taskology_tf.cli import main
from taskology_tf.testing import TINY_TABLE3, gin_param_flags

TINY = [*TINY_TABLE3, "TaskTrainer.summary_every = 1"]


def _args(*gin_params):
    return gin_param_flags(*gin_params, base=TINY)


def test_train_resume_eval_export(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    common = ["--gin_file", "table3_consistency", "--workdir", workdir]
    assert main(["train", *common, *_args("Experiment.train_steps = 3"), "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == os.path.join(workdir, "metrics.json")
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert metrics["step"] == 3 and {"depth", "normals"} == set(metrics["metrics"])
    assert "within_11.25" in metrics["metrics"]["normals"] and "abs_rel" in metrics["metrics"]["depth"]
    for task in ("depth", "normals"):
        assert os.path.exists(os.path.join(workdir, task, "ckpt", "ckpt-3.index"))
        assert os.listdir(os.path.join(workdir, task, "logs", "train"))
    assert os.path.exists(os.path.join(workdir, "operative_config.gin"))

    # Rerunning with more steps resumes from step 3.
    assert main(["train", *common, *_args("Experiment.train_steps = 5"), "--no_progress"]) == 0
    assert os.path.exists(os.path.join(workdir, "depth", "ckpt", "ckpt-5.index"))

    assert main(["eval", *common, *_args()]) == 0
    ev = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    assert ev["step"] == {"depth": 5, "normals": 5}

    assert main(["export", *common, *_args(), "--task", "normals"]) == 0
    export_dir = os.path.join(workdir, "normals", "export", "5")
    assert capsys.readouterr().out.strip().splitlines()[-1] == export_dir
    loaded = tf.saved_model.load(export_dir)
    fn = loaded.signatures["serving_default"]
    out = fn(image=tf.zeros((2, 32, 64, 3), tf.uint8))
    assert set(out) == {"normals"} and out["normals"].shape == (2, 32, 64, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive multiples of 32"):
        fn(image=tf.zeros((2, 31, 63, 3), tf.uint8))  # the U-Net's sizes, checked by the signature itself
    assert not [d for d in os.listdir(os.path.dirname(export_dir)) if not d.isdigit()]


def test_bad_gin_binding(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path), "--gin_param", "Experimnt.train_steps = 3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad gin configuration" in err and "Experimnt" in err


def test_missing_gin_file(tmp_path, capsys):
    assert main(["train", "--gin_file", "no_such_experiment", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "table3_consistency" in err


def test_unknown_task(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path), *_args("Experiment.tasks = ['depht']")])
    assert code == 1
    err = capsys.readouterr().err
    assert "Unknown task 'depht'" in err
    known = err.split("Known tasks:", 1)[1].split(".", 1)[0]  # also names other tests registered (field_0, ...)
    assert {"depth", "detection", "motion", "normals"} <= {name.strip() for name in known.split(",")}


def test_relation_without_its_tasks(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_consistency", "--workdir", str(tmp_path), *_args("Experiment.tasks = ['depth']")])
    assert code == 1
    assert "add ['normals'] to Experiment.tasks" in capsys.readouterr().err


def test_missing_dataset_files(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path), *_args(
        "depth/TaskTrainer.dedicated = @tfrecords()", f"tfrecords.paths = '{tmp_path}/nothing/*.tfrecord'")])
    assert code == 1
    err = capsys.readouterr().err
    assert "No dataset files match" in err and "taskology data synth" in err


def test_wrong_image_size(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path), *_args("synthetic.height = 40")])
    assert code == 1
    assert "multiple of 32" in capsys.readouterr().err


def test_data_synth_then_train_from_records(tmp_path, capsys):
    out_dir = str(tmp_path / "records")
    assert main(["data", "synth", "--out_dir", out_dir, "--style", "sim", "--num_examples", "8", "--height", "32", "--width", "64"]) == 0
    paths = capsys.readouterr().out.split()
    assert paths and all(os.path.exists(p) for p in paths)
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path / "run"), "--no_progress", *_args(
        "Experiment.tasks = ['normals']", "Experiment.train_steps = 2",
        "normals/TaskTrainer.dedicated = @tfrecords()", f"tfrecords.paths = '{out_dir}/*'")])
    assert code == 0


USER_MODULE = '''
import gin
import keras
from keras import ops
from taskology_tf import register_relation, register_task
from taskology_tf.core import Relation, Task


@register_task("brightness")
@gin.configurable
class BrightnessTask(Task):
    """Predicts per-pixel grey level; label: none (trains only through its relation)."""
    input_keys = ("image",)
    label_keys = ()
    output_keys = ("grey",)

    def build_model(self):
        image = keras.Input((None, None, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1 / 255.0)(image)
        grey = keras.layers.Conv2D(1, 1, name="grey")(x)
        return keras.Model({"image": image}, {"grey": grey}, name=self.name)

    def loss(self, batch, predictions):
        return ops.zeros((ops.shape(predictions["grey"])[0],))


def _loss(inputs, predictions):
    return ops.mean(ops.square(predictions["brightness"]["grey"] - 0.1 * predictions["depth"]["depth"]), axis=(1, 2, 3))


@register_relation("grey_depth")
@gin.configurable
def grey_depth(weight=1.0):
    return Relation("grey_depth", reads={"brightness": ("grey",), "depth": ("depth",)}, loss_fn=_loss, weight=weight)
'''


def test_user_task_and_relation_from_own_module(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    workdir = str(tmp_path / "run")
    code = main(["train", "--import", "my_tasks", "--gin_file", "table3_baseline", "--workdir", workdir, "--no_progress",
                 *_args("Experiment.tasks = ['depth', 'brightness']", "Experiment.relations = ['grey_depth']",
                        "Experiment.train_steps = 2", "brightness/TaskTrainer.dedicated = None",
                        "brightness/TaskTrainer.eval_data = None")])
    assert code == 0, capsys.readouterr().err
    assert os.path.exists(os.path.join(workdir, "brightness", "ckpt", "ckpt-2.index"))
    sys.modules.pop("my_tasks", None)


def test_experiment_names_map_to_their_commands(capsys):
    from taskology_tf.cli import experiment_argv

    assert experiment_argv(["experiment", "table1", "--rows", "AB"]) == ["table1", "--rows", "AB"]
    assert experiment_argv(["experiment", "table3", "--steps", "5"]) == ["demo", "--steps", "5"]
    with pytest.raises(SystemExit) as e:
        main(["experiment", "table9"])
    assert e.value.code == 2 and "unknown experiment 'table9'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["experiment", "--help"])
    assert e.value.code == 0 and "table1" in capsys.readouterr().out


def test_experiment_table1_reports_a_missing_source_row(tmp_path, capsys):
    # Row C needs row B's segmentation checkpoint: the command says which row to run first.
    assert main(["experiment", "table1", "--workdir", str(tmp_path), "--rows", "C", "--steps", "1",
                 "--no_progress"]) == 1
    assert "run row B first" in capsys.readouterr().err


def test_data_convert_waymo_reports_missing_input(tmp_path, capsys):
    assert main(["data", "convert-waymo", "--input", str(tmp_path / "none.tfrecord"),
                 "--output", str(tmp_path / "out")]) == 1
    assert "no Waymo files match" in capsys.readouterr().err


# -- mistakes that used to slip through or end in a traceback ---------------------------------------


def test_export_without_a_checkpoint_needs_allow_untrained(tmp_path, capsys):
    workdir = str(tmp_path / "empty")
    common = ["export", "--gin_file", "table3_baseline", "--workdir", workdir, "--task", "normals", *_args()]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "task 'normals' has no checkpoint" in err and "--allow_untrained" in err
    assert not os.path.exists(os.path.join(workdir, "normals", "export"))
    assert main([*common, "--allow_untrained"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == os.path.join(workdir, "normals", "export", "0")
    assert "taskology export: normals: writing step 0" in captured.err and "done in" in captured.err


def test_train_without_an_experiment_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no experiment given" in err and "--gin_file" in err and "table3_consistency" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value, message", [
    ("5.5", "Experiment.train_steps must be a whole number, got 5.5 (float)"),
    ("'five'", "Experiment.train_steps must be a whole number, got 'five' (str)"),
])
def test_train_steps_must_be_a_whole_number(tmp_path, capsys, value, message):
    assert main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path),
                 *_args(f"Experiment.train_steps = {value}")]) == 1
    assert message in capsys.readouterr().err


def test_misspelt_task_scope_is_an_error(tmp_path, capsys):
    assert main(["train", "--gin_file", "table3_consistency", "--workdir", str(tmp_path),
                 *_args("nromals/TaskTrainer.batch_size = 2")]) == 1
    err = capsys.readouterr().err
    assert "'nromals/TaskTrainer.batch_size'" in err and "'nromals' is not a task" in err
    assert "Did you mean 'normals/TaskTrainer'?" in err


def test_workdir_under_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path / "a_file" / "run"),
                 *_args()]) == 1
    err = capsys.readouterr().err
    assert "a_file is a file, not a folder" in err and "Traceback" not in err


def test_second_trainer_on_a_locked_workdir_stops_at_once(tmp_path, capsys):
    import subprocess
    import sys

    holder = ("import sys, time\nfrom taskology_tf.core.workdir import lock\nheld = lock(sys.argv[1])\n"
              "print('locked', flush=True)\ntime.sleep(600)\n")
    workdir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", holder, str(workdir / "normals")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        assert main(["train", "--gin_file", "table3_baseline", "--workdir", str(workdir), *_args()]) == 1
        err = capsys.readouterr().err
        assert f"is in use by another trainer: PID {process.pid} on host" in err
        assert not os.path.exists(workdir / "depth" / "ckpt")  # nothing trained
    finally:
        process.kill()
        process.wait()


def test_damaged_records_are_named(tmp_path, capsys):
    out_dir = tmp_path / "records"
    assert main(["data", "synth", "--out_dir", str(out_dir), "--num_examples", "4", "--height", "32",
                 "--width", "64"]) == 0
    (shard,) = capsys.readouterr().out.split()
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) - 100])  # inside the last record
    code = main(["train", "--gin_file", "table3_baseline", "--workdir", str(tmp_path / "run"), "--no_progress", *_args(
        "Experiment.tasks = ['normals']", "normals/TaskTrainer.dedicated = @tfrecords()", f"tfrecords.paths = '{shard}'")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"TFRecord file {shard} is truncated" in err and "Traceback" not in err


def test_sigint_and_sigterm_save_a_checkpoint_and_exit_without_a_traceback(tmp_path):
    """Ctrl-C (exit 130) and SIGTERM (exit 0) while training: the step finishes, a checkpoint of it is written,
    and the rerun resumes from it."""
    import signal
    import subprocess
    import sys

    from taskology_tf.testing import wait_for

    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "taskology_tf.cli", "train", "--gin_file", "table3_baseline", "--workdir",
               str(workdir), "--no_progress", *_args("Experiment.tasks = ['normals']", "Experiment.train_steps = 100000",
                                                     "TaskTrainer.checkpoint_every = 1000")]

    def run_until_training_then(signum):
        logs = workdir / "normals" / "logs" / "train"

        def event_files():
            return len(os.listdir(logs)) if logs.is_dir() else 0

        before = event_files()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Training has started once this run wrote the summaries of its first step (a new event file).
            assert wait_for(lambda: event_files() > before or process.poll() is not None, timeout=300)
            assert process.poll() is None, process.communicate()
            process.send_signal(signum)
            out, err = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        return process.returncode, err

    code, err = run_until_training_then(signal.SIGINT)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "taskology: stopped by SIGINT at step " in err and "Run the same command again to resume." in err
    step = int(err.split("stopped by SIGINT at step ")[1].split(";")[0])
    assert step > 0 and os.path.exists(workdir / "normals" / "ckpt" / f"ckpt-{step}.index")

    code, err = run_until_training_then(signal.SIGTERM)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "taskology: stopped by SIGTERM at step " in err
    resumed = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert resumed > step and os.path.exists(workdir / "normals" / "ckpt" / f"ckpt-{resumed}.index")


def test_every_flag_of_every_command_has_help():
    import argparse

    from taskology_tf.cli import build_parser
    from taskology_tf.launch.launcher import build_parser as launch_parser
    from taskology_tf.serving.flags import build_parser as serve_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:  # argparse has no public listing of a parser's arguments
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help in (None, "") and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "taskology")
    walk(launch_parser(), "taskology launch")
    walk(serve_parser(), "taskology serve")
    assert not missing, missing


def test_no_progress_silences_every_bar_while_the_command_runs(monkeypatch):
    import taskology_tf.cli as cli

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda args: seen.setdefault("value", os.environ.get("TQDM_DISABLE")) and 0)
    assert main(["train", "--gin_file", "table3_baseline", "--workdir", "unused", "--no_progress"]) == 0
    assert seen["value"] == "1" and "TQDM_DISABLE" not in os.environ  # set for the command, then restored
