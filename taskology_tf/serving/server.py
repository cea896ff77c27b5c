"""A model server speaking TensorFlow Serving's gRPC API over ``<base>/<integer version>/`` SavedModels.

Same layout and protocol as ``tensorflow_model_server`` (``PredictionService.Predict`` and
``GetModelMetadata``, ``ModelService.GetModelStatus``), so trainers can point at either. Per model a
background thread polls the base folder; a newer version is loaded, warmed up (replaying
``assets.extra/tf_serving_warmup_requests``) and only then swapped in, in one reference assignment:
requests in flight finish on the version they started with and no request waits for a load. A
version folder without ``saved_model.pb`` (or ``.pbtxt``) is not tried at all: it is being written
(``export_model`` publishes that file last on object stores) and reported LOADING until it is there.
Base paths may be local paths or TensorFlow filesystem URLs (``gs://...``, ``ram://...``). A
version that fails to load (e.g. one still being copied in with ``cp`` or ``gsutil``, its
``saved_model.pb`` there before ``variables/``) is retried on the next ``max_load_retries`` polls, and
again whenever its files change, so it is served once complete; ``GetModelStatus`` reports it LOADING
meanwhile and END with the error when the retries are used up. The previous version keeps serving.
Only the newest loaded version is served (TF Serving's default "latest 1" policy).

Bounded work per request: before anything is decoded, a request whose inputs declare a batch over
``max_batch_size`` or more than ``max_input_bytes`` of data (a 41-byte request can declare a
[12000, 32, 64, 3] tensor "filled" with one repeated value) is answered ``INVALID_ARGUMENT``; before
anything is computed, the reply's size is derived from the signature's shapes (shape inference for
the request's input shapes) and a request whose reply would exceed ``max_message_bytes`` is answered
``INVALID_ARGUMENT`` too.

Run as a process: ``python -m taskology_tf.serving.server --model_name depth --model_base_path
/work/depth/export --port 8500`` prints ``port=<n>`` on stdout once it serves, and stops cleanly
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from taskology_tf.core import storage
from taskology_tf.serving.codec import from_tensor_proto, numpy_dtype, to_tensor_proto
from taskology_tf.serving.export import WARMUP_FILE, is_complete
from taskology_tf.serving.flags import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    parse_serve_flags,
    version_folder_hint,
)
from taskology_tf.serving.tls import TlsConfig

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit too
REPLY_OVERHEAD_BYTES = 64 * 1024  # protobuf framing of a reply beyond its tensors' bytes (generous)
_SHAPE_CACHE_SIZE = 256  # (signature, input shapes) -> inferred output shapes, per loaded version
_State = get_model_status_pb2.ModelVersionStatus.State
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Abort(Exception):
    """A request answered with a gRPC error status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class _Signature:
    name: str
    fn: Callable[..., Mapping[str, tf.Tensor]]
    inputs: dict[str, tf.TensorSpec]
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Limits:
    """What one request may ask for (0 = no limit)."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_input_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_reply_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


@dataclasses.dataclass(frozen=True)
class _Servable:
    """One loaded version of a model."""

    version: int
    path: str
    loaded: Any  # the restored object; keeps the signature functions' variables alive
    signatures: dict[str, _Signature]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    output_shapes: "collections.OrderedDict" = dataclasses.field(default_factory=collections.OrderedDict)
    shapes_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass
class _Failure:
    """A version that failed to load: the state of its files then, and how often it was tried with them."""

    fingerprint: Any
    attempts: int


class _Model:
    """A served model: its base folder, the version serving now, and the status of each version seen."""

    def __init__(self, name: str, base_path: str):
        self.name = name
        self.base_path = base_path
        self.lock = threading.Lock()
        self.current: _Servable | None = None
        self.status: dict[int, tuple[int, grpc.StatusCode, str]] = {}  # version -> (state, code, message)
        self.failed: dict[int, _Failure] = {}  # versions that failed to load (retried while attempts remain)

    def set_status(self, version: int, state: int, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = ""):
        with self.lock:
            self.status[version] = (state, code, message)


def _format_spec(dtype: tf.DType, shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return f"{dtype.name} <any shape>"
    return f"{dtype.name} [{', '.join('?' if d is None else str(d) for d in shape.as_list())}]"


def _describe_inputs(inputs: Mapping[str, tf.TensorSpec]) -> str:
    return "{" + ", ".join(f"'{k}': {_format_spec(s.dtype, s.shape)}" for k, s in sorted(inputs.items())) + "}"


def _read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """SignatureDefs of the ``serve`` meta graph, as stored (for GetModelMetadata)."""
    saved = saved_model_pb2.SavedModel()
    pb = storage.join(path, "saved_model.pb")
    if storage.exists(pb):
        with tf.io.gfile.GFile(pb, "rb") as f:
            saved.ParseFromString(f.read())
    else:
        with tf.io.gfile.GFile(storage.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved)
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags] or list(saved.meta_graphs)
    if not graphs:
        return {}
    return {k: v for k, v in graphs[0].signature_def.items() if not k.startswith("__")}


def _version_folders(base_path: str) -> dict[int, str]:
    """Integer version -> folder name (numeric names only: temporary exports are ignored)."""
    if not storage.isdir(base_path):
        return {}
    folders = {}
    for name in storage.listdir(base_path):  # sorted: "7" sorts after "007" and wins
        if name.isdigit() and storage.isdir(storage.join(base_path, name)):
            folders[int(name)] = name
    return folders


def _fingerprint(path: str):
    """Names, sizes and modification times of every file under a version folder: changes while a copy into
    it is under way (a failed version is retried beyond its retries only when this changes)."""
    entries = []
    for rel in storage.tree(path)[1]:
        try:
            st = tf.io.gfile.stat(storage.join(path, *rel.split("/")))
        except tf.errors.OpError:
            continue
        entries.append((rel, st.length, st.mtime_nsec))
    return tuple(entries)


def _load_servable(version: int, path: str) -> _Servable:
    loaded = tf.saved_model.load(path)
    signatures = {}
    for name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        signatures[name] = _Signature(name, fn, dict(kwargs), tuple(fn.structured_outputs))
    if not signatures:
        raise ValueError(f"the SavedModel at {path} has no signatures; export it with a serving signature.")
    return _Servable(version, path, loaded, signatures, _read_signature_defs(path))


def _declared(name: str, proto) -> tuple[tuple[int, ...], Any]:
    """(shape, numpy dtype) a request's TensorProto declares, read without decoding its values."""
    if proto.tensor_shape.unknown_rank:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': a tensor must have a known rank and shape.")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': a tensor must have a fully defined "
                     f"shape, got {list(shape)}.")
    try:
        dtype = numpy_dtype(proto.dtype)
    except TypeError as e:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': {e}") from None
    return shape, dtype


