"""export_model's signatures: ``serving_default`` and ``serving_float16``, served over real gRPC on 127.0.0.1."""

import os
import pathlib
import warnings

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from taskology_tf.serving.export import FLOAT16_SIGNATURE, WARMUP_FILE, export_model, list_versions
from taskology_tf.serving.peer import ServingPeer


def signature_defs(version_dir):
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pathlib.Path(version_dir, "saved_model.pb").read_bytes())
    return saved.meta_graphs[0].signature_def


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny):
    """Version 1 of the tiny model (bias 0.25), both signatures, with a warm-up request."""
    folder = tmp_path_factory.mktemp("export") / "tiny"
    model = tiny.tiny_model(bias=0.25)
    export_model(model, str(folder), 1, warmup_inputs={"image": tiny.images(1)})
    return str(folder)


def test_both_signatures_have_the_same_inputs_and_output_names(base):
    defs = signature_defs(os.path.join(base, "1"))
    assert {"serving_default", FLOAT16_SIGNATURE} <= set(defs)
    default, half = defs["serving_default"], defs[FLOAT16_SIGNATURE]
    assert default.method_name == half.method_name == "tensorflow/serving/predict"
    assert set(default.inputs) == set(half.inputs) == {"image"}
    assert default.inputs["image"].dtype == half.inputs["image"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in half.inputs["image"].tensor_shape.dim] == [-1, -1, -1, 3]  # dynamic batch and size
    assert set(default.outputs) == set(half.outputs) == {"depth", "mean"}
    assert {o.dtype for o in default.outputs.values()} == {types_pb2.DT_FLOAT}
    assert {o.dtype for o in half.outputs.values()} == {types_pb2.DT_HALF}
    # the warm-up file is unchanged: one request, for serving_default
    records = list(tf.data.TFRecordDataset(os.path.join(base, "1", WARMUP_FILE)))
    assert len(records) == 1
    assert prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request.model_spec.signature_name == (
        "serving_default"
    )


def test_float16_signature_can_be_left_out(tmp_path, tiny):
    export_model(tiny.tiny_model(), str(tmp_path), 3, float16_signature=False)
    defs = signature_defs(tmp_path / "3")
    assert "serving_default" in defs and FLOAT16_SIGNATURE not in defs


def test_non_dict_outputs_are_a_clear_error_and_leave_no_version(tmp_path):
    inputs = keras.Input((2,), name="x")
    model = keras.Model({"x": inputs}, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match=r"named dict outputs.*float16_signature=False"):
        export_model(model, str(tmp_path), 1)
    assert list_versions(str(tmp_path)) == [] and os.listdir(tmp_path) == []


def _stock_predict(address, image, signature):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
    with grpc.insecure_channel(address) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10.0)


def test_server_answers_serving_float16_with_half_tensors(base, tiny):
    image = tiny.images(2, 6, 8, seed=7)
    with tiny.serving({"tiny": base}, "tiny") as (server, client):
        full = _stock_predict(server.address, image, "serving_default")
        half = _stock_predict(server.address, image, FLOAT16_SIGNATURE)
        assert half.model_spec.signature_name == FLOAT16_SIGNATURE and half.model_spec.version.value == 1
        for key in ("depth", "mean"):
            assert full.outputs[key].dtype == types_pb2.DT_FLOAT
            assert half.outputs[key].dtype == types_pb2.DT_HALF
            assert len(half.outputs[key].tensor_content) * 2 == len(full.outputs[key].tensor_content)
            got, want = tf.make_ndarray(half.outputs[key]), tf.make_ndarray(full.outputs[key])
            assert got.dtype == np.float16 and got.shape == want.shape
            np.testing.assert_array_equal(got, want.astype(np.float16))  # the float32 answer, rounded
            np.testing.assert_allclose(got, tiny.reference(image, 0.25)[key], rtol=1e-3, atol=1e-3)
        assert half.outputs["depth"].ByteSize() < 0.6 * full.outputs["depth"].ByteSize()
        client.signature_name = FLOAT16_SIGNATURE
        meta = client.metadata()
        assert meta["outputs"]["depth"]["dtype"] == "float16" and meta["inputs"]["image"]["dtype"] == "uint8"


