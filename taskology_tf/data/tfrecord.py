"""A generic TFRecord codec for example dicts, and writing synthetic shards.

Each record is a ``tf.train.Example`` with one bytes feature per key holding
``tf.io.serialize_tensor`` of the array (a ``TensorProto``: dtype, shape and
content), so any key of any dtype and shape round-trips exactly. Reading gives
the dtypes of the example contract and static shapes where they are known.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from taskology_tf.data import example as example_lib
from taskology_tf.data import errors as data_errors

_COMPRESSIONS = ("GZIP", "ZLIB")
_MAKE_HINT = (
    "Create synthetic shards with `taskology data synth` "
    "(or taskology_tf.data.tfrecord.write_synthetic), or check the path."
)


def _compression(compression: str | None) -> str:
    """TFRecord compression type string ("" = none)."""
    if compression is None or compression == "":
        return ""
    name = str(compression).upper()
    if name not in _COMPRESSIONS:
        raise ValueError(f"compression must be None, 'GZIP' or 'ZLIB', got {compression!r}.")
    return name


def _to_example(example: Mapping[str, np.ndarray]) -> bytes:
    feature = {}
    for key, value in example.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"example keys must be non-empty strings, got {key!r}.")
        data = tf.io.serialize_tensor(np.asarray(value)).numpy()
        feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_examples(
    examples: Iterable[Mapping[str, np.ndarray]], path: str | os.PathLike, compression: str | None = None
) -> int:
    """Write example dicts to one TFRecord file; returns the number of records written.

    The file is written as ``path + ".tmp"`` and renamed to ``path`` only when complete, so a
    reader never sees a partial file; on error the temporary file is removed.
    """
    path = os.fspath(path)
    options = tf.io.TFRecordOptions(compression_type=_compression(compression))
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    count = 0
    try:
        with tf.io.TFRecordWriter(tmp, options=options) as writer:
            for example in examples:
                writer.write(_to_example(example))
                count += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return count


def _first_record_tensors(path: str, compression: str) -> dict[str, tensor_pb2.TensorProto] | None:
    """The tensor protos (dtype and shape) of the first record of ``path``; None if it is empty."""
    for raw in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
        parsed = tf.train.Example.FromString(raw.numpy())
        protos = {}
        for key, feature in parsed.features.feature.items():
            proto = tensor_pb2.TensorProto()
            proto.ParseFromString(feature.bytes_list.value[0])
            protos[key] = proto
        return protos
    return None


def _spatial_key(key: str) -> bool:
    """Whether a contract key is an image-like [H, W, C] map (its H and W come from the data)."""
    spec = example_lib.KEYS.get(key)
    return spec is not None and len(spec.shape) == 3 and spec.shape[:2] == (None, None)


def _check_against_contract(path: str, protos: dict[str, tensor_pb2.TensorProto]) -> None:
    """DataError naming ``path`` when its first record breaks the example contract (dtype, rank, fixed dims)."""
    for key, proto in sorted(protos.items()):
        spec = example_lib.KEYS.get(key)
        if spec is None:
            continue
        dtype = tf.dtypes.as_dtype(proto.dtype)
        dims = [d.size for d in proto.tensor_shape.dim]
        if dtype.name != spec.dtype or not tf.TensorShape(spec.shape).is_compatible_with(dims):
            raise data_errors.DataError(
                f"TFRecord file {path}: key {key!r} is stored as {dtype.name} {dims} but the example contract says "
                f"{spec.dtype} {list(spec.shape)} ({spec.doc}). Rewrite the file with contract arrays (e.g. "
                "3-channel RGB uint8 images)."
            )


def _element_signature(firsts: list[dict[str, tensor_pb2.TensorProto]], source: str, static_spatial: bool):
    """Keys, dtypes and static shapes (contract dims; H, W of image-like keys from the first records)."""
    keys = sorted(firsts[0])
    dtypes, shapes = {}, {}
    for key in keys:
        proto = firsts[0][key]
        dtype = tf.dtypes.as_dtype(proto.dtype)
        rank = len(proto.tensor_shape.dim)
        spec = example_lib.KEYS.get(key)
        if spec is not None:
            if dtype.name != spec.dtype or rank != len(spec.shape):
                raise ValueError(
                    f"{source}: key {key!r} is stored as {dtype.name} with rank {rank} but the example contract "
                    f"says {spec.dtype} with shape {spec.shape} ({spec.doc}). Rewrite the file with contract arrays."
                )
            shape = list(spec.shape)
        else:
            shape = [None] * rank
        if static_spatial and _spatial_key(key):
            for d in (0, 1):
                sizes = {f[key].tensor_shape.dim[d].size for f in firsts if key in f}
                if len(sizes) == 1:
                    shape[d] = sizes.pop()
        dtypes[key] = dtype
        shapes[key] = tf.TensorShape(shape)
    return keys, dtypes, shapes


def read_examples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    compression: str | None = None,
    static_spatial: bool = True,
):
    """A ``tf.data.Dataset`` of example dicts from TFRecord files written by ``write_examples``.

    Dtypes follow ``taskology_tf.data.example.KEYS`` (other keys keep their stored dtype, with
    unknown dims); static shapes come from the contract and, with ``static_spatial``, H and W of
    image-like keys from the first record of each file when all files agree (then every record
    must have that size; pass ``static_spatial=False`` for files of mixed image sizes). Every
    record must hold the keys of the first record. Raises FileNotFoundError for a missing path.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("read_examples needs at least one TFRecord path.")
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"TFRecord file {path!r} does not exist. {_MAKE_HINT}")
    compression = _compression(compression)
    firsts = []
    for path in paths:
        if not compression:
            data_errors.check_record_framing(path)  # truncated / damaged files named before training starts
        try:
            first = _first_record_tensors(path, compression)
        except tf.errors.OpError as e:
            raise data_errors.DataError(f"TFRecord file {path} cannot be read: {e.message.strip().splitlines()[0]}. "
                                        "Rewrite or re-download it.") from None
        if first is not None:
            _check_against_contract(path, first)
            firsts.append(first)
    if not firsts:
        raise ValueError(f"the TFRecord files {paths} hold no records. {_MAKE_HINT}")
    keys, dtypes, shapes = _element_signature(firsts, source=paths[0], static_spatial=static_spatial)
    features = {key: tf.io.FixedLenFeature([], tf.string) for key in keys}
    data_errors.register_records(paths, compression)
    with _signatures_lock:
        for path in paths:
            _signatures[path] = {key: (dtypes[key], shapes[key]) for key in keys}

    def decode(raw):
        parsed = tf.io.parse_single_example(raw, features)
        return {key: tf.ensure_shape(tf.io.parse_tensor(parsed[key], dtypes[key]), shapes[key]) for key in keys}

    dataset = tf.data.TFRecordDataset(paths, compression_type=compression)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    setattr(dataset, data_errors.RECORD_FILES_ATTRIBUTE, list(paths))  # errors while reading name these files
    return dataset