def _check_request_size(inputs: Mapping[str, Any], limits: _Limits) -> None:
    """INVALID_ARGUMENT when the declared inputs exceed the batch or byte limits (nothing is allocated)."""
    total = 0
    for name, (shape, dtype, proto) in inputs.items():
        if limits.max_batch_size and shape and shape[0] > limits.max_batch_size:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' declares a batch of {shape[0]}; this server takes at most {limits.max_batch_size} "
                "examples per request (--max_batch_size). Send smaller batches.",
            )
        count = math.prod(shape)
        if dtype == object:  # strings: the bytes sent plus one object per element
            total += sum(len(v) for v in proto.string_val) + 8 * count
        else:
            total += count * dtype.itemsize
    if limits.max_input_bytes and total > limits.max_input_bytes:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the inputs declare {_megabytes(total)} of data (shapes "
            f"{ {k: list(v[0]) for k, v in inputs.items()} }); this server takes at most "
            f"{_megabytes(limits.max_input_bytes)} per request (--max_input_bytes). Send smaller batches.",
        )


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _check_inputs(model_name: str, signature: _Signature, declared: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
    """Names, dtypes and shapes of the request's inputs (as declared) against the signature's."""
    expected = signature.inputs
    unknown = sorted(set(declared) - set(expected))
    missing = sorted(set(expected) - set(declared))
    if unknown or missing:
        parts = [f"model '{model_name}' signature '{signature.name}' expects inputs {_describe_inputs(expected)}"]
        if unknown:
            parts.append(f"unknown inputs {unknown}")
        if missing:
            parts.append(f"missing inputs {missing}")
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(parts) + ".")
    for name, spec in expected.items():
        shape, dtype = declared[name]
        if spec.dtype == tf.string:
            dtype_ok = dtype == object
        else:
            dtype_ok = dtype == spec.dtype.as_numpy_dtype
        if not dtype_ok or not spec.shape.is_compatible_with(shape):
            got = "string" if dtype == object else dtype.name
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' must be {_format_spec(spec.dtype, spec.shape)}, got {got} {list(shape)}.",
            )


