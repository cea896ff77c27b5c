"""ModelServer over real gRPC on 127.0.0.1: Predict, version polling and swaps, errors, metadata, TLS, the CLI."""

import ipaddress
import re
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from taskology_tf.serving.client import InvalidRequestError, ModelNotFoundError, PeerUnavailableError, PredictClient
from taskology_tf.serving.codec import to_tensor_proto
from taskology_tf.serving.export import WARMUP_FILE, export_model, list_versions
from taskology_tf.serving.server import ModelServer, serve_main
from taskology_tf.serving.tls import TlsConfig
from taskology_tf.testing import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]


def raw_status(port, name):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)
    return {s.version: s for s in response.model_version_status}


# -- Predict --------------------------------------------------------------------------------------


def test_predict_matches_keras_and_reports_version(shared_server, tiny, model):
    _, client = shared_server
    image = tiny.images(3, 6, 7, seed=5)
    outputs, version = client.predict({"image": image})
    assert version == 1
    assert set(outputs) == {"depth", "mean"}
    keras_out = model({"image": image})
    for key in ("depth", "mean"):
        assert outputs[key].dtype == np.float32
        np.testing.assert_allclose(outputs[key], keras_out[key].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(outputs[key], tiny.reference(image)[key], rtol=1e-5, atol=1e-6)
    filtered, _ = client.predict({"image": image}, output_filter=["mean"])
    assert set(filtered) == {"mean"}


def test_large_message(shared_server, tiny):
    _, client = shared_server
    image = tiny.images(2, 1024, 1366, seed=2)  # 8.4 MB in, 11 MB out: over gRPC's 4 MB default
    assert image.nbytes > 8 * 2**20
    outputs, _ = client.predict({"image": image})
    np.testing.assert_allclose(outputs["depth"], tiny.reference(image)["depth"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "inputs, expected",
    [
        ({"img": np.zeros((1, 2, 2, 3), np.uint8)}, r"expects inputs \{'image': uint8 \[\?, \?, \?, 3\]\}; unknown inputs \['img'\]; missing inputs \['image'\]"),
        ({"image": np.zeros((2, 32, 64, 3), np.float32)}, r"input 'image' must be uint8 \[\?, \?, \?, 3\], got float32 \[2, 32, 64, 3\]"),
        ({"image": np.zeros((32, 64, 3), np.uint8)}, r"input 'image' must be uint8 \[\?, \?, \?, 3\], got uint8 \[32, 64, 3\]"),
        ({"image": np.zeros((1, 4, 4, 4), np.uint8)}, r"got uint8 \[1, 4, 4, 4\]"),
        ({"image": np.zeros((1, 2, 2, 3), np.uint8), "extra": np.zeros(1)}, r"unknown inputs \['extra'\]\.$"),
    ],
    ids=["name", "dtype", "rank", "static-dim", "extra"],
)
def test_invalid_argument_messages(shared_server, inputs, expected):
    server, _ = shared_server
    with PredictClient(server.address, "tiny", retries=3, backoff=120.0) as client:
        start = time.monotonic()
        with pytest.raises(InvalidRequestError, match=expected) as info:
            client.predict(inputs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert time.monotonic() - start < 60.0  # not retried (a retry would first wait 120 s)


def test_unknown_output_filter_and_signature(shared_server, tiny):
    server, client = shared_server
    with pytest.raises(InvalidRequestError, match=r"unknown outputs \['nope'\].*\['depth', 'mean'\]"):
        client.predict({"image": tiny.images(1)}, output_filter=["nope"])
    other = PredictClient(server.address, "tiny", signature_name="missing", retries=0)
    with pytest.raises(InvalidRequestError, match="has no signature 'missing'"):
        other.predict({"image": tiny.images(1)})
    other.close()


def test_not_found(shared_server, tiny):
    server, client = shared_server
    unknown = PredictClient(server.address, "nope", retries=3, backoff=120.0)
    start = time.monotonic()
    for call in (lambda: unknown.predict({"image": tiny.images(1)}), unknown.status, unknown.metadata):
        with pytest.raises(ModelNotFoundError, match=r"model 'nope' is not served here; models: \['tiny'\]"):
            call()
    assert time.monotonic() - start < 60.0  # NOT_FOUND raises at once (a retry would first wait 120 s)
    unknown.close()
    with grpc.insecure_channel(server.address) as channel:  # a specific version that is not loaded
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        request.model_spec.version.value = 7
        request.inputs["image"].CopyFrom(to_tensor_proto(tiny.images(1)))
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "version 7 of model 'tiny' is not loaded (loaded: 1)" in info.value.details()
        request.model_spec.version.value = 1
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
        assert response.model_spec.version.value == 1


def test_metadata_and_status(shared_server):
    server, client = shared_server
    meta = client.metadata()
    assert meta["model"] == "tiny" and meta["version"] == 1 and meta["signature_name"] == "serving_default"
    assert meta["inputs"] == {"image": {"dtype": "uint8", "shape": (None, None, None, 3)}}
    assert meta["outputs"] == {
        "depth": {"dtype": "float32", "shape": (None, None, None, 1)},
        "mean": {"dtype": "float32", "shape": (None, 1)},
    }
    assert "serving_default" in meta["signatures"]
    assert client.status() == [(1, "AVAILABLE")]
    with grpc.insecure_channel(server.address) as channel:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = "tiny"
        request.metadata_field.append("signature_def")
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=5)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    image = signatures.signature_def["serving_default"].inputs["image"]
    assert image.dtype == types_pb2.DT_UINT8 and [d.size for d in image.tensor_shape.dim] == [-1, -1, -1, 3]
    status = raw_status(server.port, "tiny")[1]
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE and status.status.error_code == 0


def test_unimplemented_methods_answer_unimplemented(shared_server):
    server, _ = shared_server
    from tensorflow_serving.apis import classification_pb2

    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(
                classification_pb2.ClassificationRequest(), timeout=5
            )
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- versions -------------------------------------------------------------------------------------


def test_warmup_file_is_written_and_replayed(base_v1, caplog):
    path = os.path.join(base_v1, "1", WARMUP_FILE)
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert len(records) == 1
    request = records[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert request.inputs["image"].dtype == types_pb2.DT_UINT8
    assert [d.size for d in request.inputs["image"].tensor_shape.dim] == [1, 4, 5, 3]
    with caplog.at_level(logging.INFO, logger="taskology_tf.serving.server"):
        server = ModelServer({"tiny": base_v1})
        server.poll()
    assert server.loaded_version("tiny") == 1
    assert "serving version 1" in caplog.text and "1 warm-up request(s)" in caplog.text


def test_export_rejects_mismatched_warmup_inputs(tmp_path, model):
    with pytest.raises(ValueError, match=r"exactly the model's input names \['image'\]"):
        export_model(model, str(tmp_path), 1, warmup_inputs={"img": np.zeros((1, 2, 2, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"warmup_inputs\['image'\] must be uint8"):
        export_model(model, str(tmp_path), 1, warmup_inputs={"image": np.zeros((1, 2, 2, 3), np.float32)})
    assert list_versions(str(tmp_path)) == []


def test_new_version_is_picked_up(tmp_path, tiny):
    base = str(tmp_path / "m")
    model = tiny.tiny_model()
    image = tiny.images(2)
    with tiny.serving({"m": base}, "m") as (server, client):
        assert server.loaded_version("m") is None
        with pytest.raises(PeerUnavailableError, match=r"m.*2 attempt\(s\).*no loaded version yet"):
            client.predict({"image": image})
        assert not client.wait_until_available(0.1)
        export_model(model, base, 1)
        assert client.wait_until_available(10.0)
        outputs, version = client.predict({"image": image})
        assert version == 1
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image)["depth"], atol=1e-5)
        tiny.set_bias(model, 1.0)
        export_model(model, base, 2)
        assert wait_for(lambda: server.loaded_version("m") == 2)
        outputs, version = client.predict({"image": image})
        assert version == 2
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image, bias=1.0)["depth"], atol=1e-5)
        assert client.status() == [(1, "END"), (2, "AVAILABLE")]
        assert client.metadata()["version"] == 2


def test_requests_never_fail_while_versions_swap(tmp_path, tiny):
    base = str(tmp_path / "m")
    model = tiny.tiny_model()
    export_model(model, base, 1, warmup_inputs={"image": tiny.images(1)})
    image = tiny.images(2, seed=3)
    expected = tiny.reference(image)["depth"]
    seen, errors = [], []
    stop = threading.Event()

    def hammer(client):
        while not stop.is_set():
            try:
                outputs, version = client.predict({"image": image})
                seen.append(version)
                # each answer was computed by the version it names: depth = base + version's bias
                np.testing.assert_allclose(outputs["depth"], expected + (version - 1), atol=1e-5)
            except Exception as e:  # noqa: BLE001 - any failure fails the test
                errors.append(e)

    with tiny.serving({"m": base}, "m", poll_seconds=0.02) as (server, client):
        thread = threading.Thread(target=hammer, args=(client,))
        thread.start()
        try:
            for version in range(2, 6):
                tiny.set_bias(model, float(version - 1))
                export_model(model, base, version, keep=2, warmup_inputs={"image": tiny.images(1)})
                assert wait_for(lambda: server.loaded_version("m") == version)
                n = len(seen)
                assert wait_for(lambda: len(seen) > n + 3)
        finally:
            stop.set()
            thread.join()
    assert not errors, errors[:3]
    assert set(seen) >= {1, 5} and len(set(seen)) >= 3, sorted(set(seen))
    assert seen == sorted(seen)  # a single client never goes back to an older version


def test_corrupt_version_is_retried_then_skipped_and_reported(tmp_path, tiny, caplog):
    base = tmp_path / "m"
    model = tiny.tiny_model()
    export_model(model, str(base), 1)
    image = tiny.images(1)
    with tiny.serving({"m": str(base)}, "m", poll_seconds=3600, max_load_retries=1) as (server, client):
        (base / "2" / "variables").mkdir(parents=True)
        (base / "2" / "saved_model.pb").write_bytes(b"\x08\x01not a saved model")
        with caplog.at_level(logging.WARNING, logger="taskology_tf.serving.server"):
            server.poll()
        assert server.loaded_version("m") == 1
        assert "version 2" in caplog.text and "attempt 1; retried on the next 1 poll(s)" in caplog.text
        assert "still serving version 1" in caplog.text
        assert client.predict({"image": image})[1] == 1
        assert client.status() == [(1, "AVAILABLE"), (2, "LOADING")]  # failed once, to be retried
        status = raw_status(server.port, "m")[2]
        assert status.status.error_code != 0 and "loading version 2" in status.status.error_message
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="taskology_tf.serving.server"):
            server.poll()  # the one retry
        assert "attempt 2, giving up until its files change" in caplog.text
        assert client.status() == [(1, "AVAILABLE"), (2, "END")]
        caplog.clear()
        server.poll()  # retries used up and unchanged: not tried again
        assert "version 2" not in caplog.text
        # a version whose warm-up request does not fit the model fails too
        export_model(model, str(base), 3)
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.inputs["img"].CopyFrom(to_tensor_proto(image))
        os.makedirs(base / "3" / "assets.extra")
        with tf.io.TFRecordWriter(str(base / "3" / WARMUP_FILE)) as writer:
            writer.write(log.SerializeToString())
        server.poll()
        assert server.loaded_version("m") == 1
        assert "warm-up request 0" in raw_status(server.port, "m")[3].status.error_message
        tiny.set_bias(model, 4.0)
        export_model(model, str(base), 4)
        server.poll()
        assert server.loaded_version("m") == 4
        outputs, version = client.predict({"image": image})
        assert version == 4
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image, 4.0)["depth"], atol=1e-5)


