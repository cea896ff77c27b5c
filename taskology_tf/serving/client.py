"""A client of TF Serving's gRPC API (ours or ``tensorflow_model_server``): Predict, metadata, status.

Every call has a deadline. Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
are retried with exponential backoff and end in ``PeerUnavailableError``; a bad request
(INVALID_ARGUMENT -> ``InvalidRequestError``) or an unknown model/version (NOT_FOUND ->
``ModelNotFoundError``) raises at once.

Every client counts the bytes of its Predict calls in a ``Traffic`` (``client.traffic``), which several
clients may share (a ``ServingPeer`` gives all its channels one).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from taskology_tf.serving.codec import dtype_name, from_tensor_proto, to_tensor_proto
from taskology_tf.serving.tls import TlsConfig

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})
_STATE_NAMES = dict((v, k) for k, v in get_model_status_pb2.ModelVersionStatus.State.items())


class Traffic:
    """Bytes of Predict calls: serialized ``PredictRequest`` / ``PredictResponse`` sizes; thread-safe.

    ``requests``: attempts sent (a retried call counts each attempt, and its bytes each time);
    ``answers``: responses received; ``bytes_sent`` / ``bytes_received``: their serialized sizes. These
    are the protobuf payloads: gRPC adds 5 bytes per message and HTTP/2 headers (about 100 bytes per call).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = 0
        self.answers = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def sent(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_sent += int(nbytes)

    def received(self, nbytes: int) -> None:
        with self._lock:
            self.answers += 1
            self.bytes_received += int(nbytes)

    def as_dict(self) -> dict[str, int]:
        """{"requests", "answers", "bytes_sent", "bytes_received"} so far."""
        with self._lock:
            return {"requests": self.requests, "answers": self.answers, "bytes_sent": self.bytes_sent,
                    "bytes_received": self.bytes_received}


class PeerUnavailableError(ConnectionError):
    """The model server could not be reached (or kept answering UNAVAILABLE) after all attempts."""

    def __init__(self, message: str, address: str, model_name: str, attempts: int, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.address = address
        self.model_name = model_name
        self.attempts = attempts
        self.code = code


class ServingError(RuntimeError):
    """The server answered a call with a non-retryable error status."""

    def __init__(self, message: str, code: grpc.StatusCode, details: str):
        super().__init__(message)
        self.code = code
        self.details = details


class InvalidRequestError(ServingError, ValueError):
    """INVALID_ARGUMENT: the inputs do not match the model's signature (the message says what is expected)."""


class ModelNotFoundError(ServingError, LookupError):
    """NOT_FOUND: the server does not serve this model (or this version)."""


def _shape(proto) -> tuple[int | None, ...] | None:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in proto.dim)


def _tensor_infos(infos) -> dict[str, dict[str, Any]]:
    return {name: {"dtype": dtype_name(info.dtype), "shape": _shape(info.tensor_shape)} for name, info in infos.items()}


class PredictClient:
    """Calls one model on a TF Serving-compatible gRPC server; thread-safe.

    Args:
      address: ``host:port`` of the server.
      model_name: the model to call.
      timeout: deadline of every call (each attempt), seconds.
      retries: extra attempts after a transient failure (0 = try once).
      backoff: first wait between attempts, seconds; doubles each retry.
      tls: CA (and client certificate for mutual TLS) for a TLS server; None = plaintext.
      max_message_bytes: gRPC send/receive limit.
      signature_name: the signature ``predict`` and ``metadata`` use.
      traffic: where ``predict`` counts its bytes (shared with other clients); None = a new ``Traffic``.
    """

    def __init__(
        self,
        address: str,
        model_name: str,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        tls: TlsConfig | None = None,
        max_message_bytes: int = 256 * 2**20,
        signature_name: str = "serving_default",
        traffic: Traffic | None = None,
    ):
        if not address or ":" not in address:
            raise ValueError(f"address must be 'host:port', got {address!r}.")
        if not model_name:
            raise ValueError("model_name must name the served model.")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout}, {retries}, {backoff}.")
        self.address = address
        self.model_name = model_name
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.signature_name = signature_name
        self.traffic = traffic if traffic is not None else Traffic()
        options = [
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes)),
        ]
        if tls is not None:
            self._channel = grpc.secure_channel(address, tls.channel_credentials(), options + tls.channel_options())
        else:
            self._channel = grpc.insecure_channel(address, options)
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # -- calls -------------------------------------------------------------------------------------

    def predict(
        self, inputs: Mapping[str, Any], output_filter: Sequence[str] | None = None, version: int | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        """Run the model on ``inputs`` (name -> array); returns (outputs name -> array, version that computed them).

        ``version``: ask for that specific loaded version (``model_spec.version``); None = the newest.
        """
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(to_tensor_proto(np.asarray(value)))
        if output_filter:
            request.output_filter.extend(output_filter)
        size = request.ByteSize()

        def predict(request, timeout):
            self.traffic.sent(size)
            return self._predict_stub.Predict(request, timeout=timeout)

        response = self._call("Predict", predict, request)
        self.traffic.received(response.ByteSize())
        outputs = {name: from_tensor_proto(proto) for name, proto in response.outputs.items()}
        version = response.model_spec.version.value if response.model_spec.HasField("version") else -1
        return outputs, int(version)

    def metadata(self) -> dict[str, Any]:
        """The served version and this client's signature: {"model", "version", "signature_name",
        "inputs"/"outputs": {name: {"dtype": "uint8", "shape": (None, None, None, 3)}}, "signatures": [...]}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", self._predict_stub.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signatures):
            raise ServingError(
                f"model '{self.model_name}' at {self.address} answered GetModelMetadata without a signature_def map.",
                grpc.StatusCode.INTERNAL,
                "",
            )
        if self.signature_name not in signatures.signature_def:
            raise InvalidRequestError(
                f"model '{self.model_name}' at {self.address} has no signature '{self.signature_name}'; "
                f"signatures: {sorted(signatures.signature_def)}.",
                grpc.StatusCode.INVALID_ARGUMENT,
                "",
            )
        definition = signatures.signature_def[self.signature_name]
        return {
            "model": response.model_spec.name or self.model_name,
            "version": int(response.model_spec.version.value) if response.model_spec.HasField("version") else -1,
            "signature_name": self.signature_name,
            "inputs": _tensor_infos(definition.inputs),
            "outputs": _tensor_infos(definition.outputs),
            "signatures": sorted(signatures.signature_def),
        }

    def status(self) -> list[tuple[int, str]]:
        """(version, state) of every version the server knows, e.g. [(3, "END"), (4, "AVAILABLE")]."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        response = self._call("GetModelStatus", self._model_stub.GetModelStatus, request)
        return sorted((int(s.version), _STATE_NAMES.get(s.state, str(s.state))) for s in response.model_version_status)

    def wait_until_available(self, timeout: float) -> bool:
        """Poll the status until some version is AVAILABLE (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                response = self._model_stub.GetModelStatus(request, timeout=min(self.timeout, max(remaining, 0.05)))
                if any(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in response.model_version_status):
                    return True
            except grpc.RpcError:
                pass  # not up yet, or model not loaded yet
            time.sleep(min(max(self.backoff, 0.05), max(deadline - time.monotonic(), 0)))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "PredictClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retries -----------------------------------------------------------------------------------

    def _call(self, method: str, fn: Callable, request):
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn(request, timeout=self.timeout)
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                where = f"{method} of model '{self.model_name}' at {self.address}"
                if code in RETRYABLE:
                    if attempt < attempts:
                        time.sleep(self.backoff * 2 ** (attempt - 1))
                        continue
                    raise PeerUnavailableError(
                        f"model server at {self.address} unavailable for model '{self.model_name}' after "
                        f"{attempts} attempt(s) ({method}): {code.name}: {details}",
                        self.address,
                        self.model_name,
                        attempts,
                        code,
                    ) from None
                message = f"{where} failed: {code.name}: {details}"
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidRequestError(message, code, details) from None
                if code == grpc.StatusCode.NOT_FOUND:
                    raise ModelNotFoundError(message, code, details) from None
                raise ServingError(message, code, details) from None
        raise AssertionError("unreachable")
