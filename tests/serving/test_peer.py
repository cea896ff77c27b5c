"""ServingPeer over real gRPC on 127.0.0.1: predictions and versions, wire format, prefetch, version pins,
float16 fallback, and what happens when the model server (a thread or a process) goes down and comes back."""

import concurrent.futures
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from taskology_tf.serving.export import export_model
from taskology_tf.serving.peer import PeerUnavailable, ServingPeer
from taskology_tf.serving.server import ModelServer
from taskology_tf.testing import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]


def predicts(peer, batch):
    """One predict call; True if the server answered it."""
    try:
        peer.predict(batch)
        return True
    except PeerUnavailable:
        return False


# -- a servicer written from the stock PredictionServiceServicer --------------------------------------


class FakePeerService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """depth = mean over channels of image / 255 + version; records requests; scriptable delay/outage/versions."""

    def __init__(self):
        self.requests: list[predict_pb2.PredictRequest] = []
        self.delay = 0.0
        self.down = False
        self.versions = [1]  # loaded versions; the newest answers unpinned requests
        self.answer_versions: list[int] = []  # answer these first (out-of-order replicas)
        self.signatures = {"serving_default"}
        self.lock = threading.Lock()
        self.released = threading.Event()  # set at teardown: requests still held by ``delay`` finish at once

    def Predict(self, request, context):
        with self.lock:
            self.requests.append(request)
            forced = self.answer_versions.pop(0) if self.answer_versions else None
        if self.delay:
            self.released.wait(self.delay)
        if self.down:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in self.signatures:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no signature '{signature}'")
        if request.model_spec.HasField("version"):
            version = request.model_spec.version.value
            if version not in self.versions:
                context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} is not loaded")
        else:
            version = forced if forced is not None else max(self.versions)
        image = tf.make_ndarray(request.inputs["image"])
        dtype = np.float16 if signature == "serving_float16" else np.float32
        depth = (image.astype(np.float32).mean(-1, keepdims=True) / 255.0 + version).astype(dtype)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        for name, value in {"depth": depth, "mean": depth.mean(axis=(1, 2))}.items():
            if not request.output_filter or name in request.output_filter:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name in self.signatures:
            signature_map.signature_def[name].method_name = "tensorflow/serving/predict"
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = max(self.versions)
        response.metadata["signature_def"].Pack(signature_map)
        return response


def expected_depth(image, version):
    return image.astype(np.float32).mean(-1, keepdims=True) / 255.0 + version


@pytest.fixture
def fake():
    service = FakePeerService()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", service
    service.released.set()
    server.stop(0).wait()


# -- predictions, versions, wire format --------------------------------------------------------------


def test_predictions_match_keras_and_record_the_version(shared_server, tiny, model):
    server, _ = shared_server
    image = tiny.images(3, 6, 7, seed=1)
    with ServingPeer("depth", server.address, model_name="tiny", prefetch=False) as peer:
        assert peer.input_keys == ("image",) and peer.version == -1 and peer.staleness() == {}
        out = peer.predict({"image": tf.constant(image), "id": tf.constant([1, 2, 3], tf.int64)})
        assert peer.version == 1 and peer.available and peer.unavailable_steps == 0
        keras_out = model({"image": image})
        assert set(out) == {"depth", "mean"}
        for key in out:
            assert isinstance(out[key], tf.Tensor) and out[key].dtype == tf.float32
            np.testing.assert_allclose(out[key].numpy(), keras_out[key].numpy(), rtol=1e-6, atol=1e-6)
        staleness = peer.staleness()
        assert set(staleness) == {"steps", "seconds", "version"}
        assert staleness["version"] == 1.0 and staleness["steps"] == 0.0 and 0.0 <= staleness["seconds"] < 5.0
    with ServingPeer("depth", server.address, model_name="tiny", output_keys=["mean"], prefetch=False) as peer:
        assert set(peer.predict({"image": image})) == {"mean"}


