"""TensorProto codec: raw tensor_content encoding, typed-field decoding, TensorFlow as the reference."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from taskology_tf.serving import codec

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64]
SHAPES = [(), (1,), (2, 3), (2, 1, 3, 2)]
TYPED_FIELD = {
    types_pb2.DT_BOOL: "bool_val", types_pb2.DT_UINT8: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
}


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return (rng.normal(size=shape) * 100).astype(dtype)


def typed_proto(array):
    """What a client filling the typed repeated fields sends (written here independently of codec)."""
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(array.dtype).as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.reshape(-1)
    if array.dtype == np.float16:
        proto.half_val.extend(int(v) for v in flat.view(np.uint16))
    else:
        getattr(proto, TYPED_FIELD[proto.dtype]).extend(flat.tolist())
    return proto


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_uses_tensor_content(dtype, shape):
    array = sample(dtype, shape)
    proto = codec.to_tensor_proto(array)
    assert proto.dtype == tf.as_dtype(np.dtype(dtype)).as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == list(shape)
    assert len(proto.tensor_content) == array.size * array.itemsize
    assert not any(f.name.endswith("_val") for f, _ in proto.ListFields())
    decoded = codec.from_tensor_proto(proto)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)  # TensorFlow reads our encoding


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_decodes_typed_fields(dtype, shape):
    array = sample(dtype, shape, seed=1)
    proto = typed_proto(array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)  # the helper writes what TF expects
    decoded = codec.from_tensor_proto(proto)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("dtype", [tf.bool, tf.uint8, tf.int32, tf.int64, tf.float16, tf.float32, tf.float64])
def test_decodes_make_tensor_proto_broadcast_scalar(dtype):
    value = {tf.bool: True, tf.float16: -1.5}.get(dtype, 3)
    proto = tf.make_tensor_proto(value, dtype=dtype, shape=[2, 3])
    assert not proto.tensor_content  # a single typed value for a [2, 3] tensor
    decoded = codec.from_tensor_proto(proto)
    np.testing.assert_array_equal(decoded, tf.make_ndarray(proto))
    assert decoded.shape == (2, 3) and decoded.dtype == dtype.as_numpy_dtype


def test_half_val_bit_patterns():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF)
    proto.tensor_shape.dim.add(size=4)
    proto.half_val.extend([0x3C00, 0xC000, 0x7C00, 0x0001])  # 1, -2, inf, smallest subnormal
    decoded = codec.from_tensor_proto(proto)
    assert decoded.dtype == np.float16
    np.testing.assert_array_equal(decoded, np.array([1.0, -2.0, np.inf, 2.0**-24], np.float16))


def test_fewer_values_repeat_the_last_and_none_give_zeros():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=4)
    proto.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(codec.from_tensor_proto(proto), [1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(codec.from_tensor_proto(proto), tf.make_ndarray(proto))
    del proto.float_val[:]
    np.testing.assert_array_equal(codec.from_tensor_proto(proto), np.zeros(4, np.float32))


@pytest.mark.parametrize(
    "values", [[b"ab", b"", b"\x00\xff"], ["caf\u00e9", "x", "yz"], np.array([b"a", b"bc", b"d"])], ids=["bytes", "str", "S"]
)
def test_strings_round_trip_through_string_val(values):
    array = np.asarray(values, dtype=object).reshape(3, 1) if isinstance(values, list) else values.reshape(3, 1)
    proto = codec.to_tensor_proto(array)
    assert proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == 3 and not proto.tensor_content
    decoded = codec.from_tensor_proto(proto)
    expected = [v.encode() if isinstance(v, str) else bytes(v) for v in np.asarray(values).reshape(-1).tolist()]
    assert decoded.shape == (3, 1) and decoded.dtype == object
    assert decoded.reshape(-1).tolist() == expected
    assert tf.make_ndarray(proto).reshape(-1).tolist() == expected
    np.testing.assert_array_equal(codec.from_tensor_proto(tf.make_tensor_proto(expected)), np.array(expected, object))


def test_empty_and_view_decoding():
    empty = codec.to_tensor_proto(np.zeros((0, 3), np.float32))
    assert codec.from_tensor_proto(empty).shape == (0, 3)
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    view = codec.from_tensor_proto(codec.to_tensor_proto(array), copy=False)
    np.testing.assert_array_equal(view, array)
    assert not view.flags.writeable
    assert codec.from_tensor_proto(codec.to_tensor_proto(array)).flags.writeable


def test_non_contiguous_and_big_endian_inputs_are_normalized():
    array = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    decoded = codec.from_tensor_proto(codec.to_tensor_proto(array))
    np.testing.assert_array_equal(decoded, array.astype(np.float32))
    assert decoded.dtype == np.float32


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="complex64"):
        codec.to_tensor_proto(np.zeros(2, np.complex64))
    bad = codec.to_tensor_proto(np.zeros((2, 3), np.float32))
    bad.tensor_shape.dim[1].size = 4
    with pytest.raises(ValueError, match="24 bytes .* needs 32"):
        codec.from_tensor_proto(bad)
    too_many = tf.make_tensor_proto(np.zeros(3, np.float32)[:1], shape=[1])
    too_many.float_val.extend([1.0, 2.0])
    with pytest.raises(ValueError, match="3 values"):
        codec.from_tensor_proto(too_many)
    with pytest.raises(TypeError, match="not supported"):
        codec.from_tensor_proto(tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64))
