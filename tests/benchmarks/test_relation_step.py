"""benchmarks/relation_step.py: the timing helpers time what they say, and each part runs at Table 1's sizes."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.testing import load_script

relation_step = load_script("benchmarks/relation_step.py")


def test_with_gradient_returns_the_loss_and_its_gradient():
    loss, (grad,) = relation_step.with_gradient(lambda x: tf.reduce_sum(x * x))(tf.constant([1.0, -2.0]))
    assert float(loss) == 5.0
    np.testing.assert_allclose(grad.numpy(), [2.0, -4.0])


def test_timed_calls_once_to_warm_up_then_repeats():
    calls = []
    ms = relation_step.timed(lambda x: calls.append(x) or np.zeros(1), (3,), repeats=4)
    assert calls == [3] * 5 and ms >= 0.0


def test_relations_part_prints_each_relation(capsys):
    relation_step.relations(repeats=1, xla=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["depth_motion", "depth_motion_segmentation", "+"]


def test_unknown_part_is_a_usage_error():
    with pytest.raises(SystemExit):
        relation_step.main(["--parts", "relations,nothing"])
