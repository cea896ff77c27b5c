"""Damaged or malformed data files: errors that name the file, found early where it is cheap.

* ``check_record_framing``: walks a TFRecord file's record headers (length + its CRC) without reading the
  records, so a truncated file or a damaged header is reported, with its name, before training starts.
* ``next_batch``: the trainers draw batches through it; when TensorFlow fails inside the pipeline
  (``DataLossError: corrupted record at 1234``, a tensor of the wrong shape or dtype, neither naming a
  file), it checks the TFRecord files this process opened, record by record, and raises ``DataError``
  naming the damaged file (and record) instead.
"""

from __future__ import annotations

import os
import re
import struct
import threading

_CRC_TABLE: list[int] = []
_opened: dict[str, str] = {}  # TFRecord path -> compression, of every file read_examples opened
_opened_lock = threading.Lock()


class DataError(ValueError):
    """A data file that cannot be read as expected; the message names it."""


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord headers use."""
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def register_records(paths, compression: str) -> None:
    """Remember TFRecord files read in this process (``next_batch`` checks them when a pipeline fails)."""
    with _opened_lock:
        for p in paths:
            _opened[os.fspath(p)] = compression


def check_record_framing(path: str) -> None:
    """DataError naming ``path`` when an (uncompressed) TFRecord file is truncated or a record header is damaged.

    Reads 12 bytes per record (length and its masked CRC-32C) and seeks over the data, so it is cheap even
    for large files; the data's own checksums are checked by TensorFlow when the records are read.
    """
    size = os.path.getsize(path)
    offset = index = 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise DataError(f"TFRecord file {path} is truncated: record {index} at byte {offset} has only "
                                f"{len(header)} of its 12 header bytes ({size} bytes in the file). "
                                "Rewrite or re-download it.")
            (length,) = struct.unpack("<Q", header[:8])
            (stored,) = struct.unpack("<I", header[8:])
            if _masked_crc(header[:8]) != stored:
                raise DataError(f"TFRecord file {path} is damaged: the header of record {index} at byte {offset} "
                                "fails its checksum (not a TFRecord file, or corrupt). Rewrite or re-download it.")
            end = offset + 12 + length + 4
            if end > size:
                raise DataError(f"TFRecord file {path} is truncated: record {index} at byte {offset} needs "
                                f"{12 + length + 4} bytes but the file ends at byte {size}. Rewrite or re-download it.")
            f.seek(end)
            offset, index = end, index + 1


def _check_file(path: str, compression: str, expected) -> str | None:
    """Why the records of ``path`` cannot be read (or do not match ``expected``: key -> (dtype, shape)), or None."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    index = 0
    try:
        for raw in tf.data.TFRecordDataset(path, compression_type=compression):
            if expected:
                example = tf.train.Example.FromString(raw.numpy())
                for key, (dtype, shape) in expected.items():
                    feature = example.features.feature.get(key)
                    if feature is None or not feature.bytes_list.value:
                        return f"record {index} has no key {key!r}"
                    proto = tensor_pb2.TensorProto.FromString(feature.bytes_list.value[0])
                    got_dtype = tf.dtypes.as_dtype(proto.dtype)
                    got_shape = [d.size for d in proto.tensor_shape.dim]
                    if got_dtype != dtype:
                        return f"record {index}: key {key!r} is {got_dtype.name}, expected {dtype.name}"
                    if not tf.TensorShape(shape).is_compatible_with(got_shape):
                        return f"record {index}: key {key!r} has shape {got_shape}, expected {shape}"
            index += 1
    except (tf.errors.DataLossError, tf.errors.OpError) as e:
        return f"record {index} cannot be read ({e.message.strip().splitlines()[0]})".replace(
            "{{function_node", "").split("[Op:")[0].strip()
    return None


RECORD_FILES_ATTRIBUTE = "_taskology_record_files"


def record_files(dataset) -> list[str]:
    """The TFRecord files a dataset reads: those ``read_examples`` marked on it or on any dataset it is made from."""
    found, seen, stack = [], set(), [dataset]
    while stack:
        ds = stack.pop()
        if ds is None or id(ds) in seen:
            continue
        seen.add(id(ds))
        found += [p for p in getattr(ds, RECORD_FILES_ATTRIBUTE, ()) if p not in found]
        try:
            stack.extend(ds._inputs())  # tf.data keeps no public link to a dataset's inputs
        except (AttributeError, NotImplementedError, TypeError):
            pass
    return found


def diagnose(error: Exception, what: str, source=None) -> DataError:
    """A DataError for a pipeline ``error``: names the first damaged TFRecord file of ``source`` (a dataset), or
    of every file this process opened when the source's files are not known."""
    message = getattr(error, "message", None) or str(error)
    lines = [l for l in message.strip().splitlines() if l.strip()]
    message = lines[0] if lines else type(error).__name__
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]( name:)?", "", message).strip()
    with _opened_lock:
        files = dict(_opened)
    wanted = record_files(source) if source is not None else []
    if wanted:
        files = {p: files.get(p, "") for p in wanted}
    from taskology_tf.data import tfrecord

    for path, compression in files.items():
        if not os.path.exists(path):
            return DataError(f"{what}: TFRecord file {path} disappeared while it was read ({message}).")
        problem = _check_file(path, compression, tfrecord.expected_signature(path))
        if problem is not None:
            return DataError(f"{what}: TFRecord file {path} is damaged or malformed: {problem}. TensorFlow said: "
                             f"{message}. Rewrite or re-download the file, or leave it out.")
    return DataError(f"{what}: reading the data failed: {message}")


def next_batch(iterator, what: str, source=None):
    """``next(iterator)``, with pipeline failures (damaged or malformed records) turned into a DataError naming
    the file; ``source``: the (unbatched) dataset the iterator reads, to look at its files only."""
    import tensorflow as tf

    try:
        return next(iterator)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise diagnose(e, what, source) from e
