"""The command's process set-up: oneDNN off, TensorFlow's start-up noise hidden unless asked, fast --help."""

import os
import pathlib
import subprocess
import sys

import pytest

from taskology_tf import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]


def clean_env(**extra):
    """The environment of a user's shell: none of the variables the test suite or the commands set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", runtime.VERBOSE_ENV)}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def test_configure_turns_onednn_off_unless_the_user_chose(monkeypatch):
    for name in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", runtime.VERBOSE_ENV):
        monkeypatch.delenv(name, raising=False)
    runtime.configure()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    runtime.configure(verbose_flag=True)
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"  # the user's choice stands
    assert os.environ[runtime.VERBOSE_ENV] == "1" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert runtime.verbose()


def test_startup_noise_filter_keeps_everything_else():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796411457.537823    4669 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
        "will not be used.\n"
        "E0000 00:00:1796411460.552428    4669 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)\n"
        "I0000 00:00:1796411419.535243    4605 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
        "compiler flags.\n"
        "E0000 00:00:1.0 1 something_else.cc:1] a real problem\n"
        "Traceback (most recent call last):\n"
    )
    assert runtime.filter_startup_noise(text) == (
        "E0000 00:00:1.0 1 something_else.cc:1] a real problem\nTraceback (most recent call last):\n"
    )


def test_a_tensorflow_command_prints_no_startup_noise(tmp_path):
    out_dir = tmp_path / "records"
    command = [sys.executable, "-m", "taskology_tf.cli", "data", "synth", "--out_dir", str(out_dir),
               "--num_examples", "1", "--height", "32", "--width", "64"]
    quiet = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    for noise in ("cuda", "cuInit", "absl", "oneDNN", "cpu_feature_guard"):
        assert noise not in quiet.stderr, quiet.stderr
    assert quiet.stdout.strip().endswith("00000-of-00001")
    # --verbose shows what TensorFlow prints (oneDNN stays off: no "oneDNN custom operations are on").
    loud = subprocess.run([*command, "--verbose"], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "oneDNN custom operations are on" not in loud.stderr


@pytest.mark.parametrize("argv", [["serve", "--help"], ["launch", "--help"], ["--help"], ["train", "--help"],
                                  ["experiment", "--help"], ["serve"]])
def test_help_and_flag_mistakes_do_not_load_tensorflow(argv):
    code = ("import sys\nfrom taskology_tf.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\nprint('RC', rc, 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], env=clean_env(), capture_output=True, text=True,
                            timeout=120)
    last = result.stdout.strip().splitlines()[-1]
    assert last in ("RC 0 False", "RC 2 False"), (result.stdout[-2000:], result.stderr[-2000:])
