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
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

VERBOSE_ENV = "TASKOLOGY_VERBOSE"

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
