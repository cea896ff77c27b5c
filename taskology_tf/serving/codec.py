"""Numpy arrays <-> ``tensorflow.TensorProto``, the tensor encoding of TF Serving's gRPC API.

Encoding always writes the raw little-endian bytes to ``tensor_content`` (one copy, no per-element
protobuf fields), except strings, which go to ``string_val``. Decoding accepts both that and the
typed repeated fields that other clients send (``tf.make_tensor_proto`` writes ``float_val``,
``int_val``, ``half_val``, ...), with TensorFlow's rules: no values -> zeros, fewer values than
elements -> the last value repeats (one value broadcasts to the whole shape).
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# numpy dtype -> (DataType enum, typed repeated field of TensorProto that carries its values).
_NUMERIC: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.uint32): (types_pb2.DT_UINT32, "uint32_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.uint64): (types_pb2.DT_UINT64, "uint64_val"),
    np.dtype(np.float16): (types_pb2.DT_HALF, "half_val"),
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
}
_BY_ENUM: dict[int, tuple[np.dtype, str]] = {enum: (dt, field) for dt, (enum, field) in _NUMERIC.items()}
_OBJECT = np.dtype(object)


def supported_dtypes() -> tuple[str, ...]:
    """Names of the numpy dtypes the codec handles (plus ``string``)."""
    return tuple(dt.name for dt in _NUMERIC) + ("string",)


def datatype_enum(dtype) -> int:
    """The ``tensorflow.DataType`` enum value for a numpy dtype (str/bytes/object -> ``DT_STRING``)."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return types_pb2.DT_STRING
    if dt.newbyteorder("=") in _NUMERIC:
        return _NUMERIC[dt.newbyteorder("=")][0]
    raise TypeError(f"dtype {dt} has no TensorProto encoding here; use one of {supported_dtypes()}.")


def numpy_dtype(enum: int) -> np.dtype:
    """The numpy dtype for a ``tensorflow.DataType`` enum value (``DT_STRING`` -> object of bytes)."""
    if enum == types_pb2.DT_STRING:
        return _OBJECT
    if enum not in _BY_ENUM:
        raise TypeError(f"TensorProto dtype {dtype_name(enum)} is not supported; use one of {supported_dtypes()}.")
    return _BY_ENUM[enum][0]


def dtype_name(enum: int) -> str:
    """Short name of a ``tensorflow.DataType`` enum (``DT_UINT8`` -> ``uint8``, ``DT_HALF`` -> ``float16``)."""
    if enum in _BY_ENUM:
        return _BY_ENUM[enum][0].name
    if enum == types_pb2.DT_STRING:
        return "string"
    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType({enum})"


def _shape_proto(shape) -> tensor_shape_pb2.TensorShapeProto:
    proto = tensor_shape_pb2.TensorShapeProto()
    for size in shape:
        proto.dim.add(size=int(size))
    return proto


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value)
    raise TypeError(f"string tensors hold bytes or str elements, got {type(value).__name__}.")


def to_tensor_proto(array) -> tensor_pb2.TensorProto:
    """Encode an array (any shape) as a TensorProto: raw bytes in ``tensor_content``, strings in ``string_val``.

    Args:
      array: a numpy array (or anything ``np.asarray`` accepts, e.g. an eager tensor) of dtype bool,
        (u)int8/16/32/64, float16/32/64, or bytes/str/object-of-bytes (a string tensor).
    """
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(dtype=datatype_enum(array.dtype), tensor_shape=_shape_proto(array.shape))
    if proto.dtype == types_pb2.DT_STRING:
        proto.string_val.extend(_as_bytes(v) for v in array.reshape(-1).tolist())
        return proto
    little = array.dtype.newbyteorder("<")
    proto.tensor_content = np.ascontiguousarray(array, dtype=little).tobytes()
    return proto


def _shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise ValueError("a TensorProto with unknown rank carries no values; send a fully defined shape.")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(s < 0 for s in shape):
        raise ValueError(f"a TensorProto must have a fully defined shape, got {list(shape)}.")
    return shape


def _fill(values: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """TensorFlow's rule for typed fields: none -> zeros; fewer -> repeat the last value; more -> error."""
    count = math.prod(shape)
    if values.size == 0:
        return np.zeros(shape, dtype)
    if values.size > count:
        raise ValueError(f"TensorProto has {values.size} values for shape {list(shape)} ({count} elements).")
    if values.size < count:
        values = np.concatenate([values, np.full(count - values.size, values[-1], values.dtype)])
    return values.reshape(shape)


def from_tensor_proto(proto: tensor_pb2.TensorProto, copy: bool = True) -> np.ndarray:
    """Decode a TensorProto into a numpy array of its shape and dtype (strings -> object array of bytes).

    Args:
      proto: a TensorProto with ``tensor_content`` or typed repeated values.
      copy: with ``tensor_content``, return a writable copy (True) or a read-only view of the
        message's bytes (False, saves a copy of large tensors).
    Raises:
      TypeError: unsupported dtype. ValueError: content size does not match the shape.
    """
    shape = _shape_of(proto)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=_OBJECT)
        values[:] = list(proto.string_val)
        if values.size == 0:
            return np.full(shape, b"", dtype=_OBJECT)
        return _fill(values, shape, _OBJECT)
    dtype, field = _BY_ENUM.get(proto.dtype, (None, None))
    if dtype is None:
        raise TypeError(f"TensorProto dtype {dtype_name(proto.dtype)} is not supported; use one of {supported_dtypes()}.")
    if proto.tensor_content:
        count = math.prod(shape)
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise ValueError(
                f"tensor_content has {len(proto.tensor_content)} bytes but a {dtype.name} tensor of shape "
                f"{list(shape)} needs {count * dtype.itemsize}."
            )
        values = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).reshape(shape)
        if values.dtype != dtype or copy:
            values = values.astype(dtype)  # byte swap on big-endian hosts; astype copies
        return values
    raw = getattr(proto, field)
    if field == "half_val":  # int32 fields holding the 16-bit patterns
        values = np.asarray(raw, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(raw, dtype=dtype)
    return _fill(values, shape, dtype)