def test_images_are_uint8_on_the_wire(fake):
    address, service = fake
    image = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    with ServingPeer("depth", address, prefetch=False) as peer:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # uint8 input: no conversion warning
            out = peer.predict({"image": tf.constant(image), "intrinsics": np.eye(3), "id": np.arange(2)})
        request = service.requests[-1]
        assert set(request.inputs) == {"image"}  # only input_keys are sent
        assert request.inputs["image"].dtype == types_pb2.DT_UINT8
        np.testing.assert_array_equal(tf.make_ndarray(request.inputs["image"]), image)
        np.testing.assert_allclose(out["depth"].numpy(), expected_depth(image, 1), rtol=1e-6)

        floats = image.astype(np.float32) / 255.0
        with pytest.warns(UserWarning, match="converting to uint8"):
            peer.predict({"image": floats})
        assert service.requests[-1].inputs["image"].dtype == types_pb2.DT_UINT8
        np.testing.assert_array_equal(tf.make_ndarray(service.requests[-1].inputs["image"]), image)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once only
            peer.predict({"image": tf.constant(floats)})
        with pytest.raises(ValueError, match=r"float32 with values in \[1.0, 248.0\].*uint8"):
            peer.predict({"image": image.astype(np.float32)})
        with pytest.raises(KeyError, match=r"needs inputs \['image'\]"):
            peer.predict({"image_next": image})


def test_new_version_updates_version_and_staleness(tmp_path, base_v1, tiny):
    base = tmp_path / "tiny"
    shutil.copytree(os.path.join(base_v1, "1"), base / "1")
    image = tiny.images(2, 4, 5, seed=3)
    with tiny.serving({"tiny": str(base)}) as (server, _):
        with ServingPeer("depth", server.address, model_name="tiny", prefetch=False) as peer:
            peer.predict({"image": image})
            assert peer.version == 1
            time.sleep(0.3)
            assert peer.staleness()["seconds"] >= 0.3
            exported_at = time.monotonic()  # version 2 cannot have been seen before it exists
            export_model(tiny.tiny_model(bias=1.5), str(base), 2)
            assert wait_for(lambda: peer.predict({"image": image}) and peer.version == 2)
            out = peer.predict({"image": image})
            np.testing.assert_allclose(out["depth"].numpy(), tiny.reference(image, 1.5)["depth"], rtol=1e-5, atol=1e-5)
            staleness = peer.staleness()
            assert staleness["version"] == 2.0 and staleness["steps"] == 0.0
            assert staleness["seconds"] <= time.monotonic() - exported_at  # counted from version 2, not version 1


def test_staleness_steps_count_versions_behind_the_newest_seen(fake):
    address, service = fake
    service.versions = [5]
    service.answer_versions = [5, 3]  # a lagging replica answers the second request
    image = np.zeros((1, 2, 2, 3), np.uint8)
    with ServingPeer("depth", address, prefetch=False) as peer:
        peer.predict({"image": image})
        assert peer.staleness()["steps"] == 0.0
        out = peer.predict({"image": image})
        np.testing.assert_allclose(out["depth"].numpy(), 3.0)
        assert peer.version == 3 and peer.staleness()["steps"] == 2.0 and peer.staleness()["version"] == 3.0
        peer.predict({"image": image})
        assert peer.version == 5 and peer.staleness()["steps"] == 0.0


# -- prefetch ----------------------------------------------------------------------------------------


def test_prefetch_overlaps_the_round_trip_with_the_step(fake):
    address, service = fake
    service.delay = 0.3
    rng = np.random.default_rng(1)
    batch = {"image": tf.constant(rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)), "id": tf.constant([7, 8], tf.int64)}
    other = {"image": tf.constant(rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8))}
    with ServingPeer("depth", address) as peer:
        peer.prefetch_next(batch)
        # The training step's work: the answer arrives meanwhile (the request went out with prefetch_next).
        assert wait_for(lambda: peer._pending.future.done())
        out = peer.predict({"image": batch["image"]})  # the trainer passes a new dict of the same tensors
        assert len(service.requests) == 1  # answered from the prefetched request, no second round trip
        np.testing.assert_allclose(out["depth"].numpy(), expected_depth(batch["image"].numpy(), 1), rtol=1e-6)

        start = time.monotonic()  # nothing prefetched: a synchronous round trip
        peer.predict(other)
        assert time.monotonic() - start >= 0.3 and len(service.requests) == 2

        peer.prefetch_next(batch)  # prefetched for another batch: predict asks for its own
        out = peer.predict(other)
        np.testing.assert_allclose(out["depth"].numpy(), expected_depth(other["image"].numpy(), 1), rtol=1e-6)

        peer.prefetch_next(batch)  # same images, other ids: not the same batch
        wait_for(lambda: peer._pending.future.done())
        count = len(service.requests)
        peer.predict({"image": batch["image"], "id": tf.constant([1, 2], tf.int64)})
        assert len(service.requests) == count + 1
    with ServingPeer("depth", address, prefetch=False) as peer:
        peer.prefetch_next(batch)  # a no-op
        time.sleep(0.05)
        assert len(service.requests) == count + 1


