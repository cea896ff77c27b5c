"""A model server speaking TensorFlow Serving's gRPC API over ``<base>/<integer version>/`` SavedModels.

Same layout and protocol as ``tensorflow_model_server`` (``PredictionService.Predict`` and
``GetModelMetadata``, ``ModelService.GetModelStatus``), so trainers can point at either. Per model a
background thread polls the base folder; a newer version is loaded, warmed up (replaying
``assets.extra/tf_serving_warmup_requests``) and only then swapped in, in one reference assignment:
requests in flight finish on the version they started with and no request waits for a load. A
version that fails to load is reported by ``GetModelStatus`` and skipped until its
``saved_model.pb`` changes; the previous version keeps serving. Only the newest loaded version is
served (TF Serving's default "latest 1" policy).

Run as a process: ``python -m taskology_tf.serving.server --model_name depth --model_base_path
/work/depth/export --port 8500`` prints ``port=<n>`` on stdout once it serves, and stops cleanly
on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
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

from taskology_tf.serving.codec import from_tensor_proto, to_tensor_proto
from taskology_tf.serving.export import WARMUP_FILE
from taskology_tf.serving.tls import TlsConfig

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit too
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
class _Servable:
    """One loaded version of a model."""

    version: int
    path: str
    loaded: Any  # the restored object; keeps the signature functions' variables alive
    signatures: dict[str, _Signature]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]


class _Model:
    """A served model: its base folder, the version serving now, and the status of each version seen."""

    def __init__(self, name: str, base_path: str):
        self.name = name
        self.base_path = base_path
        self.lock = threading.Lock()
        self.current: _Servable | None = None
        self.status: dict[int, tuple[int, grpc.StatusCode, str]] = {}  # version -> (state, code, message)
        self.failed: dict[int, Any] = {}  # version -> fingerprint of the saved_model.pb that failed

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
    pb = os.path.join(path, "saved_model.pb")
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved)
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags] or list(saved.meta_graphs)
    if not graphs:
        return {}
    return {k: v for k, v in graphs[0].signature_def.items() if not k.startswith("__")}


def _version_folders(base_path: str) -> dict[int, str]:
    """Integer version -> folder name (numeric names only: temporary exports are ignored)."""
    if not os.path.isdir(base_path):
        return {}
    folders = {}
    for name in sorted(os.listdir(base_path)):  # "7" sorts after "007" and wins
        if name.isdigit() and os.path.isdir(os.path.join(base_path, name)):
            folders[int(name)] = name
    return folders


def _fingerprint(path: str):
    """Changes when a version's graph file is rewritten (a failed version is retried only then)."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        try:
            st = os.stat(os.path.join(path, name))
            return (name, st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    return None


def _load_servable(version: int, path: str) -> _Servable:
    loaded = tf.saved_model.load(path)
    signatures = {}
    for name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        signatures[name] = _Signature(name, fn, dict(kwargs), tuple(fn.structured_outputs))
    if not signatures:
        raise ValueError(f"the SavedModel at {path} has no signatures; export it with a serving signature.")
    return _Servable(version, path, loaded, signatures, _read_signature_defs(path))


def _check_inputs(model_name: str, signature: _Signature, arrays: Mapping[str, Any]) -> None:
    expected = signature.inputs
    unknown = sorted(set(arrays) - set(expected))
    missing = sorted(set(expected) - set(arrays))
    if unknown or missing:
        parts = [f"model '{model_name}' signature '{signature.name}' expects inputs {_describe_inputs(expected)}"]
        if unknown:
            parts.append(f"unknown inputs {unknown}")
        if missing:
            parts.append(f"missing inputs {missing}")
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(parts) + ".")
    for name, spec in expected.items():
        array = arrays[name]
        if spec.dtype == tf.string:
            dtype_ok = array.dtype == object
        else:
            dtype_ok = array.dtype == spec.dtype.as_numpy_dtype
        if not dtype_ok or not spec.shape.is_compatible_with(array.shape):
            got = "string" if array.dtype == object else array.dtype.name
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' must be {_format_spec(spec.dtype, spec.shape)}, got {got} {list(array.shape)}.",
            )


def _run_predict(model_name: str, servable: _Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Validate, compute and encode one Predict request on one loaded version."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(signature_name)
    if signature is None:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model '{model_name}' version {servable.version} has no signature '{signature_name}'; "
            f"signatures: {sorted(servable.signatures)}.",
        )
    arrays = {}
    for name, proto in request.inputs.items():
        try:
            arrays[name] = from_tensor_proto(proto, copy=False)
        except (TypeError, ValueError) as e:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': {e}") from None
    _check_inputs(model_name, signature, arrays)
    wanted = list(request.output_filter) or list(signature.outputs)
    unknown = sorted(set(wanted) - set(signature.outputs))
    if unknown:
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {unknown}; signature '{signature_name}' has outputs "
            f"{sorted(signature.outputs)}.",
        )
    try:
        outputs = signature.fn(**{k: tf.constant(v) for k, v in arrays.items()})
        response = predict_pb2.PredictResponse()
        for key in dict.fromkeys(wanted):
            response.outputs[key].CopyFrom(to_tensor_proto(outputs[key].numpy()))
    except tf.errors.OpError as e:
        code = _CODES.get(e.error_code, grpc.StatusCode.UNKNOWN)
        raise _Abort(code, f"model '{model_name}' version {servable.version} failed on the request: {e.message}") from None
    response.model_spec.name = model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    return response


