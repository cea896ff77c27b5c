"""The Table 1 runner (Sec. 4.1) at toy scale: all five rows, frozen rows start from their sources, table, CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.cli import main
from taskology_tf.table1 import format_table, init_bindings, parse_rows, run_table1

TINY = [
    "synthetic.height = 32",
    "synthetic.width = 64",
    "video_train/synthetic.num_examples = 4",
    "seg_train/synthetic.num_examples = 4",
    "depth_eval/synthetic.num_examples = 2",
    "seg_eval/synthetic.num_examples = 2",
    "Experiment.mediator_batch_size = 2",
    "TaskTrainer.batch_size = 2",
    "TaskTrainer.checkpoint_every = 0",
    "TaskTrainer.summary_every = 0",
    "TaskTrainer.image_summaries = 0",
    "TaskTrainer.jit_compile = False",  # XLA's compile would dominate a two-step row
    # smaller graphs: tracing dominates a two-step run
    "SegmentationTask.num_repeats = 1",
    "SegmentationTask.head_convs = 1",
    "depth_motion.blur_sizes = (1,)",
    "depth_motion_segmentation.blur_sizes = (1,)",
]


def _model_variables(prefix_or_folder):
    """Checkpointed network variables: {name: array} (optimizer and step left out)."""
    path = tf.train.latest_checkpoint(os.path.join(prefix_or_folder, "ckpt"))
    reader = tf.train.load_checkpoint(path)
    # A trainable variable is saved under the first path to it: the optimizer's list or the model.
    names = [n for n in reader.get_variable_to_shape_map()
             if n.startswith(("model/", "optimizer/_trainable_variables/")) and "OPTIMIZER_SLOT" not in n]
    assert len(names) > 10, names
    return path, {n: reader.get_tensor(n) for n in names}


def _same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_all_rows_run_in_order_and_frozen_rows_start_from_their_sources(tmp_path, capsys, eager):
    workdir = str(tmp_path)
    args = ["table1", "--workdir", workdir, "--steps", "2", "--no_progress"]
    for binding in TINY:
        args += ["--gin_param", binding]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    path = os.path.join(workdir, "table1.json")
    assert lines[-1] == path
    assert [line[:3] for line in lines if line[:3] in ("[A]", "[B]", "[C]", "[D]", "[E]")][::2] == \
        ["[A]", "[B]", "[C]", "[D]", "[E]"]
    assert any("Depth Error (Abs. Rel.)" in line for line in lines)

    rows = {r["row"]: r for r in json.load(open(path))}
    assert list(rows) == list("ABCDE")
    for row in "ACE":
        assert rows[row]["abs_rel"] > 0
    for row in "BDE":
        assert 0.0 <= rows[row]["miou"] <= 1.0
        assert set(rows[row]["metrics"]["segmentation"]) >= {"miou", "miou_movable"}
    assert rows["A"]["miou"] is None and rows["B"]["abs_rel"] is None

    # Trained tasks took 2 steps; frozen ones stayed at step 0 with their source's final weights.
    steps = lambda row, task: int(tf.train.load_checkpoint(
        tf.train.latest_checkpoint(os.path.join(workdir, row, task, "ckpt"))).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert steps("B", "segmentation") == 2 and steps("C", "depth") == 2 and steps("D", "segmentation") == 2
    assert steps("C", "segmentation") == 0 and steps("D", "depth") == 0 and steps("D", "motion") == 0
    _, b_seg = _model_variables(os.path.join(workdir, "B", "segmentation"))
    _, c_seg = _model_variables(os.path.join(workdir, "C", "segmentation"))
    _, e_seg = _model_variables(os.path.join(workdir, "E", "segmentation"))
    assert _same(c_seg, b_seg) and not _same(e_seg, b_seg)
    for row in "DE":  # the teacher of Eq. (4): B's network, frozen; the segmentation it teaches starts afresh
        assert steps(row, "segmentation_teacher") == 0
        assert _same(_model_variables(os.path.join(workdir, row, "segmentation_teacher"))[1], b_seg)
    for task in ("depth", "motion"):
        _, c_net = _model_variables(os.path.join(workdir, "C", task))
        _, d_net = _model_variables(os.path.join(workdir, "D", task))
        _, e_net = _model_variables(os.path.join(workdir, "E", task))
        assert _same(d_net, c_net) and not _same(e_net, c_net)
    # A frozen network evaluates as its source did: C's segmentation scores B's mIoU, D's depth C's Abs Rel.
    assert rows["C"]["metrics"]["segmentation"]["miou"] == pytest.approx(rows["B"]["miou"])
    assert rows["D"]["metrics"]["depth"]["abs_rel"] == pytest.approx(rows["C"]["abs_rel"], rel=1e-5)

    # Row D alone reuses C's checkpoints from the same workdir; a row whose source is missing is refused.
    with pytest.raises(ValueError, match="run row B first"):
        run_table1(str(tmp_path / "other"), steps=1, rows="C", gin_params=TINY, progress=False)


def test_rows_and_bindings():
    assert parse_rows("eba") == ["A", "B", "E"]
    with pytest.raises(ValueError, match="ABCDE"):
        parse_rows("AX")
    assert init_bindings("C", "/w") == ["segmentation/TaskTrainer.init_checkpoint = '/w/B/segmentation'"]
    assert sorted(init_bindings("D", "/w")) == ["depth/TaskTrainer.init_checkpoint = '/w/C/depth'",
                                                "motion/TaskTrainer.init_checkpoint = '/w/C/motion'",
                                                "segmentation_teacher/TaskTrainer.init_checkpoint = '/w/B/segmentation'"]
    assert init_bindings("E", "/w") == ["segmentation_teacher/TaskTrainer.init_checkpoint = '/w/B/segmentation'"]


def test_format_table_layout():
    rows = [
        {"row": "A", "configuration": "Depth & motion only", "reported": ["depth"], "abs_rel": 0.165,
         "abs_rel_moving": 0.3, "abs_rel_static": 0.15, "miou_movable": None, "miou": None},
        {"row": "D", "configuration": "Frozen depth & motion model C & segmentation", "reported": ["segmentation"],
         "abs_rel": 0.2, "miou_movable": 0.471, "miou": 0.6},
        {"row": "E", "configuration": "Depth, motion and segmentation training jointly",
         "reported": ["depth", "segmentation"], "abs_rel": 0.125, "miou_movable": 0.478, "miou": 0.61},
    ]
    lines = format_table(rows).splitlines()
    assert "Depth Error (Abs. Rel.)" in lines[0] and "Segmentation mIoU" in lines[0]
    assert "moving" in lines[0] and "static" in lines[0]
    assert lines[1].startswith("A. Depth & motion only")
    assert lines[1].split()[-5:] == ["0.165", "0.300", "0.150", "-", "-"]
    assert lines[2].split()[-5:] == ["-", "-", "-", "0.471", "0.600"]  # D's frozen depth is not a result of row D
    assert lines[3].split()[-5:] == ["0.125", "-", "-", "0.478", "0.610"]  # no moving/static split measured


def test_the_run_length_sizes_the_learning_rate_schedules(tmp_path, eager):
    import gin

    from taskology_tf.experiment import run_experiment_files

    result = run_experiment_files(str(tmp_path), ["table1_a"], TINY, steps=1, progress=False)
    try:
        assert result["step"] == 1
        assert gin.query_parameter("STEPS/gin.macro.value") == 1  # what `taskology table1 --steps 1` binds
        for task in ("depth", "motion"):
            assert str(gin.query_parameter(f"{task}/keras.optimizers.schedules.CosineDecay.decay_steps")) == "%STEPS"
    finally:
        gin.clear_config()
