"""Process set-up of the command-line entry points: TensorFlow's environment and its start-up noise.

Imported by ``taskology`` (``cli.main``) before TensorFlow; light (standard library only).

* ``TF_ENABLE_ONEDNN_OPTS=0`` unless the user set it: oneDNN's CPU ``Conv2DBackpropFilter`` corrupts the
  heap on some AVX-512 hosts (TF 2.20 and 2.21; a NAS-FPN training step dies with SIGSEGV or
  ``malloc(): corrupted top size``), so the commands run TensorFlow's default Eigen kernels. Set
  ``TF_ENABLE_ONEDNN_OPTS=1`` to opt back in.
* On a machine without a GPU, importing TensorFlow prints CUDA and absl start-up messages
  ("Could not find cuda drivers", "failed call to cuInit ... (303)", "All log messages before
  absl::InitializeLog() ..."), some of them regardless of ``TF_CPP_MIN_LOG_LEVEL``.
  ``import_tensorflow`` imports it with stderr captured and writes back every line except those known
  start-up messages. ``--verbose`` (or ``TASKOLOGY_VERBOSE=1``) shows everything.
* Under ``bazel run`` the program starts in Bazel's runfiles tree; ``enter_user_directory`` goes back to the
  folder the user ran it from, so relative paths (``--workdir runs/x``, ``--gin_file my.gin``) mean what they say.
* ``missing_dependencies`` names what a wrong interpreter lacks, before the confusing error it would give
  (without gin-config, ``import gin`` finds the repository's ``gin/`` folder of experiment files).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

VERBOSE_ENV = "TASKOLOGY_VERBOSE"
# Set by `bazel run` to the folder it was run from (the program itself starts in the runfiles tree).
BAZEL_WORKING_DIRECTORY_ENV = "BUILD_WORKING_DIRECTORY"
# The modules every command needs, and the distributions that provide them.
REQUIRED_MODULES = {"gin": "gin-config", "tensorflow": "tensorflow", "keras": "keras", "numpy": "numpy"}

# Start-up messages of TensorFlow's native libraries that say nothing actionable on a CPU-only machine.
_STARTUP_NOISE = re.compile(
    "|".join([
        r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"oneDNN custom operations are on",
        r"Could not find cuda drivers on your machine",
        r"failed call to cuInit",
        r"cuda_diagnostics|cuda_platform\.cc|cudart_stub\.cc",
        r"Unable to register cu(DNN|FFT|BLAS) factory",
        r"computation_placer\.cc.*already registered",
        r"TF-TRT Warning: Could not find TensorRT",
        r"cpu_feature_guard\.cc",
        r"To enable the following instructions: .* rebuild TensorFlow",
    ])
)


def verbose() -> bool:
    """Whether the user asked to see everything (``--verbose`` sets ``TASKOLOGY_VERBOSE=1`` for child processes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def configure(verbose_flag: bool = False) -> None:
    """Set the environment TensorFlow reads when it loads (only what the user left unset).

    Call before TensorFlow is imported; child processes inherit it.
    """
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")


def enter_user_directory(environ=os.environ) -> str | None:
    """Under ``bazel run``, change to the folder the user ran it from; that folder, or None elsewhere.

    The variable is removed once used: child processes inherit the working directory, and one started in
    another folder on purpose stays there.
    """
    folder = environ.pop(BAZEL_WORKING_DIRECTORY_ENV, None)
    if not folder:
        return None
    os.chdir(folder)
    return folder


def missing_dependencies(find_spec=importlib.util.find_spec) -> str | None:
    """What this Python lacks of the project's dependencies, as an actionable message; None when nothing.

    Looks the modules up without importing them (``--help`` stays fast). A ``gin`` that is a folder without
    ``__init__.py`` is the repository's ``gin/`` (experiment files), not gin-config.
    """
    missing, shadowed = [], None
    for module, distribution in REQUIRED_MODULES.items():
        try:
            spec = find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            missing.append(distribution)
        elif spec.origin in (None, "namespace"):  # a namespace package: a plain folder of that name
            missing.append(distribution)
            shadowed = f"; `import {module}` finds the folder {list(spec.submodule_search_locations or [])} instead"
    if not missing:
        return None
    return (f"this Python ({sys.executable}) lacks the project's dependencies ({', '.join(missing)}){shadowed or ''}. "
            "Run `make venv` and use .venv/bin/python or .venv/bin/taskology; under Bazel, run `make venv` "
            "first or set TASKOLOGY_PYTHON "
            "to a Python where `pip install -e '.[test]'` was run.")


def filter_startup_noise(text: str) -> str:
    """``text`` without the lines of known TensorFlow start-up noise."""
    return "".join(line for line in text.splitlines(keepends=True) if not _STARTUP_NOISE.search(line))


def import_tensorflow():
    """Import TensorFlow and find its devices, with the start-up noise filtered from stderr (unless verbose).

    Native libraries write to file descriptor 2 directly, so it is pointed at a temporary file meanwhile;
    whatever is not noise is written back to stderr afterwards (also when the import fails). A no-op
    filter when TensorFlow is already imported or ``verbose()``.
    """
    if "tensorflow" in sys.modules or verbose():
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery (cuInit) logs here, not at the first op
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = filter_startup_noise(captured.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
    return tf