def copy_version_in_two_parts(source, target):
    """What `cp -r`/`gsutil cp` of a version folder looks like to a poller midway: saved_model.pb (and the
    rest) first, ``variables/`` only later. Returns a function that copies the second part."""
    target.mkdir()
    for entry in source.iterdir():
        if entry.name != "variables":
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, target / entry.name)
    return lambda: shutil.copytree(source / "variables", target / "variables")


def test_half_copied_version_is_served_once_complete(tmp_path, base_v1, tiny):
    base = tmp_path / "m"
    export_model(tiny.tiny_model(), str(base), 1)
    source = tmp_path / "elsewhere"
    export_model(tiny.tiny_model(bias=2.0), str(source), 2)
    image = tiny.images(2)
    with tiny.serving({"m": str(base)}, "m", poll_seconds=3600) as (server, client):
        finish_copy = copy_version_in_two_parts(source / "2", base / "2")
        server.poll()  # saved_model.pb without variables/: fails, served: version 1
        assert server.loaded_version("m") == 1 and client.status() == [(1, "AVAILABLE"), (2, "LOADING")]
        finish_copy()
        server.poll()  # retried on a later poll: complete now
        assert server.loaded_version("m") == 2
        outputs, version = client.predict({"image": image})
        assert version == 2
        np.testing.assert_allclose(outputs["depth"], tiny.reference(image, 2.0)["depth"], atol=1e-5)
        assert client.status() == [(1, "END"), (2, "AVAILABLE")]