_signatures: dict[str, dict] = {}  # path -> {key: (dtype, static shape)} the reader expects of every record
_signatures_lock = threading.Lock()


def expected_signature(path: str) -> dict:
    """key -> (dtype, static shape) that ``read_examples`` expects of every record of ``path`` ({} if unknown)."""
    with _signatures_lock:
        return dict(_signatures.get(os.fspath(path), {}))


def shard_paths(out_dir: str | os.PathLike, style: str, split: str, num_shards: int) -> list[str]:
    """File names of the shards of one synthetic split: ``{style}-{split}.tfrecord-00000-of-00004``."""
    return [
        os.path.join(os.fspath(out_dir), f"{style}-{split}.tfrecord-{i:05d}-of-{num_shards:05d}")
        for i in range(num_shards)
    ]


def write_synthetic(
    out_dir: str | os.PathLike,
    style: str,
    split: str,
    num_examples: int,
    seed: int,
    height: int,
    width: int,
    with_next: bool,
    shard_size: int = 256,
    num_workers: int | None = None,
    compression: str | None = None,
) -> list[str]:
    """Render ``num_examples`` synthetic examples of one style and split into TFRecord shards.

    The examples are those of ``synthetic_dataset(style, seed=split_seed(seed, split), ...)`` (all
    per-frame keys, plus the next-frame keys when ``with_next``). Returns the shard paths in order.
    """
    from taskology_tf.data.synthetic import dataset as synthetic

    for name, value in (("num_examples", num_examples), ("shard_size", shard_size), ("height", height),
                        ("width", width)):
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(split, str) or not split or os.sep in split or "/" in split:
        raise ValueError(f"split must be a plain name such as 'train' or 'val', got {split!r}.")
    stream_seed = synthetic.split_seed(seed, split)
    stream = synthetic.render_examples(
        range(num_examples), style=style, seed=stream_seed, height=height, width=width, with_next=with_next,
        num_workers=num_workers,
    )
    paths = shard_paths(out_dir, style, split, math.ceil(num_examples / shard_size))
    for path in paths:
        write_examples(itertools.islice(stream, shard_size), path, compression=compression)
    return paths