def _output_shapes(servable: _Servable, signature: _Signature, shapes: Mapping[str, tuple[int, ...]]):
    """Output name -> TensorShape the signature yields for inputs of these shapes (shape inference, cached);
    None when inference fails (the computation itself then reports the problem)."""
    key = (signature.name, tuple(sorted(shapes.items())))
    with servable.shapes_lock:
        if key in servable.output_shapes:
            servable.output_shapes.move_to_end(key)
            return servable.output_shapes[key]
    specs = {k: tf.TensorSpec(shapes[k], spec.dtype) for k, spec in signature.inputs.items()}
    try:
        concrete = tf.function(lambda **kw: signature.fn(**kw)).get_concrete_function(**specs)
        result = {k: v.shape for k, v in concrete.structured_outputs.items()}
    except (ValueError, TypeError, tf.errors.OpError):
        result = None
    with servable.shapes_lock:
        servable.output_shapes[key] = result
        while len(servable.output_shapes) > _SHAPE_CACHE_SIZE:
            servable.output_shapes.popitem(last=False)
    return result


def _check_reply_size(model_name: str, servable: _Servable, signature: _Signature, declared, wanted, limits: _Limits):
    """INVALID_ARGUMENT when the reply to these inputs would exceed the message limit (nothing is computed)."""
    if not limits.max_reply_bytes:
        return
    shapes = _output_shapes(servable, signature, {k: v[0] for k, v in declared.items()})
    if shapes is None:
        return
    total = 0
    for key in wanted:
        shape = shapes.get(key)
        if shape is None or not shape.is_fully_defined():
            return  # unknown size: cannot tell beforehand
        total += shape.num_elements() * signature.fn.structured_outputs[key].dtype.size
    if total + REPLY_OVERHEAD_BYTES > limits.max_reply_bytes:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the reply of model '{model_name}' to these inputs would be {_megabytes(total)} "
            f"({ {k: shapes[k].as_list() for k in wanted} }), over this server's message limit of "
            f"{_megabytes(limits.max_reply_bytes)} (--max_message_bytes); send fewer examples per request, ask for "
            "fewer outputs (output_filter) or a smaller dtype (the serving_float16 signature).",
        )


def _clean_op_message(message: str) -> str:
    """A TensorFlow runtime error without its graph-execution boilerplate (node names, stack-trace notes)."""
    if "assertion failed:" in message:
        message = message[message.index("assertion failed:") + len("assertion failed:"):]
    message = message.split("\n\t [[")[0].split(" [[{{node")[0]
    for noise in ("Graph execution error:", "<stack traces unavailable>"):
        message = message.replace(noise, "")
    lines = [l.strip() for l in message.splitlines() if l.strip() and not l.strip().startswith("Detected at node")]
    return " ".join(lines).replace("] [", " ").replace("\\'", "'").strip(" []")


def _run_predict(model_name: str, servable: _Servable, request: predict_pb2.PredictRequest,
                 limits: _Limits | None = None) -> predict_pb2.PredictResponse:
    """Validate (sizes before decoding, the reply's size before computing), compute and encode one Predict
    request on one loaded version."""
    limits = limits or _Limits()
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(signature_name)
    if signature is None:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model '{model_name}' version {servable.version} has no signature '{signature_name}'; "
            f"signatures: {sorted(servable.signatures)}.",
        )
    declared = {}
    for name, proto in request.inputs.items():
        shape, dtype = _declared(name, proto)
        declared[name] = (shape, dtype, proto)
    _check_request_size(declared, limits)
    _check_inputs(model_name, signature, {k: v[:2] for k, v in declared.items()})
    wanted = list(dict.fromkeys(request.output_filter)) or list(signature.outputs)
    unknown = sorted(set(wanted) - set(signature.outputs))
    if unknown:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {unknown}; signature '{signature_name}' has outputs "
            f"{sorted(signature.outputs)}.",
        )
    _check_reply_size(model_name, servable, signature, declared, wanted, limits)
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = from_tensor_proto(proto, copy=False)
        except (TypeError, ValueError) as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': {e}") from None
    try:
        outputs = signature.fn(**{k: tf.constant(v) for k, v in arrays.items()})
        response = predict_pb2.PredictResponse()
        for key in wanted:
            response.outputs[key].CopyFrom(to_tensor_proto(outputs[key].numpy()))
    except tf.errors.OpError as e:
        code = _CODES.get(e.error_code, grpc.StatusCode.UNKNOWN)
        raise _Abort(code, f"model '{model_name}' version {servable.version} failed on the request: "
                           f"{_clean_op_message(e.message)}") from None
    response.model_spec.name = model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    return response


