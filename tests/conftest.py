"""Fixtures shared by the tests of the paper-table runners."""

import pytest
import tensorflow as tf


@pytest.fixture
def eager():
    """Run the trainers' tf.functions eagerly: a two-step row costs less than tracing its training graphs."""
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)
