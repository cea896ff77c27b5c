"""The flags of ``taskology serve`` (those of ``tensorflow_model_server`` where they exist), without TensorFlow.

Kept apart from ``server.py`` so that ``taskology serve --help`` and flag mistakes answer at once: the
server module imports TensorFlow, which takes seconds.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
DEFAULT_MAX_BATCH_SIZE = 256


def version_folder_hint(base_path: str) -> str | None:
    """A hint when ``base_path`` is itself a SavedModel (a version folder) rather than the folder above them.

    Local paths only (a URL such as ``gs://...`` is not looked at here: that needs TensorFlow)."""
    if "://" in base_path:
        return None
    if any(os.path.isfile(os.path.join(base_path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        parent = os.path.dirname(os.path.abspath(base_path))
        return (f"{base_path} holds a SavedModel itself: the base path is the folder *above* the integer version "
                f"folders (<base>/<version>/saved_model.pb). Did you mean --model_base_path {parent}?")
    return None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = no limit), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskology serve",
        description="Serve <base>/<version>/ SavedModels over TensorFlow Serving's gRPC API (prints port=<n> when up).",
    )
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port). Default 8500.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind. Default 127.0.0.1 (this machine only).")
    p.add_argument("--model_name", default=None, help="name of the model served from --model_base_path. Default 'default'.")
    p.add_argument("--model_base_path", default=None,
                   help="folder holding <integer version>/ SavedModels (the folder above the versions).")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another model (repeatable).")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0, help="seconds between version polls.")
    p.add_argument("--max_num_load_retries", type=_positive_int, default=5,
                   help="later polls that retry a version which failed to load (e.g. still being copied), unless "
                   "its files change. Default 5.")
    p.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="gRPC message size limit, for requests and replies; a request whose reply would exceed it "
                   "is refused before it is computed. Default 256 MiB.")
    p.add_argument("--max_batch_size", type=_positive_int, default=DEFAULT_MAX_BATCH_SIZE,
                   help="largest batch (first dimension of an input) a request may declare; larger ones get "
                   f"INVALID_ARGUMENT before anything is allocated (0 = no limit). Default {DEFAULT_MAX_BATCH_SIZE}.")
    p.add_argument("--max_input_bytes", type=_positive_int, default=None,
                   help="largest decoded size of a request's inputs (declared shapes x dtype sizes); larger ones get "
                   "INVALID_ARGUMENT before anything is allocated (0 = no limit). Default: --max_message_bytes.")
    p.add_argument("--grpc_max_threads", type=int, default=8, help="threads answering requests.")
    p.add_argument("--ssl_cert_file", default=None, help="PEM server certificate chain (enables TLS).")
    p.add_argument("--ssl_key_file", default=None, help="PEM private key of --ssl_cert_file.")
    p.add_argument("--ssl_ca_file", default=None, help="PEM CA; clients must present a certificate it signed (mutual TLS).")
    p.add_argument("--shutdown_grace_seconds", type=float, default=5.0, help="time requests in flight get at shutdown.")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up messages (CUDA, absl) too.")
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
    for name, path in models.items():
        hint = version_folder_hint(path)
        if hint:
            parser.error(f"model '{name}': {hint}")
    return models


def parse_serve_flags(argv) -> tuple[argparse.Namespace, dict[str, str]] | int:
    """(flags, model name -> base path), or the exit code when parsing ended (``--help``: 0, a mistake: 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        models = _models_from_args(parser, args)
        if args.ssl_cert_file or args.ssl_key_file or args.ssl_ca_file:
            if not (args.ssl_cert_file and args.ssl_key_file):
                parser.error("TLS needs both --ssl_cert_file and --ssl_key_file.")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    return args, models
