import numpy as np
import pytest

from taskology_tf.data.example import ExampleSpecError, check_element_spec


def test_lidar_keys_accept_one_frame_or_a_frame_axis():
    one = {"points": np.zeros((100, 4), "float32"), "boxes": np.zeros((3, 7), "float32"),
           "track_ids": np.zeros((3,), "int64")}
    seq = {"points": np.zeros((3, 100, 4), "float32"), "points_mask": np.zeros((3, 100), "float32"),
           "boxes": np.zeros((3, 8, 7), "float32"), "box_mask": np.zeros((3, 8), "float32"),
           "track_ids": np.zeros((3, 8), "int64"), "labelled": np.zeros((3,), "float32")}
    check_element_spec(one, one, "per-frame")
    check_element_spec(seq, seq, "sequence")
    batched = {k: v[None] for k, v in seq.items()}
    check_element_spec(batched, batched, "batched sequence", batched=True)


def test_lidar_keys_still_check_trailing_dims_rank_and_dtype():
    with pytest.raises(ExampleSpecError, match="expected trailing dims"):
        check_element_spec({"boxes": np.zeros((3, 8, 5), "float32")}, ["boxes"], "t")
    with pytest.raises(ExampleSpecError, match="leading frame axis"):
        check_element_spec({"points": np.zeros((2, 3, 100, 4), "float32")}, ["points"], "t")
    with pytest.raises(ExampleSpecError, match="dtype int32"):
        check_element_spec({"track_ids": np.zeros((3, 8), "int32")}, ["track_ids"], "t")
    # Image keys have no frame axis.
    with pytest.raises(ExampleSpecError, match="'image' has shape"):
        check_element_spec({"image": np.zeros((2, 8, 8, 3), "uint8")}, ["image"], "t")