def test_traffic_counts_prefetched_synchronous_and_unused_requests(fake):
    address, service = fake
    rng = np.random.default_rng(2)
    batch = {"image": rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8), "id": np.array([1, 2])}
    other = {"image": rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8), "id": np.array([3, 4])}
    with ServingPeer("depth", address) as peer:
        assert peer.traffic.as_dict() == {"requests": 0, "answers": 0, "bytes_sent": 0, "bytes_received": 0}
        peer.prefetch_next(batch)
        peer.predict(batch)  # the prefetched answer
        peer.prefetch_next(batch)
        assert wait_for(lambda: peer._pending.future.done())
        peer.predict(other)  # the prefetch was for another batch: it was sent all the same, then this one
        traffic = peer.traffic.as_dict()
    requests = list(service.requests)  # answering them again below records them again
    assert traffic["requests"] == traffic["answers"] == len(requests) == 3
    assert traffic["bytes_sent"] == sum(r.ByteSize() for r in requests)
    assert traffic["bytes_received"] == sum(service.Predict(r, None).ByteSize() for r in requests)
    assert traffic["bytes_received"] > 2 * 3 * 4 * 4  # the float32 depth answers at least


# -- version pins and float16 ------------------------------------------------------------------------


def test_refresh_steps_pin_the_version_until_due(fake):
    address, service = fake
    image = np.zeros((1, 2, 2, 3), np.uint8)
    with ServingPeer("depth", address, refresh_steps=2, prefetch=False) as peer:
        peer.on_step(0)
        peer.predict({"image": image})
        assert not service.requests[-1].model_spec.HasField("version") and peer.version == 1
        service.versions = [1, 2]
        peer.on_step(1)
        peer.predict({"image": image})  # pinned to version 1
        assert service.requests[-1].model_spec.version.value == 1 and peer.version == 1
        peer.on_step(2)
        peer.predict({"image": image})  # pin due: the newest, pinned again
        assert not service.requests[-1].model_spec.HasField("version") and peer.version == 2
        service.versions = [3]  # the pinned version is unloaded (a "latest 1" server)
        peer.on_step(3)
        out = peer.predict({"image": image})
        assert [r.model_spec.version.value for r in service.requests[-2:]] == [2, 0]
        assert peer.version == 3 and float(out["depth"].numpy().max()) == 3.0


def test_float16_outputs_fall_back_to_serving_default_once(tmp_path, tiny):
    base = str(tmp_path / "tiny")
    export_model(tiny.tiny_model(), base, 1, float16_signature=False)  # e.g. exported by another tool
    image = tiny.images(2, 3, 4, seed=4)
    with tiny.serving({"tiny": base}) as (server, _):
        with ServingPeer("depth", server.address, model_name="tiny", float16_outputs=True, prefetch=False) as peer:
            with pytest.warns(UserWarning, match="no signature 'serving_float16'"):
                out = peer.predict({"image": image})
            np.testing.assert_allclose(out["depth"].numpy(), tiny.reference(image)["depth"], rtol=1e-5, atol=1e-6)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                peer.predict({"image": image})


def test_float16_outputs_arrive_as_float32(fake):
    address, service = fake
    service.signatures = {"serving_default", "serving_float16"}
    image = np.full((1, 2, 2, 3), 51, np.uint8)
    with ServingPeer("depth", address, float16_outputs=True, prefetch=False) as peer:
        out = peer.predict({"image": image})
    assert service.requests[-1].model_spec.signature_name == "serving_float16"
    assert out["depth"].dtype == tf.float32
    np.testing.assert_allclose(out["depth"].numpy(), 1.2, rtol=1e-3)


