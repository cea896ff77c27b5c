"""Experiment: ground-truth tasks are not trained but answer their peers from the mediator's labels."""

import json
import os

import gin
import pytest

from taskology_tf.cli import parse_gin
from taskology_tf.core.peer import GroundTruthPeer
from taskology_tf.experiment import Experiment

TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "video_train/synthetic.num_examples = 4",
    "depth_eval/synthetic.num_examples = 2",
    "seg_eval/synthetic.num_examples = 2",
    "Experiment.mediator_batch_size = 2",
    "TaskTrainer.batch_size = 2",
    "TaskTrainer.summary_every = 0",
    "Experiment.train_steps = 2",
    "TaskTrainer.jit_compile = False",  # XLA's compile would dominate a two-step run
]


@pytest.fixture
def config():
    gin.clear_config()
    yield lambda name, *params: parse_gin([name], [*TINY, *params])
    gin.clear_config()


def test_ground_truth_motion_trains_depth_alone(tmp_path, config):
    config("ladder_a")
    experiment = Experiment()
    assert experiment.trained_tasks == ["depth"]
    collective = experiment.build_collective(str(tmp_path))
    try:
        assert list(collective.trainers) == ["depth"]
        assert isinstance(collective.trainers["depth"].peers["motion"], GroundTruthPeer)
        assert isinstance(collective.trainers["depth"].peers["segmentation"], GroundTruthPeer)
    finally:
        collective.close()
    result = experiment.run(str(tmp_path / "run"))
    assert set(result["metrics"]) == {"depth"} and result["metrics"]["depth"]["abs_rel"] > 0
    assert os.listdir(tmp_path / "run" / "depth" / "ckpt") and not os.path.exists(tmp_path / "run" / "motion")
    assert not os.path.exists(tmp_path / "run" / "segmentation")
    assert json.load(open(tmp_path / "run" / "metrics.json"))["step"] == 2


def test_ground_truth_depth_needs_its_labels_in_the_mediator(tmp_path, config):
    config("ladder_b", "video_train/synthetic.keys = ['image', 'image_next', 'intrinsics']")
    with pytest.raises(ValueError, match="depth"):
        Experiment().run(str(tmp_path))


@pytest.mark.parametrize("binding,message", [
    ("Experiment.ground_truth = ['normals']", "not in Experiment.tasks"),
    ("Experiment.ground_truth = ['depth', 'motion']", "nothing to train"),
    ("Experiment.ground_truth = 'motion'", "list of task names"),
])
def test_bad_ground_truth_bindings(config, binding, message):
    config("table1_a", binding)
    with pytest.raises(ValueError, match=message):
        Experiment()


@pytest.mark.parametrize("name,traffic", [("ladder_a", "normal"), ("ladder_b", "normal"), ("ladder_c", "normal"),
                                          ("table1_a", "dense"), ("table1_e", "dense")])
def test_the_ladder_runs_on_normal_traffic_and_table1_on_dense(config, name, traffic):
    config(name)
    for scope in ("video_train", "depth_eval"):
        assert gin.query_parameter(f"{scope}/synthetic.traffic") == traffic


def test_a_task_copy_is_a_second_task_of_one_kind_under_its_own_name(tmp_path, config):
    config("table1_b")
    Experiment().run(str(tmp_path / "B"))
    gin.clear_config()
    config("table1_d",
           "Experiment.tasks = ['depth', 'motion', 'segmentation', 'segmentation_teacher']",
           "Experiment.task_copies = {'segmentation_teacher': 'segmentation'}",
           "depth_motion_segmentation.teacher = 'segmentation_teacher'",
           "segmentation_teacher/TaskTrainer.frozen = True",
           f"segmentation_teacher/TaskTrainer.init_checkpoint = '{tmp_path / 'B' / 'segmentation'}'")
    experiment = Experiment()
    assert type(experiment.tasks["segmentation_teacher"]) is type(experiment.tasks["segmentation"])
    assert experiment.tasks["segmentation_teacher"].name == "segmentation_teacher"
    collective = experiment.build_collective(str(tmp_path / "D"))
    try:
        teacher = collective.trainers["segmentation_teacher"]
        assert teacher.frozen and teacher.restored_from.startswith(str(tmp_path / "B" / "segmentation"))
        assert set(collective.trainers["segmentation"].peers) >= {"segmentation_teacher", "depth", "motion"}
        before = [w.copy() for w in teacher.model.get_weights()]
        collective.train(2)
        assert all((a == b).all() for a, b in zip(before, teacher.model.get_weights()))
        assert collective.trainers["segmentation"].step == 2
    finally:
        collective.close()


@pytest.mark.parametrize("binding,message", [
    ("Experiment.task_copies = {'teacher': 'segmentation'}", "not in Experiment.tasks"),
    ("Experiment.task_copies = ['segmentation']", "maps a task name"),
])
def test_bad_task_copies(config, binding, message):
    config("table1_a", binding)
    with pytest.raises(ValueError, match=message):
        Experiment()


def test_ladder_a_takes_the_mask_from_the_true_segmentation_not_a_teacher(config):
    config("ladder_a")
    experiment = Experiment()
    assert experiment.task_names == ["depth", "motion", "segmentation"] and experiment.task_copies == {}
    assert set(experiment.relations[0].reads) == {"depth", "motion", "segmentation"}
