"""Tests of the TFRecord codec and synthetic shard writing."""

import os

import numpy as np
import pytest

from taskology_tf.data import tfrecord
from taskology_tf.data.example import check_element_spec
from taskology_tf.data.synthetic import dataset as synthetic


def _examples(n=3, height=16, width=24):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        boxes = rng.normal(size=(i + 1, 7)).astype(np.float32)  # a variable number of boxes per record
        out.append({
            "id": np.int64(100 + i),
            "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "depth": rng.random((height, width, 1), dtype=np.float32) * 80,
            "segmentation": rng.integers(0, 9, (height, width, 1)).astype(np.int32),
            "intrinsics": np.eye(3, dtype=np.float32) * (i + 1),
            "boxes": boxes,
            "track_ids": np.arange(i + 1, dtype=np.int64),
            "velocities": rng.normal(size=(i + 1, 3)),  # not a contract key: float64 round-trips as stored
        })
    return out


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_round_trip_is_exact_and_leaves_no_temporary_file(tmp_path, compression):
    path = tmp_path / "sub" / "a.tfrecord"
    examples = _examples()
    assert tfrecord.write_examples(iter(examples), path, compression=compression) == 3
    assert path.exists() and not os.path.exists(str(path) + ".tmp")
    ds = tfrecord.read_examples(str(path), compression=compression)
    spec = ds.element_spec
    assert tuple(spec["image"].shape) == (16, 24, 3) and tuple(spec["intrinsics"].shape) == (3, 3)
    assert tuple(spec["boxes"].shape) == (None, 7) and tuple(spec["velocities"].shape) == (None, None)
    assert spec["id"].dtype.name == "int64" and spec["velocities"].dtype.name == "float64"
    check_element_spec(spec, ["id", "image", "depth", "segmentation", "intrinsics", "boxes", "track_ids"], "test")
    got = list(ds.as_numpy_iterator())
    assert len(got) == 3
    for a, b in zip(got, examples):
        assert a.keys() == b.keys()
        for key in b:
            assert a[key].dtype == np.asarray(b[key]).dtype, key
            np.testing.assert_array_equal(a[key], b[key])


def test_failed_write_removes_the_temporary_file(tmp_path):
    path = tmp_path / "b.tfrecord"

    def broken():
        yield _examples(1)[0]
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        tfrecord.write_examples(broken(), path)
    assert not path.exists() and not (tmp_path / "b.tfrecord.tmp").exists()


def test_missing_path_gives_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope.tfrecord")
    with pytest.raises(FileNotFoundError, match="taskology data synth") as err:
        tfrecord.read_examples([missing])
    assert missing in str(err.value)


def test_bad_compression_and_empty_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        tfrecord.write_examples([], tmp_path / "c.tfrecord", compression="zip")
    empty = tmp_path / "empty.tfrecord"
    assert tfrecord.write_examples([], empty) == 0
    with pytest.raises(ValueError, match="no records"):
        tfrecord.read_examples(empty)


def test_contract_dtype_mismatch_is_reported(tmp_path):
    path = tmp_path / "d.tfrecord"
    tfrecord.write_examples([{"depth": np.zeros((4, 4, 1), np.float64)}], path)
    with pytest.raises(ValueError, match="float32"):
        tfrecord.read_examples(path)