def _warm_up(model_name: str, servable: _Servable) -> int:
    """Replay the version's TF Serving warm-up file (if any); returns the number of requests run."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
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
      max_message_bytes: gRPC send/receive limit (gRPC's default of 4 MB is too small for images).
      tls: server certificate/key (and CA for mutual TLS); None = plaintext.
      max_workers: threads answering requests.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        poll_seconds: float = 1.0,
        max_message_bytes: int = 256 * 2**20,
        tls: TlsConfig | None = None,
        max_workers: int = 8,
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
        self._models = {name: _Model(name, os.path.abspath(os.fspath(base))) for name, base in models.items()}
        self.host = host
        self.port = int(port)
        self.poll_seconds = float(poll_seconds)
        self.max_message_bytes = int(max_message_bytes)
        self.tls = tls
        self.max_workers = int(max_workers)
        self._server: grpc.Server | None = None
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> int:
        """Load the newest version of each model present now, start serving and polling; returns the bound port."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("ModelServer.start() was already called; a stopped server cannot restart, make a new one.")
        for model in self._models.values():
            if not os.path.isdir(model.base_path):
                log.warning("model '%s': base path %s does not exist yet; waiting for versions.", model.name, model.base_path)
        self.poll()
        options = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        ]
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
            for v in [v for v, (state, _, _) in model.status.items() if v not in on_disk and state == _State.END]:
                del model.status[v]
        for v in [v for v in model.failed if v not in on_disk]:
            del model.failed[v]
        current = -1 if model.current is None else model.current.version
        for version in sorted((v for v in folders if v > current), reverse=True):
            path = os.path.join(model.base_path, folders[version])
            fingerprint = _fingerprint(path)
            if version in model.failed and model.failed[version] == fingerprint:
                continue  # failed before and unchanged since
            if self._load(model, version, path, fingerprint):
                return

    def _load(self, model: _Model, version: int, path: str, fingerprint) -> bool:
        model.set_status(version, _State.LOADING)
        start = time.monotonic()
        try:
            servable = _load_servable(version, path)
            warmups = _warm_up(model.name, servable)
        except Exception as e:  # a broken version must not take the server down
            code = _CODES.get(getattr(e, "error_code", None), grpc.StatusCode.UNKNOWN)
            message = f"loading version {version} from {path} failed: {type(e).__name__}: {e}"
            model.failed[version] = fingerprint
            model.set_status(version, _State.END, code, message)
            serving = model.current.version if model.current is not None else "none"
            log.error("model '%s': %s; still serving version %s.", model.name, message, serving)
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
        return _run_predict(model.name, servable, request)

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskology serve",
        description="Serve <base>/<version>/ SavedModels over TensorFlow Serving's gRPC API (prints port=<n> when up).",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port). Default 8500.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind. Default 127.0.0.1 (this machine only).")
    p.add_argument("--model_name", default=None, help="name of the model served from --model_base_path. Default 'default'.")
    p.add_argument("--model_base_path", default=None, help="folder holding <integer version>/ SavedModels.")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another model (repeatable).")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0, help="seconds between version polls.")
    p.add_argument("--max_message_bytes", type=int, default=256 * 2**20, help="gRPC message size limit.")
    p.add_argument("--grpc_max_threads", type=int, default=8, help="threads answering requests.")
    p.add_argument("--ssl_cert_file", default=None, help="PEM server certificate chain (enables TLS).")
    p.add_argument("--ssl_key_file", default=None, help="PEM private key of --ssl_cert_file.")
    p.add_argument("--ssl_ca_file", default=None, help="PEM CA; clients must present a certificate it signed (mutual TLS).")
    p.add_argument("--shutdown_grace_seconds", type=float, default=5.0, help="time requests in flight get at shutdown.")
    return p


def _models_from_args(parser: argparse.ArgumentParser, args) -> dict[str, str]:
    models: dict[str, str] = {}
    if args.model_base_path:
        models[args.model_name or "default"] = args.model_base_path
    elif args.model_name:
        parser.error("--model_name needs --model_base_path (or use --model NAME=PATH).")
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--model takes NAME=PATH, got '{item}'.")
        if name in models:
            parser.error(f"model '{name}' is given twice.")
        models[name] = path
    if not models:
        parser.error("name at least one model: --model_name NAME --model_base_path PATH, or --model NAME=PATH.")
    return models


def serve_main(argv: list[str] | None = None) -> int:
    """Parse flags like ``tensorflow_model_server``'s, serve until SIGINT/SIGTERM, stop cleanly; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        models = _models_from_args(parser, args)
        if args.ssl_cert_file or args.ssl_key_file or args.ssl_ca_file:
            if not (args.ssl_cert_file and args.ssl_key_file):
                parser.error("TLS needs both --ssl_cert_file and --ssl_key_file.")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
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
