"""Test-wide settings, and fixtures shared by the tests of the paper-table runners."""

import os

# oneDNN's CPU kernels crash (heap corruption in Conv2DBackpropFilter, "malloc(): corrupted top size") on some
# AVX-512 hosts for small convolutions, with TensorFlow 2.20 and 2.21 alike (tests/models/test_nasfpn.py
# reproduces it); the suite runs on the default Eigen kernels. Must be set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import time  # noqa: E402

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


def pytest_report_header(config):
    """Say when the run simulates a freshly booted host (tools/fresh_clock: time.monotonic() near zero)."""
    if os.environ.get("TASKOLOGY_FRESH_CLOCK") not in (None, ""):
        return f"fresh clock: time.monotonic() = {time.monotonic():.3f} s in this process (tools/fresh_clock)"
    return None


@pytest.fixture
def eager():
    """Run the trainers' tf.functions eagerly: a two-step row costs less than tracing its training graphs."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)
