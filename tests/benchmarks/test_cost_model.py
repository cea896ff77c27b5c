"""The arithmetic of benchmarks/cost_model.py (the 100-task cost model of benchmarks/README.md)."""

import pytest

from taskology_tf.testing import load_script

cost_model = load_script("benchmarks/cost_model.py")

TASK = cost_model.TaskSize("t", "net", params=1000, input_bytes=30, output_bytes=40)


def test_paper_sizes_follow_the_image_size():
    depth = cost_model.PAPER_TASKS["depth"]
    assert depth.input_bytes == 128 * 416 * 3 and depth.output_bytes == 128 * 416 * 4
    assert cost_model.PAPER_TASKS["segmentation"].output_bytes == 8 * depth.output_bytes
    assert cost_model.PAPER_TASKS["motion"].input_bytes == 2 * depth.input_bytes


def test_predictions_weights_and_gradients_per_step():
    assert cost_model.prediction_bytes([TASK] * 3, batch=2) == (180.0, 240.0)
    assert cost_model.prediction_bytes([TASK], batch=2, output_scale=0.5) == (60.0, 40.0)
    assert cost_model.server_bytes(TASK, readers=3, batch=2) == (180.0, 240.0)
    assert cost_model.weight_bytes([TASK] * 2, TASK, readers=4, every=10) == (800.0, 1600.0)
    assert cost_model.allreduce_bytes([TASK] * 4) == pytest.approx(2 * 3 / 4 * 4 * 4000)
    assert cost_model.allreduce_bytes([TASK]) == 0.0
    with pytest.raises(ValueError, match="every"):
        cost_model.weight_bytes([TASK], TASK, 1, 0)


def test_link_rate_and_densities():
    assert cost_model.link_steps_per_second(125e6, 10.0) == pytest.approx(10.0)  # 10 Gb/s = 1.25 GB/s
    assert [d[:2] for d in cost_model.densities(8)] == [("ring", 2), ("star, hub", 7), ("star, leaf", 1),
                                                         ("all pairs", 7)]
    assert ("10 peers each", 10, 10) in cost_model.densities(100)


def test_tables_have_a_row_per_count_and_density():
    table = cost_model.cost_table(TASK, counts=(8, 100), batch=1).splitlines()
    assert len(table) == 2 + 4 + 5
    assert table[2].startswith("| 8 | ring | 2 | 0.0 + 0.0 |")
    assert len(cost_model.sizes_table().splitlines()) == 2 + len(cost_model.PAPER_TASKS)