# -- peer down ---------------------------------------------------------------------------------------


def test_down_peer_reuses_last_predictions_within_bounds(fake, caplog):
    address, service = fake
    rng = np.random.default_rng(2)
    batch = lambda h=3: {"image": rng.integers(0, 256, (2, h, 4, 3), dtype=np.uint8)}  # noqa: E731
    caplog.set_level(logging.INFO, logger="taskology_tf.serving.peer")
    with ServingPeer("depth", address, timeout=1.0, retries=1, backoff=0.01, max_staleness_steps=2,
                     probe_seconds=0.05, prefetch=False) as peer:
        peer.on_step(0)
        first = peer.predict(batch())
        service.down = True
        peer.on_step(1)
        assert peer.predict(batch()) is first and not peer.available and peer.unavailable_steps == 1
        peer.on_step(2)
        assert peer.predict(batch()) is first and peer.version == 1
        with pytest.raises(PeerUnavailable, match="shapes"):
            peer.predict(batch(h=5))
        peer.on_step(3)
        with pytest.raises(PeerUnavailable, match=r"3 step\(s\) old \(max_staleness_steps=2\)") as info:
            peer.predict(batch())
        assert isinstance(info.value, ConnectionError) and info.value.task_name == "depth"
        assert peer.unavailable_steps == 4
        service.down = False
        time.sleep(0.06)
        peer.on_step(4)
        fresh = peer.predict(batch())
        assert fresh is not first and peer.available
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is unavailable" in m for m in messages) == 1
    assert sum("is back" in m and "4 step(s) without it" in m for m in messages) == 1

    with ServingPeer("depth", address, retries=0, max_staleness_seconds=0.2, prefetch=False) as peer:
        first = peer.predict(batch())
        service.down = True
        assert peer.predict(batch()) is first
        time.sleep(0.25)
        with pytest.raises(PeerUnavailable, match="s old"):
            peer.predict(batch())
    service.down = False
    with ServingPeer("depth", address, retries=0, prefetch=False) as peer:  # default: never reuse
        peer.predict(batch())
        service.down = True
        with pytest.raises(PeerUnavailable, match="reusing old predictions is off"):
            peer.predict(batch())


def test_hung_server_never_holds_predict_past_the_bound(fake):
    address, service = fake
    service.delay = 600.0  # hung: answers only when the test ends
    image = {"image": np.zeros((1, 2, 2, 3), np.uint8)}
    with ServingPeer("depth", address, timeout=0.2, retries=1, backoff=0.05, probe_seconds=3600.0) as peer:
        assert peer.max_wait_seconds == pytest.approx(0.45)
        peer.prefetch_next(image)
        # Returns although the server never answers: the client's deadlines end the call (or, on a machine so
        # loaded that they have not fired yet, the peer's own guard of max_wait_seconds + slack does).
        with pytest.raises(PeerUnavailable, match="DEADLINE_EXCEEDED|did not answer"):
            peer.predict(image)
        asked = len(service.requests)
        assert 1 <= asked <= 2  # the request and at most its one retry
        with pytest.raises(PeerUnavailable):  # down, probe not due: fails without asking the server again
            peer.predict(image)
        assert len(service.requests) == asked and not peer.available


