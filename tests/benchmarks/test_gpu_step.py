"""benchmarks/gpu_step.py (issue 15 part 2): its numpy helpers here, and the whole script at ``--size tiny``
through Keras's JAX backend where an interpreter with JAX is at hand (skipped otherwise: the project's venv
has no JAX; ``bash benchmarks/make_gpu_env.sh`` makes one, ``TASKOLOGY_JAX_PYTHON`` names its python)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from taskology_tf.testing import REPO, load_script

PATH = REPO / "benchmarks" / "gpu_step.py"
BACKEND_BEFORE = os.environ.get("KERAS_BACKEND")
gpu_step = load_script("benchmarks/gpu_step.py")  # imports numpy only: Keras and JAX load inside the functions


def test_importing_the_script_leaves_the_keras_backend_alone():
    assert os.environ.get("KERAS_BACKEND") == BACKEND_BEFORE  # main() picks JAX, not the import


def test_batch_overrides_for_all_or_some_networks():
    assert gpu_step.parse_batches("8") == {name: 8 for name in gpu_step.NETWORKS}
    assert gpu_step.parse_batches("pointpillars=1,segmentation=2") == {"pointpillars": 1, "segmentation": 2}
    with pytest.raises(Exception, match="unknown networks"):
        gpu_step.parse_batches("resnet=3")
    args = gpu_step.parse_args(["--size", "tiny", "--batch", "pointpillars=1"])
    assert args.batch == {"pointpillars": 1} and args.peak_tflops == gpu_step.H200_BF16_DENSE_TFLOPS


def test_synthetic_batches_have_the_tasks_shapes():
    rng = np.random.default_rng(0)
    clip = gpu_step.clip_batch(rng, 2, 8, 16)
    assert clip["image_next"].shape == (2, 8, 16, 3) and clip["image"].dtype == np.uint8
    assert clip["depth"].shape == (2, 8, 16, 1) and clip["intrinsics"].shape == (2, 3, 3)
    grid = types.SimpleNamespace(x_min=-8.0, x_max=8.0, y_min=-8.0, y_max=8.0, z_min=-3.0, z_max=3.0)
    lidar = gpu_step.lidar_batch(rng, grid, batch=2, frames=3, points=50, boxes=4)
    assert lidar["points"].shape == (2, 3, 50, 4) and lidar["boxes"].shape == (2, 3, 4, 7)
    assert np.all(np.abs(lidar["points"][..., :2]) <= 8.0)
    np.testing.assert_allclose(np.diff(lidar["boxes"][..., 0], axis=1), 1.0, rtol=1e-6)  # 1 m a frame along x
    assert (lidar["track_ids"][:, 0] == lidar["track_ids"][:, 2]).all()


def test_table_has_a_row_per_network_and_names_what_was_skipped(tmp_path, capsys):
    env = {"device": "cpu", "backend": "cpu", "dtype": "float32", "size": "tiny", "steps": 3, "warmup": 2,
           "peak_tflops": 989.0, "jax": "0", "keras": "3", "date": "today"}
    ok = {"network": "segmentation", "examples_per_step": 4, "parameters": 44e6, "step_s": 0.5, "examples_per_s": 8.0,
          "flops_per_step": 2e12, "bytes_accessed_per_step": 1e11, "achieved_tflops": 4.0, "mfu": 4.0 / 989.0,
          "compile_s": 30.0}
    ok["config"] = {"batch": 4}
    bad = {"network": "pointpillars", "config": {"batch": 2}, "parameters": 6e6, "flops_per_step": 9e12,
           "compile_s": 16.0, "error": "MemoryError: too big"}
    lines = gpu_step.markdown_table([ok, bad], env).splitlines()
    assert lines[-4] == "| segmentation | 4 | 44.00M | 500.0 | 8 | 2000 | 4 | 0.404 | 20 | 30.0 |"
    assert lines[-3] == "| pointpillars | 2 | 6.00M | skipped | n/a | 9000 | n/a | n/a | n/a | 16.0 |"
    assert lines[-1] == "- pointpillars skipped: MemoryError: too big"
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"environment": env, "networks": [ok, bad]}))
    assert gpu_step.main(["--table", str(saved)]) == 0
    assert "| segmentation | 4 |" in capsys.readouterr().out


def _jax_python():
    """An interpreter that has JAX: this one, or the one TASKOLOGY_JAX_PYTHON names; None if neither."""
    if importlib.util.find_spec("jax") is not None:
        return sys.executable
    named = os.environ.get("TASKOLOGY_JAX_PYTHON")
    return named if named and pathlib.Path(named).exists() else None


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_size_runs_every_network_through_the_jax_backend(tmp_path):
    python = _jax_python()
    if python is None:
        pytest.skip("JAX is not installed here (bash benchmarks/make_gpu_env.sh, then "
                    "TASKOLOGY_JAX_PYTHON=benchmarks/.venv-jax/bin/python)")
    out = tmp_path / "gpu_step.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    run = subprocess.run([python, str(PATH), "--size", "tiny", "--warmup", "0", "--steps", "1", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=1700)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["network"] for r in result["networks"]] == list(gpu_step.NETWORKS)
    for record in result["networks"]:
        assert "error" not in record, record.get("traceback")
        assert record["step_s"] > 0 and record["flops_per_step"] > 0 and np.isfinite(record["loss"])
        assert 0 < record["mfu"] < 1
    assert result["environment"]["backend"] == "cpu" and result["environment"]["dtype"] == "float32"
    assert out.with_suffix(".md").read_text().count("\n| ") == 2 + len(gpu_step.NETWORKS)