def test_float16_peer_gets_the_float16_signature_without_falling_back(base, tiny):
    image = tiny.images(3, 5, 4, seed=11)
    with tiny.serving({"tiny": base}, "tiny") as (server, client):
        full, _ = client.predict({"image": image})
        with ServingPeer("depth", server.address, model_name="tiny", float16_outputs=True, prefetch=False) as peer:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the fallback warns; it must not happen
                for _ in range(2):
                    out = peer.predict({"image": image})
            assert peer.version == 1
    for key in ("depth", "mean"):
        assert out[key].dtype == tf.float32
        # float32 on arrival but carrying float16 values: the served float32 answer rounded to half precision
        np.testing.assert_array_equal(out[key].numpy(), full[key].astype(np.float16).astype(np.float32))
    assert not np.array_equal(out["depth"].numpy(), full["depth"])  # it did not come from serving_default


# -- shared storage: a local path and TensorFlow's in-memory ram:// filesystem (an object store stand-in) ------


def _base(kind, tmp_path):
    import uuid

    return str(tmp_path / "m") if kind == "local" else f"ram://export-{uuid.uuid4().hex}/m"


@pytest.mark.parametrize("kind", ["local", "ram"])
def test_export_serve_and_prune_on_a_local_path_and_ram(kind, tmp_path, tiny):
    from taskology_tf.core import storage

    base = _base(kind, tmp_path)
    image = tiny.images(2)
    with tiny.serving({"m": base}, "m", poll_seconds=3600) as (server, client):
        for version in (1, 2, 3):
            export_model(tiny.tiny_model(bias=float(version)), base, version, keep=2,
                         warmup_inputs={"image": tiny.images(1)})
        assert list_versions(base) == [2, 3]
        assert storage.listdir(base) == ["2", "3"]  # no temporary folder left behind
        server.poll()
        outputs, version = client.predict({"image": image})
        assert version == 3
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image, 3.0)["depth"], atol=1e-5)


@pytest.mark.parametrize("kind", ["local", "ram"])
def test_server_never_loads_a_version_published_file_by_file_before_it_is_complete(kind, tmp_path, tiny):
    """An object store has no atomic folder rename: the version is copied in with saved_model.pb last. A poll
    after every single file must keep serving the previous version until the last file is there."""
    from taskology_tf.core import storage

    base = _base(kind, tmp_path)
    export_model(tiny.tiny_model(bias=1.0), base, 1)
    staged = storage.join(base, ".tmp-2-test")
    export_model(tiny.tiny_model(bias=2.0), staged, 2)  # a finished SavedModel under a non-numeric name
    staged = storage.join(staged, "2")
    image = tiny.images(2)
    copied = []
    with tiny.serving({"m": base}, "m", poll_seconds=3600) as (server, client):
        def look(rel):
            copied.append(rel)
            server.poll()
            if rel != "saved_model.pb":
                assert server.loaded_version("m") == 1, f"loaded after copying only {copied}"
                assert dict(client.status())[2] == "LOADING"

        storage.publish_tree(staged, storage.join(base, "2"), last=("saved_model.pb",), atomic_rename=False,
                             on_copy=look)
        assert copied[-1] == "saved_model.pb" and any(r.startswith("variables/") for r in copied)
        assert server.loaded_version("m") == 2  # loaded by the poll right after the last file
        outputs, version = client.predict({"image": image})
        assert version == 2
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image, 2.0)["depth"], atol=1e-5)


def test_a_version_cut_short_on_an_object_store_is_published_again(tmp_path, tiny):
    from taskology_tf.core import storage

    base = _base("ram", tmp_path)
    export_model(tiny.tiny_model(bias=1.0), base, 5)
    storage.remove(storage.join(base, "5", "saved_model.pb"))  # as if the writer died before its last file
    export_model(tiny.tiny_model(bias=1.0), base, 5)
    assert storage.exists(storage.join(base, "5", "saved_model.pb"))
    loaded = tf.saved_model.load(storage.join(base, "5"))
    assert "serving_default" in loaded.signatures