def test_write_synthetic_shards_a_split(tmp_path):
    paths = tfrecord.write_synthetic(tmp_path, "real", "val", num_examples=5, seed=3, height=16, width=32,
                                     with_next=True, shard_size=2, num_workers=1)
    assert [os.path.basename(p) for p in paths] == [f"real-val.tfrecord-{i:05d}-of-00003" for i in range(3)]
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    ds = tfrecord.read_examples(paths)
    keys = list(synthetic.FRAME_KEYS) + list(synthetic.NEXT_KEYS)
    check_element_spec(ds.element_spec, keys, "test")
    assert tuple(ds.element_spec["image_next"].shape) == (16, 32, 3)
    got = list(ds.as_numpy_iterator())
    assert len(got) == 5
    stream_seed = synthetic.split_seed(3, "val")
    for i in (0, 4):
        expected = synthetic.render_example(i, style="real", seed=stream_seed, height=16, width=32, with_next=True)
        for key in keys:
            np.testing.assert_array_equal(got[i][key], expected[key])
    train = tfrecord.write_synthetic(tmp_path, "real", "train", 2, 3, 16, 32, False, num_workers=1)
    train_ids = {int(x["id"]) for x in tfrecord.read_examples(train).as_numpy_iterator()}
    assert not train_ids & {int(x["id"]) for x in got}
    with pytest.raises(ValueError, match="split"):
        tfrecord.write_synthetic(tmp_path, "real", "a/b", 2, 3, 16, 32, False)


# -- damaged and malformed files: errors that name the file -----------------------------------------


def _simple(n=4, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"id": np.int64(i), "image": rng.integers(0, 256, (8, 8, channels), dtype=np.uint8),
             "depth": rng.random((8, 8, 1), dtype=np.float32)} for i in range(n)]


def _drain(dataset, what="test data"):
    from taskology_tf.data.errors import next_batch

    iterator = iter(dataset.batch(2))
    while True:
        try:
            next_batch(iterator, what, dataset)
        except StopIteration:
            return


def test_truncated_file_is_named_before_reading(tmp_path):
    from taskology_tf.data.errors import DataError

    good, bad = str(tmp_path / "good.tfrecord"), str(tmp_path / "bad.tfrecord")
    tfrecord.write_examples(_simple(), good)
    tfrecord.write_examples(_simple(), bad)
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) - 100])
    with pytest.raises(DataError, match=rf"TFRecord file {bad} is truncated: record 3 at byte \d+ needs \d+ bytes "
                                        r"but the file ends"):
        tfrecord.read_examples([good, bad])
    with open(bad, "wb") as f:
        f.write(b"garbage, not records " * 10)
    with pytest.raises(DataError, match=rf"TFRecord file {bad} is damaged: the header of record 0"):
        tfrecord.read_examples([good, bad])


def test_corrupt_record_data_is_named_when_read(tmp_path):
    from taskology_tf.data.errors import DataError

    good, bad = str(tmp_path / "good.tfrecord"), str(tmp_path / "bad.tfrecord")
    tfrecord.write_examples(_simple(), good)
    tfrecord.write_examples(_simple(seed=1), bad)
    data = bytearray(open(bad, "rb").read())
    data[len(data) - 200] ^= 0xFF  # inside the last record's data: the headers still check out
    open(bad, "wb").write(bytes(data))
    dataset = tfrecord.read_examples([good, bad])
    with pytest.raises(DataError, match=rf"test data: TFRecord file {bad} is damaged or malformed: record 3 cannot "
                                        r"be read .*corrupted record"):
        _drain(dataset)


def test_one_channel_images_are_named(tmp_path):
    from taskology_tf.data.errors import DataError

    grey = str(tmp_path / "grey.tfrecord")
    tfrecord.write_examples(_simple(channels=1), grey)
    with pytest.raises(DataError, match=rf"TFRecord file {grey}: key 'image' is stored as uint8 \[8, 8, 1\] but the "
                                        r"example contract says uint8 \[None, None, 3\]"):
        tfrecord.read_examples(grey)
    mixed = str(tmp_path / "mixed.tfrecord")  # a colour first record, a grey one later
    tfrecord.write_examples(_simple(2) + _simple(1, channels=1), mixed)
    with pytest.raises(DataError, match=rf"TFRecord file {mixed} is damaged or malformed: record 2: key 'image' has "
                                        r"shape \[8, 8, 1\], expected \(8, 8, 3\)"):
        _drain(tfrecord.read_examples(mixed))