def _warm_up(model_name: str, servable: _Servable) -> int:
    """Replay the version's TF Serving warm-up file (if any); returns the number of requests run."""
    path = storage.join(servable.path, *WARMUP_FILE.split(os.sep))
    if not storage.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"warm-up record {count} of {path} is a {kind}; this server replays predict_log only.")
        try:
            _run_predict(model_name, servable, entry.predict_log.request)
        except _Abort as e:
            raise ValueError(f"warm-up request {count} of {path} failed: {e.message}") from None
        count += 1
    return count


class ModelServer:
    """Serves the newest version of each model over TF Serving's gRPC API.

    Args:
      models: model name -> base path holding ``<integer version>/`` SavedModels.
      host: interface to bind (127.0.0.1 = this machine only; "0.0.0.0" = all interfaces).
      port: port to bind; 0 = any free port (``start`` returns it).
      poll_seconds: how often each base path is checked for new versions.
      max_message_bytes: gRPC send/receive limit (gRPC's default of 4 MB is too small for images); a request
        whose reply would exceed it is refused before it is computed.
      tls: server certificate/key (and CA for mutual TLS); None = plaintext.
      max_workers: threads answering requests.
      max_batch_size: the largest first dimension an input may declare (0 = no limit).
      max_input_bytes: the largest decoded size of a request's inputs (declared shapes x dtype sizes);
        None = ``max_message_bytes``, 0 = no limit.
      max_load_retries: polls after a failed load that try the version again (then only when its files change).
    """

    def __init__(
        self,
        models: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        poll_seconds: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TlsConfig | None = None,
        max_workers: int = 8,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_input_bytes: int | None = None,
        max_load_retries: int = 5,
    ):
        if not models:
            raise ValueError("models must map at least one model name to its base path, e.g. {'depth': '/x/depth/export'}.")
        for name, base in models.items():
            if not name or not isinstance(name, str):
                raise ValueError(f"model names must be non-empty strings, got {name!r}.")
            if not base:
                raise ValueError(f"model '{name}' needs a base path, got {base!r}.")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}.")
        if max_message_bytes <= 0 or max_workers <= 0:
            raise ValueError(f"max_message_bytes and max_workers must be positive, got {max_message_bytes}, {max_workers}.")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be in [0, 65535] (0 = any free port), got {port}.")
        for arg, value in (("max_batch_size", max_batch_size), ("max_input_bytes", max_input_bytes),
                           ("max_load_retries", max_load_retries)):
            if value is not None and (int(value) != value or value < 0):
                raise ValueError(f"{arg} must be a non-negative integer (0 = no limit), got {value!r}.")
        for name, base in models.items():
            hint = version_folder_hint(os.fspath(base))
            if hint:
                raise ValueError(f"model '{name}': {hint}")
        self._models = {name: _Model(name, storage.absolute(base)) for name, base in models.items()}
        self.host = host
        self.port = int(port)
        self.poll_seconds = float(poll_seconds)
        self.max_message_bytes = int(max_message_bytes)
        self.tls = tls
        self.max_workers = int(max_workers)
        self.limits = _Limits(
            max_batch_size=int(max_batch_size),
            max_input_bytes=self.max_message_bytes if max_input_bytes is None else int(max_input_bytes),
            max_reply_bytes=self.max_message_bytes,
        )
        self.max_load_retries = int(max_load_retries)
        self._server: grpc.Server | None = None
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Load the newest version of each model present now, start serving and polling; returns the bound port."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("ModelServer.start() was already called; a stopped server cannot restart, make a new one.")
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        ]
        for name in ("grpc._common", "grpc._server"):
            if _undecodable_filter not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_undecodable_filter)
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="model-server"), options=options
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self.tls is not None:
                bound = server.add_secure_port(address, self.tls.server_credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"the model server cannot bind {address}: {e}") from e
        if not bound:
            raise OSError(f"the model server cannot bind {address} (port in use or host not local).")
        # The port is ours before any model loads (a busy port fails at once); requests are answered from here on.
        for model in self._models.values():
            if not storage.isdir(model.base_path):
                log.info("model '%s': base path %s does not exist yet; waiting for versions.", model.name, model.base_path)
        try:
            self.poll()
        except BaseException:
            server.stop(0)
            raise
        server.start()
        self._server = server
        self.port = bound
        self._thread = threading.Thread(target=self._poll_loop, name="model-server-poll", daemon=True)
        self._thread.start()
        log.info("model server on %s (%s) serving %s", self.address, "TLS" if self.tls else "plaintext",
                 {m.name: m.base_path for m in self._models.values()})
        return bound

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop polling and serving; requests in flight get ``grace`` seconds to finish."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port`` clients connect to (after ``start``)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def loaded_version(self, name: str) -> int | None:
        """The version of model ``name`` serving now; None before one has loaded."""
        model = self._model(name)
        current = model.current
        return None if current is None else current.version

    # -- version polling ---------------------------------------------------------------------------

    def poll(self) -> None:
        """Check every base path once and load a newer version where there is one (the poll thread calls this)."""
        with self._poll_lock:
            for model in self._models.values():
                self._poll_model(model)

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # never let the poller die; the next poll tries again
                log.exception("model server: polling failed")

    def _poll_model(self, model: _Model) -> None:
        try:
            folders = _version_folders(model.base_path)
        except OSError as e:
            log.warning("model '%s': cannot list %s: %s", model.name, model.base_path, e)
            return
        on_disk = set(folders)
        with model.lock:  # forget versions that are gone and not serving
            for v in [v for v, (state, _, _) in model.status.items()
                      if v not in on_disk and state in (_State.END, _State.LOADING)]:
                del model.status[v]
        for v in [v for v in model.failed if v not in on_disk]:
            del model.failed[v]
        current = -1 if model.current is None else model.current.version
        for version in sorted((v for v in folders if v > current), reverse=True):
            path = storage.join(model.base_path, folders[version])
            if not is_complete(path):  # still being written: saved_model.pb comes last
                with model.lock:
                    if version not in model.status:
                        model.status[version] = (_State.LOADING, grpc.StatusCode.OK,
                                                 f"waiting for {path}/saved_model.pb: the version is being written")
                continue
            fingerprint = _fingerprint(path)
            failure = model.failed.get(version)
            if failure is not None:
                if failure.fingerprint != fingerprint:
                    failure.fingerprint, failure.attempts = fingerprint, 0  # its files changed: a fresh start
                elif failure.attempts > self.max_load_retries:
                    continue  # failed on every retry and unchanged since
            if self._load(model, version, path, fingerprint):
                return

    def _load(self, model: _Model, version: int, path: str, fingerprint) -> bool:
        failure = model.failed.get(version)
        model.set_status(version, _State.LOADING)
        start = time.monotonic()
        try:
            servable = _load_servable(version, path)
            warmups = _warm_up(model.name, servable)
        except Exception as e:  # a broken version must not take the server down
            code = _CODES.get(getattr(e, "error_code", None), grpc.StatusCode.UNKNOWN)
            message = f"loading version {version} from {path} failed: {type(e).__name__}: {e}"
            if failure is None:
                failure = model.failed[version] = _Failure(fingerprint, 0)
            failure.attempts += 1
            serving = model.current.version if model.current is not None else "none"
            left = self.max_load_retries + 1 - failure.attempts
            if left > 0:  # perhaps still being copied in: try again on the next polls
                model.set_status(version, _State.LOADING, code, message)
                log.warning("model '%s': %s (attempt %d; retried on the next %d poll(s), and whenever its files "
                            "change); still serving version %s.", model.name, message, failure.attempts, left, serving)
            else:
                model.set_status(version, _State.END, code, message)
                log.error("model '%s': %s (attempt %d, giving up until its files change); still serving version %s.",
                          model.name, message, failure.attempts, serving)
            return False
        with model.lock:
            previous, model.current = model.current, servable
            model.status[version] = (_State.AVAILABLE, grpc.StatusCode.OK, "")
            if previous is not None:
                model.status[previous.version] = (_State.END, grpc.StatusCode.OK, "")
        model.failed.pop(version, None)
        log.info("model '%s': serving version %d (loaded in %.2f s, %d warm-up request(s)).",
                 model.name, version, time.monotonic() - start, warmups)
        return True

    # -- request handling --------------------------------------------------------------------------

    def _model(self, name: str) -> _Model:
        if name not in self._models:
            raise KeyError(f"model '{name}' is not served here; models: {sorted(self._models)}.")
        return self._models[name]

    def _resolve(self, spec) -> tuple[_Model, _Servable]:
        """The model and loaded version a request's ModelSpec asks for, or an _Abort."""
        model = self._models.get(spec.name)
        if model is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model '{spec.name}' is not served here; models: {sorted(self._models)}.")
        if spec.version_label:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"version labels are not supported (got '{spec.version_label}'); ask for a version number or none (latest).",
            )
        servable = model.current
        if spec.HasField("version"):
            if servable is None or servable.version != spec.version.value:
                loaded = "none" if servable is None else servable.version
                raise _Abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"version {spec.version.value} of model '{model.name}' is not loaded (loaded: {loaded}).",
                )
        elif servable is None:
            failed = sorted(model.failed)
            raise _Abort(
                grpc.StatusCode.UNAVAILABLE,
                f"model '{model.name}' has no loaded version yet (base path {model.base_path}"
                + (f"; versions that failed to load: {failed}" if failed else "")
                + ").",
            )
        return model, servable

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        model, servable = self._resolve(request.model_spec)
        return _run_predict(model.name, servable, request, self.limits)

    def _metadata(self, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model, servable = self._resolve(request.model_spec)
        fields = list(request.metadata_field)
        if not fields:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must list metadata_field 'signature_def'.")
        unknown = [f for f in fields if f != "signature_def"]
        if unknown:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"metadata fields {unknown} are not supported; only 'signature_def'.")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def _status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        model = self._models.get(spec.name)
        if model is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model '{spec.name}' is not served here; models: {sorted(self._models)}.")
        with model.lock:
            items = sorted(model.status.items())
        if spec.HasField("version"):
            items = [(v, s) for v, s in items if v == spec.version.value]
            if not items:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"version {spec.version.value} of model '{model.name}' is unknown.")
        if not items:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model '{model.name}' has no versions under {model.base_path} yet.")
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, (state, code, message) in items:
            entry = response.model_version_status.add(version=version, state=state)
            entry.status.error_code = code.value[0]
            entry.status.error_message = message
        return response


