"""Protocol conformance: stock TF Serving stubs against our server, our client against a stock-servicer server.

Requests and responses here are built the way TF Serving documents them (``tf.make_tensor_proto`` /
``tf.make_ndarray``, ``prediction_service_pb2_grpc``), so both sides are checked against the
protocol, not only against each other.
"""

import concurrent.futures
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from taskology_tf.serving.client import (
    InvalidRequestError,
    ModelNotFoundError,
    PeerUnavailableError,
    PredictClient,
    ServingError,
    Traffic,
)

# -- stock client -> our server -------------------------------------------------------------------


def test_stock_predict_request_against_our_server(shared_server, tiny):
    server, _ = shared_server
    image = tiny.images(2, 3, 4, seed=9)
    channel = grpc.insecure_channel(server.address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
    response = stub.Predict(request, 10.0)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert response.outputs["depth"].tensor_content  # raw bytes on the wire
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["depth"]), tiny.reference(image)["depth"], atol=1e-5)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["mean"]), tiny.reference(image)["mean"], atol=1e-5)

    # a typed-field input (one int_val broadcast over the shape), as make_tensor_proto writes it
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(200, dtype=tf.uint8, shape=[1, 2, 3, 3]))
    assert not request.inputs["image"].tensor_content
    request.output_filter.append("depth")
    response = stub.Predict(request, 10.0)
    assert list(response.outputs) == ["depth"]
    expected = tiny.reference(np.full((1, 2, 3, 3), 200, np.uint8))["depth"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["depth"]), expected, atol=1e-5)
    channel.close()


def test_stock_metadata_and_status_requests_against_our_server(shared_server):
    server, _ = shared_server
    with grpc.insecure_channel(server.address) as channel:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = "tiny"
        request.metadata_field.append("signature_def")
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, 10.0)
        assert response.model_spec.version.value == 1
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        definition = signature_map.signature_def["serving_default"]
        assert definition.method_name == "tensorflow/serving/predict"
        assert set(definition.outputs) == {"depth", "mean"}

        empty = get_model_metadata_pb2.GetModelMetadataRequest()
        empty.model_spec.name = "tiny"
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(empty, 10.0)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "tiny"
        status_request.model_spec.version.value = 1
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, 10.0)
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]


# -- our client -> a servicer written from the stock PredictionServiceServicer ----------------------


class ScriptedPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict with typed-field TensorProtos; ``failures`` lists status codes to answer first."""

    def __init__(self):
        self.failures: list[grpc.StatusCode] = []
        self.delay = 0.0
        self.requests: list[predict_pb2.PredictRequest] = []
        self.lock = threading.Lock()
        self.released = threading.Event()  # set at teardown: requests still held by ``delay`` finish at once

    def Predict(self, request, context):
        with self.lock:
            self.requests.append(request)
            failure = self.failures.pop(0) if self.failures else None
        if self.delay:
            self.released.wait(self.delay)
        if failure is not None:
            context.abort(failure, f"scripted {failure.name}")
        x = tf.make_ndarray(request.inputs["x"])  # TF itself decodes what our client sent
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 42
        outputs = {
            "echo": tf.make_tensor_proto(x),
            "scores": tf.make_tensor_proto(2.5, dtype=tf.float32, shape=[x.shape[0], 2]),
            "flags": tf.make_tensor_proto(np.array([True, False, True])),
            "half": tf.make_tensor_proto(np.float16(1.5), shape=[2]),
            "count": tf.make_tensor_proto(np.int64(x.size)),
            "ids": tf.make_tensor_proto(7, dtype=tf.int32, shape=[2, 2]),
            "names": tf.make_tensor_proto([b"a", b"bc"]),
            "precise": tf.make_tensor_proto(np.float64(0.1), shape=[1]),
        }
        for name, proto in outputs.items():
            if not request.output_filter or name in request.output_filter:
                response.outputs[name].CopyFrom(proto)
        return response

    def GetModelMetadata(self, request, context):
        if request.model_spec.name != "peer":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({request.model_spec.name})")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        definition = signature_map.signature_def["serving_default"]
        definition.method_name = "tensorflow/serving/predict"
        x = definition.inputs["x"]
        x.name, x.dtype = "serving_default_x:0", types_pb2.DT_FLOAT
        for size in (-1, 3):
            x.tensor_shape.dim.add(size=size)
        y = definition.outputs["y"]
        y.name, y.dtype = "out:0", types_pb2.DT_HALF
        y.tensor_shape.unknown_rank = True
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = "peer"
        response.model_spec.version.value = 42
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ScriptedModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self):
        self.available = threading.Event()
        self.available.set()

    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=41, state=get_model_status_pb2.ModelVersionStatus.END)
        state = "AVAILABLE" if self.available.is_set() else "LOADING"
        response.model_version_status.add(version=42, state=get_model_status_pb2.ModelVersionStatus.State.Value(state))
        return response


@pytest.fixture
def scripted():
    predict, models = ScriptedPredictionService(), ScriptedModelService()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predict, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", predict, models
    predict.released.set()
    server.stop(0).wait()


def test_client_decodes_typed_field_outputs(scripted):
    address, service, _ = scripted
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with PredictClient(address, "peer", signature_name="sig") as client:
        outputs, version = client.predict({"x": x})
    assert version == 42
    request = service.requests[-1]
    assert request.model_spec.name == "peer" and request.model_spec.signature_name == "sig"
    np.testing.assert_array_equal(outputs["echo"], x)
    np.testing.assert_array_equal(outputs["scores"], np.full((2, 2), 2.5, np.float32))
    np.testing.assert_array_equal(outputs["flags"], [True, False, True])
    assert outputs["half"].dtype == np.float16 and outputs["half"].tolist() == [1.5, 1.5]
    assert outputs["count"].shape == () and outputs["count"] == 6 and outputs["count"].dtype == np.int64
    np.testing.assert_array_equal(outputs["ids"], np.full((2, 2), 7, np.int32))
    assert outputs["names"].tolist() == [b"a", b"bc"]
    assert outputs["precise"].dtype == np.float64 and outputs["precise"].tolist() == [0.1]
    for name, array in outputs.items():  # same as TensorFlow's own decoding
        expected = tf.make_ndarray(service.Predict(request, None).outputs[name])
        np.testing.assert_array_equal(array, expected)


def test_client_output_filter_is_sent(scripted):
    address, service, _ = scripted
    with PredictClient(address, "peer") as client:
        outputs, _ = client.predict({"x": np.zeros((1, 3), np.float32)}, output_filter=["count", "ids"])
    assert list(service.requests[-1].output_filter) == ["count", "ids"]
    assert set(outputs) == {"count", "ids"}


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_client_retries_transient_errors_with_backoff(scripted, code):
    address, service, _ = scripted
    service.failures = [code, code]
    with PredictClient(address, "peer", retries=3, backoff=0.05) as client:
        start = time.monotonic()
        _, version = client.predict({"x": np.zeros((1, 3), np.float32)})
    assert version == 42 and len(service.requests) == 3
    assert time.monotonic() - start >= 0.05 + 0.1  # waited backoff, then twice that


def test_client_counts_the_bytes_of_every_attempt_in_a_shared_traffic(scripted):
    address, service, _ = scripted
    shared = Traffic()
    x = np.zeros((2, 3), np.float32)
    with PredictClient(address, "peer", retries=1, backoff=0.01, traffic=shared) as a, \
            PredictClient(address, "peer", traffic=shared) as b:
        service.failures = [grpc.StatusCode.UNAVAILABLE]
        a.predict({"x": x})  # a retried call: its request went out twice
        b.predict({"x": x}, output_filter=["count"])
    sent = [r.ByteSize() for r in service.requests]
    assert len(sent) == 3 and sent[0] == sent[1]
    answers = [service.Predict(r, None).ByteSize() for r in service.requests[1:]]
    assert shared.as_dict() == {"requests": 3, "answers": 2, "bytes_sent": sum(sent), "bytes_received": sum(answers)}
    assert a.traffic is shared
    with PredictClient(address, "peer") as own:
        assert own.traffic is not shared and own.traffic.as_dict()["requests"] == 0


def test_client_gives_up_with_peer_unavailable(scripted):
    address, service, _ = scripted
    service.failures = [grpc.StatusCode.UNAVAILABLE] * 5
    with PredictClient(address, "peer", retries=2, backoff=0.01) as client:
        with pytest.raises(PeerUnavailableError, match=r"at 127\.0\.0\.1:\d+ .* model 'peer' after 3 attempt\(s\)") as info:
            client.predict({"x": np.zeros((1, 3), np.float32)})
    assert info.value.attempts == 3 and info.value.model_name == "peer" and info.value.address == address
    assert isinstance(info.value, ConnectionError) and len(service.requests) == 3


def test_client_deadline_on_every_call(scripted):
    address, service, _ = scripted
    service.delay = 600.0  # the server answers only when the test ends
    with PredictClient(address, "peer", timeout=0.1, retries=1, backoff=0.01) as client:
        with pytest.raises(PeerUnavailableError, match="DEADLINE_EXCEEDED"):
            client.predict({"x": np.zeros((1, 3), np.float32)})  # returns: each attempt ends at its deadline
    assert len(service.requests) <= 2  # the request and its one retry (a handler may not start before its deadline)


@pytest.mark.parametrize(
    "code, error",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
        (grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, ServingError),
    ],
)
def test_client_does_not_retry_request_errors(scripted, code, error):
    address, service, _ = scripted
    service.failures = [code] * 5
    with PredictClient(address, "peer", retries=3, backoff=0.5) as client:
        with pytest.raises(error, match=f"Predict of model 'peer' at .*: {code.name}: scripted") as info:
            client.predict({"x": np.zeros((1, 3), np.float32)})
    assert info.value.code == code and len(service.requests) == 1


def test_client_metadata_status_and_wait(scripted):
    address, _, models = scripted
    with PredictClient(address, "peer") as client:
        meta = client.metadata()
        assert meta["version"] == 42 and meta["signatures"] == ["serving_default"]
        assert meta["inputs"] == {"x": {"dtype": "float32", "shape": (None, 3)}}
        assert meta["outputs"] == {"y": {"dtype": "float16", "shape": None}}
        models.available.clear()
        assert client.status() == [(41, "END"), (42, "LOADING")]
        assert not client.wait_until_available(0.05)
        threading.Timer(0.2, models.available.set).start()
        assert client.wait_until_available(60.0)
        assert client.status() == [(41, "END"), (42, "AVAILABLE")]
    with PredictClient(address, "other", retries=3) as other:
        with pytest.raises(ModelNotFoundError, match=r"Latest\(other\)"):
            other.metadata()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    with PredictClient(address, "depth", timeout=1.0, retries=2, backoff=0.1) as client:
        start = time.monotonic()
        with pytest.raises(PeerUnavailableError) as info:
            client.predict({"image": np.zeros((1, 2, 2, 3), np.uint8)})
        assert time.monotonic() - start >= 0.1 + 0.2
        message = str(info.value)
        assert address in message and "'depth'" in message and "3 attempt(s)" in message
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert not client.wait_until_available(0.2)


def test_client_argument_errors():
    with pytest.raises(ValueError, match="host:port"):
        PredictClient("localhost", "m")
    with pytest.raises(ValueError, match="retries >= 0"):
        PredictClient("localhost:1", "m", retries=-1)