def test_version_whose_retries_ran_out_loads_when_its_files_change(tmp_path, tiny):
    base = tmp_path / "m"
    export_model(tiny.tiny_model(), str(base), 1)
    source = tmp_path / "elsewhere"
    export_model(tiny.tiny_model(bias=3.0), str(source), 2)
    with tiny.serving({"m": str(base)}, "m", poll_seconds=3600, max_load_retries=0) as (server, client):
        finish_copy = copy_version_in_two_parts(source / "2", base / "2")
        server.poll()
        server.poll()  # no retries left and nothing changed: skipped
        assert client.status() == [(1, "AVAILABLE"), (2, "END")]
        finish_copy()  # the copy goes on (a slow gsutil): new files under the version folder
        server.poll()
        assert server.loaded_version("m") == 2


def test_newest_good_version_loads_when_the_newest_is_corrupt(tmp_path, tiny):
    base = tmp_path / "m"
    export_model(tiny.tiny_model(), str(base), 1)
    (base / "2").mkdir()  # no saved_model.pb at all
    server = ModelServer({"m": str(base)})
    server.poll()
    assert server.loaded_version("m") == 1


def test_only_numeric_folders_are_versions(tmp_path, base_v1):
    base = tmp_path / "m"
    shutil.copytree(pathlib.Path(base_v1, "1"), base / ".tmp-9-123")  # an export in progress
    shutil.copytree(pathlib.Path(base_v1, "1"), base / "v8")
    server = ModelServer({"m": str(base)})
    server.poll()
    assert server.loaded_version("m") is None
    shutil.copytree(pathlib.Path(base_v1, "1"), base / "0010")  # zero-padded names still count
    server.poll()
    assert server.loaded_version("m") == 10
    with pytest.raises(KeyError, match=r"model 'x' is not served here; models: \['m'\]"):
        server.loaded_version("x")


