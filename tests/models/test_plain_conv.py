"""Tests of the plain convolutional model (scaling-study tasks)."""

import keras
import numpy as np
import pytest

from taskology_tf.models.plain_conv import build_plain_conv


def test_outputs_keep_the_image_size_for_any_size():
    model = build_plain_conv("f", {"field": 1, "pair": 2}, width=4, num_layers=2)
    for h, w in ((5, 7), (16, 24)):
        out = model({"image": np.zeros((2, h, w, 3), np.uint8)})
        assert out["field"].shape == (2, h, w, 1) and out["pair"].shape == (2, h, w, 2)
        assert keras.backend.standardize_dtype(out["field"].dtype) == "float32"


def test_parameter_count_is_tiny_and_follows_width():
    # 3x3x3x8+8 + 3x3x8x8+8 + 8x1+1 weights.
    assert build_plain_conv("f", {"field": 1}).count_params() == 224 + 584 + 9
    assert build_plain_conv("f", {"field": 1}, num_layers=0).count_params() == 4  # per-pixel linear map


@pytest.mark.parametrize("kwargs", [dict(outputs={}), dict(outputs={"f": 0}), dict(outputs={"f": 1}, width=0),
                                    dict(outputs={"f": 1}, num_layers=-1)])
def test_bad_arguments_are_named(kwargs):
    with pytest.raises(ValueError, match="build_plain_conv"):
        build_plain_conv("f", **kwargs)