def test_server_stopped_and_restarted_on_the_same_port(base_v1, tiny):
    image = {"image": tiny.images(2, 4, 5, seed=6)}
    server = ModelServer({"tiny": base_v1}, poll_seconds=0.05)
    port = server.start()
    restarted = None
    # Generous deadlines: the bounds below show that a stopped server (connection refused) fails fast rather
    # than after timeout x retries, with room for a loaded machine.
    peer = ServingPeer("depth", f"127.0.0.1:{port}", model_name="tiny", timeout=15.0, retries=2, backoff=0.05,
                       max_staleness_steps=1, probe_seconds=0.05)
    try:
        peer.on_step(0)
        first = peer.predict(image)
        server.stop(grace=0)
        peer.on_step(1)
        start = time.monotonic()
        assert peer.predict(image) is first and not peer.available
        assert time.monotonic() - start < peer.timeout * peer.retries
        peer.on_step(5)
        start = time.monotonic()
        with pytest.raises(PeerUnavailable, match="step\\(s\\) old"):
            peer.predict(image)
        assert time.monotonic() - start < peer.timeout * peer.retries
        restarted = ModelServer({"tiny": base_v1}, port=port, poll_seconds=0.05)
        assert restarted.start() == port
        assert wait_for(lambda: predicts(peer, image), every=0.06)
        assert peer.available and peer.version == 1
        np.testing.assert_allclose(peer.predict(image)["depth"].numpy(), tiny.reference(image["image"])["depth"],
                                   rtol=1e-5, atol=1e-6)
    finally:
        peer.close()
        server.stop(grace=0)
        if restarted is not None:
            restarted.stop(grace=0)


def start_server_process(base, port):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "taskology_tf.serving.server", "--model_name", "tiny", "--model_base_path", base,
               "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    assert wait_for(lambda: any(l.startswith("port=") for l in lines) or process.poll() is not None, timeout=60)
    assert process.poll() is None, f"the server process exited with {process.returncode}: {lines}"
    return process, int(next(l for l in lines if l.startswith("port=")).split("=")[1])


def test_server_process_killed_and_restarted(base_v1, tiny):
    image = {"image": tiny.images(1, 4, 5, seed=7)}
    process, port = start_server_process(base_v1, 0)
    peer = ServingPeer("depth", f"127.0.0.1:{port}", model_name="tiny", timeout=15.0, retries=2, backoff=0.05,
                       probe_seconds=0.05)
    try:
        peer.prefetch_next(image)
        assert peer.predict(image) and peer.version == 1
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        peer.prefetch_next(image)
        start = time.monotonic()
        with pytest.raises(PeerUnavailable, match="reusing old predictions is off"):
            peer.predict(image)
        assert time.monotonic() - start < peer.timeout * peer.retries and not peer.available
        process, again = start_server_process(base_v1, port)
        assert again == port

        def step():
            peer.prefetch_next(image)
            time.sleep(0.06)
            return predicts(peer, image)

        assert wait_for(step, every=0.0)
        assert peer.available and peer.version == 1
    finally:
        peer.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_argument_errors():
    with pytest.raises(ValueError, match="input_keys"):
        ServingPeer("depth", "localhost:1", input_keys="image")
    with pytest.raises(ValueError, match="refresh_steps"):
        ServingPeer("depth", "localhost:1", refresh_steps=-1)
    with pytest.raises(ValueError, match="max_staleness_seconds"):
        ServingPeer("depth", "localhost:1", max_staleness_seconds=-1.0)
    with pytest.raises(ValueError, match="host:port"):
        ServingPeer("depth", "localhost")
    with ServingPeer("depth", "localhost:1", prefetch=False) as peer:
        assert peer.model_name == "depth" and peer.version == -1 and peer.available


def test_no_warnings_while_a_peer_has_no_version_yet(tmp_path, tiny, caplog):
    """At start-up (taskology launch) the peers' servers run before any version exists: a note, not warnings."""
    base = str(tmp_path / "m")
    image = {"image": tiny.images(1)}
    with tiny.serving({"m": base}) as (server, _):
        with ServingPeer("depth", server.address, model_name="m", retries=0, prefetch=False) as peer:
            with caplog.at_level(logging.INFO):
                for step in range(3):
                    peer.on_step(step)
                    with pytest.raises(PeerUnavailable) as info:
                        peer.predict(image)
                    assert info.value.before_first_answer
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
            assert "no predictions from model 'm'" in caplog.text and "first version" in caplog.text
            export_model(tiny.tiny_model(), base, 0)
            assert wait_for(lambda: predicts(peer, image))
            caplog.clear()
            server.stop(grace=0)  # down after it answered: that is worth a warning
            with caplog.at_level(logging.INFO):
                with pytest.raises(PeerUnavailable) as info:
                    peer.predict(image)
            assert not info.value.before_first_answer
            assert any(r.levelno == logging.WARNING and "is unavailable" in r.getMessage() for r in caplog.records)