class _UndecodableRequestFilter(logging.Filter):
    """gRPC logs a full traceback for every request whose bytes are not a valid message (and answers it
    INTERNAL itself); one line is enough for a client's mistake."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "deserializing" in str(record.msg):
            error = record.exc_info[1]
            record.msg = "model server: a request could not be decoded (%s: %s); gRPC answered INTERNAL."
            record.args = (type(error).__name__, str(error)[:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_undecodable_filter = _UndecodableRequestFilter()


def _answer(context, handler, request):
    """Run a handler; turn its _Abort (or an unexpected error) into the call's gRPC status."""
    try:
        return handler(request)
    except _Abort as e:
        context.abort(e.code, e.message)
    except Exception as e:  # noqa: BLE001 - report, do not crash the worker
        log.exception("model server: request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):
        return _answer(context, self._server._predict, request)

    def GetModelMetadata(self, request, context):
        return _answer(context, self._server._metadata, request)

    def Classify(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by this server; use Predict.")

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server; use Predict.")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by this server; use Predict.")


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):
        return _answer(context, self._server._status, request)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "model config reloading is not supported; restart the server.")


# -- command line ---------------------------------------------------------------------------------


def serve_main(argv: list[str] | None = None) -> int:
    """Parse flags like ``tensorflow_model_server``'s, serve until SIGINT/SIGTERM, stop cleanly; returns the exit code."""
    parsed = parse_serve_flags(argv)
    if isinstance(parsed, int):
        return parsed
    args, models = parsed
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tls = TlsConfig(args.ssl_cert_file, args.ssl_key_file, args.ssl_ca_file) if args.ssl_cert_file else None
    server = ModelServer(
        models,
        host=args.host,
        port=args.port,
        poll_seconds=args.file_system_poll_wait_seconds,
        max_message_bytes=args.max_message_bytes,
        tls=tls,
        max_workers=args.grpc_max_threads,
        max_batch_size=args.max_batch_size,
        max_input_bytes=args.max_input_bytes,
        max_load_retries=args.max_num_load_retries,
    )
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        try:
            port = server.start()
        except (OSError, ValueError) as e:
            log.error("%s", e)
            return 1
        print(f"port={port}", flush=True)
        while not stop.wait(0.5):
            pass
        log.info("model server: shutting down.")
        server.stop(args.shutdown_grace_seconds)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