def test_export_is_atomic_for_a_polling_reader(tmp_path, tiny):
    base = str(tmp_path / "m")
    model = tiny.tiny_model()
    stop = threading.Event()
    problems, checks = [], [0]

    def reader():
        while not stop.is_set():
            for name in os.listdir(base) if os.path.isdir(base) else []:
                if not name.isdigit():
                    continue
                folder = os.path.join(base, name)
                complete = all(
                    os.path.isfile(os.path.join(folder, f))
                    for f in ("saved_model.pb", "variables/variables.index", WARMUP_FILE)
                )
                if not complete and os.path.isdir(folder):  # present yet incomplete
                    problems.append(sorted(os.listdir(folder)) if os.path.isdir(folder) else name)
                checks[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 5):
            export_model(model, base, version, keep=2, warmup_inputs={"image": tiny.images(1)})
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:3]
    assert checks[0] > 10
    assert list_versions(base) == [3, 4]
    assert sorted(os.listdir(base)) == ["3", "4"]  # no temporary or half-deleted folders left
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pathlib.Path(base, "4", "saved_model.pb").read_bytes())
    assert "serving_default" in saved.meta_graphs[0].signature_def


# -- binding, TLS, process ------------------------------------------------------------------------


def listening_addresses(port):
    """Local IP addresses of the LISTEN sockets on ``port`` (Linux /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                # the kernel prints each 32-bit word of the address in host (little-endian) byte order
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                ip = ipaddress.ip_address(raw)
                found.append(ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip)
    return found


def test_binds_loopback_by_default(shared_server):
    server, _ = shared_server
    assert server.host == "127.0.0.1" and server.address == f"127.0.0.1:{server.port}"
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    addresses = listening_addresses(server.port)
    assert addresses and all(a == ipaddress.ip_address("127.0.0.1") for a in addresses), addresses


def test_busy_port_fails_and_stopped_server_does_not_restart(shared_server, base_v1):
    server, _ = shared_server
    other = ModelServer({"tiny": base_v1}, port=server.port)
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{server.port}"):
        other.start()
    assert other.loaded_version("tiny") is None  # the port was checked before the model loaded
    stopped = ModelServer({"tiny": base_v1})
    stopped.start()
    stopped.stop()
    stopped.stop()  # idempotent
    with pytest.raises(RuntimeError, match="cannot restart"):
        stopped.start()


def make_certificates(folder: pathlib.Path):
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate, via the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available to make test certificates")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=taskology-test-ca")
    for name, usage, san in (("server", "serverAuth", "DNS:localhost,IP:127.0.0.1"), ("client", "clientAuth", "DNS:client")):
        (folder / f"{name}.ext").write_text(
            f"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName={san}\n"
        )
        run("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: str(folder / k) for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_tls_and_mutual_tls(base_v1, certs, tiny):
    image = tiny.images(1)
    server_tls = TlsConfig(certs["server.pem"], certs["server.key"])
    with tiny.serving({"tiny": base_v1}, tls=server_tls) as (server, _):
        client = PredictClient(f"127.0.0.1:{server.port}", "tiny", tls=TlsConfig(ca_file=certs["ca.pem"]), retries=0)
        assert client.predict({"image": image})[1] == 1
        client.close()
        plain = PredictClient(f"127.0.0.1:{server.port}", "tiny", retries=0, timeout=3)
        with pytest.raises(PeerUnavailableError):
            plain.predict({"image": image})
        plain.close()
    mutual = TlsConfig(certs["server.pem"], certs["server.key"], ca_file=certs["ca.pem"])
    with tiny.serving({"tiny": base_v1}, tls=mutual) as (server, _):
        address = f"127.0.0.1:{server.port}"
        anonymous = PredictClient(address, "tiny", tls=TlsConfig(ca_file=certs["ca.pem"]), retries=1, backoff=0.01, timeout=3)
        with pytest.raises(PeerUnavailableError, match=r"2 attempt\(s\)"):
            anonymous.predict({"image": image})
        anonymous.close()
        client_tls = TlsConfig(certs["client.pem"], certs["client.key"], certs["ca.pem"], server_name="localhost")
        with PredictClient(address, "tiny", tls=client_tls, retries=0) as client:
            assert client.predict({"image": image})[1] == 1


def test_tls_config_errors(tmp_path):
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TlsConfig(cert_file="a.pem")
    with pytest.raises(ValueError, match="needs cert_file"):
        TlsConfig(ca_file="ca.pem").server_credentials()
    (tmp_path / "key.pem").write_text("not used")
    with pytest.raises(FileNotFoundError, match=r"cannot read the certificate \(cert_file\) '.*missing.pem'"):
        TlsConfig(str(tmp_path / "missing.pem"), str(tmp_path / "key.pem")).server_credentials()


def test_serve_main_rejects_bad_flags(capsys):
    assert serve_main([]) == 2
    assert "name at least one model" in capsys.readouterr().err
    assert serve_main(["--model", "no-equals-sign"]) == 2
    assert serve_main(["--model_name", "m"]) == 2
    assert serve_main(["--model_base_path", "/x", "--ssl_cert_file", "c.pem"]) == 2
    assert serve_main(["--help"]) == 0
    capsys.readouterr()


def test_a_version_folder_as_base_path_gets_a_hint(base_v1, capsys):
    version_dir = os.path.join(base_v1, "1")
    assert serve_main(["--model_name", "m", "--model_base_path", version_dir]) == 2
    err = capsys.readouterr().err
    assert "holds a SavedModel itself" in err and f"Did you mean --model_base_path {base_v1}?" in err
    with pytest.raises(ValueError, match="the base path is the folder \\*above\\* the integer version folders"):
        ModelServer({"m": version_dir})


def test_serve_main_process_prints_port_and_stops_on_sigterm(base_v1, tiny):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "taskology_tf.serving.server", "--model_name", "m",
               "--model_base_path", base_v1, "--port", "0", "--file_system_poll_wait_seconds", "0.2"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        assert wait_for(lambda: any(l.startswith("port=") for l in lines) or process.poll() is not None, timeout=120)
        port_lines = [l for l in lines if l.startswith("port=")]
        assert port_lines, (process.poll(), process.stderr.read() if process.poll() is not None else "")
        port = int(port_lines[0].strip().split("=")[1])
        with PredictClient(f"127.0.0.1:{port}", "m", retries=0) as client:
            assert client.predict({"image": tiny.images(1)})[1] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "shutting down" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- bounded work per request ---------------------------------------------------------------------


def raw_predict(address, request, timeout=30):
    with grpc.insecure_channel(address) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)


def declared_only(shape, dtype=types_pb2.DT_UINT8, model="tiny"):
    """A PredictRequest whose 'image' declares ``shape`` but carries no values (TensorFlow's rule: zeros)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image"].dtype = dtype
    for size in shape:
        request.inputs["image"].tensor_shape.dim.add(size=size)
    return request


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if the server decodes any request tensor (the checks must come first)."""
    import taskology_tf.serving.server as server_module

    def refuse(*args, **kwargs):
        raise AssertionError("a request tensor was decoded")

    monkeypatch.setattr(server_module, "from_tensor_proto", refuse)


@pytest.mark.parametrize(
    "shape, message",
    [
        ([12000, 32, 64, 3], r"declares a batch of 12000; this server takes at most 256 examples per request "
                             r"\(--max_batch_size\)"),
        ([1, 1000000, 1000000, 3], r"declare 2861022.9 MiB of data .* at most 256.0 MiB per request "
                                   r"\(--max_input_bytes\)"),
    ],
    ids=["batch", "bytes"],
)
def test_huge_declared_inputs_are_refused_before_any_allocation(shared_server, no_decoding, shape, message):
    server, client = shared_server
    request = declared_only(shape)
    assert request.ByteSize() < 64  # a tiny message
    with pytest.raises(grpc.RpcError) as info:
        raw_predict(server.address, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, info.value.details()), info.value.details()


def test_limits_are_configurable(base_v1, tiny):
    image = tiny.images(3)
    with tiny.serving({"tiny": base_v1}, "tiny", max_batch_size=2) as (server, client):
        with pytest.raises(InvalidRequestError, match=r"batch of 3; .* at most 2 examples"):
            client.predict({"image": image})
        assert client.predict({"image": image[:2]})[1] == 1
    with tiny.serving({"tiny": base_v1}, "tiny", max_input_bytes=image.nbytes - 1) as (server, client):
        with pytest.raises(InvalidRequestError, match=r"at most \d+ bytes per request \(--max_input_bytes\)"):
            client.predict({"image": image})
    with tiny.serving({"tiny": base_v1}, "tiny", max_batch_size=0, max_input_bytes=0) as (server, client):
        assert server.limits.max_batch_size == 0  # no limits
        assert client.predict({"image": tiny.images(300, 1, 1)})[1] == 1


class CountingSignature:
    """Wraps a signature function; counts the calls that compute (eager), not the shape-inference traces."""

    def __init__(self, fn):
        self.fn = fn
        self.computed = 0

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def __call__(self, **kwargs):
        if tf.executing_eagerly():
            self.computed += 1
        return self.fn(**kwargs)


def test_reply_over_the_message_limit_is_refused_before_computing(base_v1, tiny):
    import dataclasses

    limit = 2**20
    with tiny.serving({"tiny": base_v1}, "tiny", max_message_bytes=limit) as (server, client):
        servable = server._models["tiny"].current
        signature = servable.signatures["serving_default"]
        counting = CountingSignature(signature.fn)
        servable.signatures["serving_default"] = dataclasses.replace(signature, fn=counting)
        image = tiny.images(2, 256, 512)  # 768 KiB in, 1 MiB (+ the means) of float32 depth out
        assert image.nbytes < limit
        with pytest.raises(InvalidRequestError, match=r"reply .* would be 1.0 MiB .*'depth': \[2, 256, 512, 1\].* "
                                                       r"over this server's message limit of 1.0 MiB"):
            client.predict({"image": image})
        assert counting.computed == 0
        outputs, _ = client.predict({"image": image[:1]})  # half the reply fits
        assert counting.computed == 1 and outputs["depth"].shape == (1, 256, 512, 1)


def test_signature_refuses_image_sizes_the_network_cannot_take(tmp_path, tiny):
    base = str(tmp_path / "m")
    export_model(tiny.tiny_model(), base, 1, image_size_multiple=4)
    with tiny.serving({"m": base}, "m") as (server, client):
        for signature in ("serving_default", "serving_float16"):
            with PredictClient(server.address, "m", signature_name=signature, retries=0) as c:
                assert c.predict({"image": tiny.images(1, 8, 12)})[0]["depth"].shape == (1, 8, 12, 1)
                for h, w in ((7, 12), (8, 10), (0, 4)):
                    with pytest.raises(InvalidRequestError, match=rf"input 'image': this network takes images whose "
                                       rf"height and width are positive multiples of 4 .* Got height {h} width {w}"):
                        c.predict({"image": tiny.images(1, h, w)})
    with pytest.raises(ValueError, match="image_size_multiple must be a positive integer"):
        export_model(tiny.tiny_model(), base, 2, image_size_multiple=0)


def test_undecodable_request_is_one_log_line_not_a_traceback(shared_server, caplog):
    server, _ = shared_server
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with caplog.at_level(logging.INFO):
            with pytest.raises(grpc.RpcError) as info:
                call(b"\xff\xff\xff\xff not a PredictRequest", timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    records = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING and not records[0].exc_info
    assert "Traceback" not in caplog.text
