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


def test_bazel_run_goes_back_to_the_users_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    env = {runtime.BAZEL_WORKING_DIRECTORY_ENV: str(tmp_path)}
    assert runtime.enter_user_directory(env) == str(tmp_path)
    assert pathlib.Path.cwd() == tmp_path and env == {}  # used once: child processes do not move again
    assert runtime.enter_user_directory({}) is None and pathlib.Path.cwd() == tmp_path


def test_bazel_run_resolves_relative_paths_where_the_user_stands(tmp_path, monkeypatch):
    """`bazel run //taskology_tf:train -- --gin_file my.gin --workdir runs/x` from a folder: both paths are there."""
    from taskology_tf import cli

    (tmp_path / "my.gin").write_text("Experiment.train_steps = 1\n")
    monkeypatch.chdir(REPO)  # where Bazel starts the program (its runfiles tree) is not where the user stands
    monkeypatch.setenv(runtime.BAZEL_WORKING_DIRECTORY_ENV, str(tmp_path))
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda args: seen.update(vars(args), cwd=os.getcwd()) or 0)
    assert cli.main(["train", "--gin_file", "my.gin", "--workdir", "runs/x"]) == 0
    assert seen["cwd"] == str(tmp_path)
    assert os.path.abspath(seen["workdir"]) == str(tmp_path / "runs" / "x")
    assert cli.resolve_gin_file(seen["gin_file"][0]) == "my.gin" and os.path.isfile("my.gin")


def test_a_python_without_the_dependencies_is_named_with_what_to_do(tmp_path):
    import importlib.machinery

    def repository_gin_folder(name):  # gin-config missing: `gin` is the repository's folder of experiment files
        if name == "gin":
            spec = importlib.machinery.ModuleSpec("gin", None, is_package=True)
            spec.submodule_search_locations = [str(REPO / "gin")]
            return spec
        return None if name == "tensorflow" else importlib.util.find_spec(name)

    message = runtime.missing_dependencies(repository_gin_folder)
    assert "gin-config, tensorflow" in message and str(REPO / "gin") in message
    assert "make venv" in message and "TASKOLOGY_PYTHON" in message
    assert runtime.missing_dependencies() is None  # the suite's own interpreter has everything


def test_the_command_stops_with_that_message_before_the_confusing_error(tmp_path):
    """A Python with neither gin-config nor TensorFlow, the repository on its path: exit 2 with the advice."""
    fake = tmp_path / "site"
    (fake / "tensorflow").mkdir(parents=True)  # a folder of that name, not the package
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO), str(fake)]))
    code = "import sys\nsys.path = [p for p in sys.path if 'site-packages' not in p]\n" \
           "from taskology_tf.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    result = subprocess.run([sys.executable, "-c", code, "train", "--help"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "lacks the project's dependencies" in result.stderr and "make venv" in result.stderr
    assert "has no attribute" not in result.stderr
