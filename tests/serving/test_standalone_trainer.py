"""One task as its own job: `taskology train --task depth --peer normals=...` against a real gRPC server."""

import json
import os


from taskology_tf.cli import main
from taskology_tf.serving.server import ModelServer
from taskology_tf.testing import TINY_TABLE3, gin_param_flags

TINY = [
    *TINY_TABLE3,
    "ServingPeer.timeout = 2.0",
    "ServingPeer.retries = 0",
]


def _args(*params):
    return gin_param_flags(*params, base=TINY)


def test_task_trains_against_served_peer_and_survives_it_going_down(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    # The normals job publishes version 0 (its untrained network) for the depth job to read.
    assert main(["export", "--gin_file", "table3_consistency", "--workdir", workdir, "--task", "normals", *_args(),
                 "--allow_untrained"]) == 0
    server = ModelServer({"normals": os.path.join(workdir, "normals", "export")}, poll_seconds=0.2)
    port = server.start()
    try:
        code = main(["train", "--gin_file", "table3_consistency", "--workdir", workdir, "--task", "depth",
                     "--peer", f"normals=127.0.0.1:{port}", "--no_progress", *_args("Experiment.train_steps = 3")])
        assert code == 0, capsys.readouterr().err
        result = json.load(open(os.path.join(workdir, "depth", "metrics.json")))
        assert result["step"] == 3 and result["peer_unavailable_steps"] == {}
        assert "abs_rel" in result["metrics"]["depth"]
        # The depth job published its own versions for its peers (version = step).
        versions = sorted(int(v) for v in os.listdir(os.path.join(workdir, "depth", "export")) if v.isdigit())
        assert versions[-1] == 3
    finally:
        server.stop()
    # The peer's server is gone: the job keeps training (supervised terms only) and finishes.
    code = main(["train", "--gin_file", "table3_consistency", "--workdir", workdir, "--task", "depth",
                 "--peer", f"normals=127.0.0.1:{port}", "--no_progress", *_args("Experiment.train_steps = 5")])
    assert code == 0, capsys.readouterr().err
    result = json.load(open(os.path.join(workdir, "depth", "metrics.json")))
    assert result["step"] == 5 and result["peer_unavailable_steps"]["normals"] >= 1


def test_missing_peer_address_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_consistency", "--workdir", str(tmp_path), "--task", "depth", *_args()])
    assert code == 1
    assert "--peer TASK=HOST:PORT" in capsys.readouterr().err


def test_bad_peer_flag(tmp_path, capsys):
    code = main(["train", "--gin_file", "table3_consistency", "--workdir", str(tmp_path), "--task", "depth",
                 "--peer", "normals", *_args()])
    assert code == 2 and "expected TASK=HOST:PORT" in capsys.readouterr().err
