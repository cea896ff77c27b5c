"""The helpers of benchmarks/task_scaling.py: /proc parsing, process roles, the per-trainer summary, the table."""

import pytest

from taskology_tf.testing import load_script

task_scaling = load_script("benchmarks/task_scaling.py")


def test_parse_stat_counts_fields_after_the_command_name():
    ticks = task_scaling.CLOCK_TICKS
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", str(3 * ticks), str(ticks), "0", "0", "20", "0",
              "1", "0", "12345", "999"]
    line = "4242 (py (weird) name) " + " ".join(fields)
    assert task_scaling.parse_stat(line) == (4.0, 12345, "S")


@pytest.mark.parametrize("argv, kind", [
    (["/v/python", "-m", "taskology_tf.cli", "train", "--task", "field_3", "--workdir", "/w"], ("trainer", "field_3")),
    (["/v/python", "-m", "taskology_tf.cli", "serve", "--model_name", "field_0", "--port", "0"], ("server", "field_0")),
    (["/v/python", "-m", "taskology_tf.cli", "launch", "--workdir", "/w"], ("launcher", "")),
    (["/v/python", "benchmarks/task_scaling.py", "--workdir", "/w"], None),
])
def test_classify_roles_from_argv(argv, kind):
    assert task_scaling.classify(argv) == kind


def test_a_two_task_star_is_the_two_task_ring():
    assert task_scaling.configurations([2, 4], ["ring", "star"]) == [(2, "ring"), (4, "ring"), (4, "star")]


def _launch(steps=10, code=0):
    traffic = {"requests": 11, "answers": 10, "bytes_sent": 1000, "bytes_received": 4000}
    return {"step": {"a": steps, "b": steps}, "exit_code": {"a": code, "b": 0}, "restarts": {"a": 0, "b": 0},
            "throughput": {"a": {"steps": 10, "steps_per_second": 2.0, "cpu_cores": 0.5, "seconds": 4.5},
                           "b": {"steps": 10, "steps_per_second": 4.0, "cpu_cores": 0.7, "seconds": 2.25}},
            "peer_traffic": {"a": {"b": traffic, "c": traffic}, "b": {"a": traffic}},
            "peer_unavailable_steps": {"a": {"b": 2}, "b": {}}}


def test_summary_per_trainer_and_role():
    processes = [{"role": "trainer", "task": "a", "cpu": 3.0, "rss": 500.0},
                 {"role": "trainer", "task": "b", "cpu": 5.0, "rss": 600.0},
                 {"role": "server", "task": "a", "cpu": 2.0, "rss": 400.0}]
    r = task_scaling.summarize(2, "ring", 10, 0, 20.0, 12.0, _launch(), processes, [], (0.1,) * 6, "log")
    a, b = r["trainers"]["a"], r["trainers"]["b"]
    assert a["peers"] == 2 and a["requests_per_step"] == 2.2 and a["bytes_per_step"] == 1000.0
    assert a["bytes_per_second"] == 2000.0 and b["bytes_per_second"] == 2000.0 and a["peer_unavailable_steps"] == 2
    assert r["roles"]["trainer"] == {"processes": 2, "cpu_seconds": 8.0, "peak_rss_mib": 600.0}
    assert r["finished"] and r["cpu_cores"] == 0.6
    table = task_scaling.format_table([r]).splitlines()
    assert len(table) == 3 and table[2].startswith("| 2 | ring | 1-2 | 3.00 (2.00-4.00) | 6.0 |")
    assert table[2].endswith("| 600 / 400 | 3 (2-4) / 20 | yes, 0 |")


@pytest.mark.parametrize("launch, code", [(_launch(code=1), 0), (_launch(steps=9), 0), (_launch(), 1), ({}, 0)])
def test_a_failed_trainer_short_run_or_failed_launch_is_not_finished(launch, code):
    r = task_scaling.summarize(2, "ring", 10, code, 1.0, 1.0, launch, [], [], (0.1,) * 6, "log")
    assert not r["finished"]
