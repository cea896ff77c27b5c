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
    assert "Unknown task 'depht'" in err and "depth, detection, motion, normals" in err


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
