"""Versioned SavedModel export: ``<base>/<version>/`` written under a temporary name, then published.

The export is written to ``<base>/.tmp-<version>-<pid>`` (not a number, so ignored by version polling)
and then published as ``<base>/<version>``; ``<base>`` may be a local path or any TensorFlow filesystem
URL (``gs://``, ``s3://``, ``ram://``; see ``core/storage.py``):

* local path: one atomic folder rename. Old versions are removed the same way round: renamed to a
  non-numeric name first, then deleted.
* URL (object stores): rename is not atomic, so the folder is copied file by file with
  ``saved_model.pb`` last (``storage.publish_tree``), and an old version loses its ``saved_model.pb``
  first when it is removed. ``saved_model.pb`` is the completion marker: the project's server
  (``serving/server.py``) does not try a version folder until it holds one, so it never loads a
  half-written version. ``tensorflow_model_server`` does not look for a marker: it tries every numeric
  folder it sees; while ``saved_model.pb`` is missing the load fails ("SavedModel not found") and is
  retried ``--max_num_load_retries`` times (default 5), ``--load_retry_interval_micros`` apart (default
  1 minute), and once ``saved_model.pb`` is there every other file already is, so it too never loads a
  half-written version. A copy slower than those retries leaves that version in error until the server
  restarts (the next version, published a few steps later, loads normally).

With ``warmup_inputs`` the export also carries ``assets.extra/tf_serving_warmup_requests``, TF
Serving's warm-up file (a TFRecord of ``PredictionLog`` protos), which servers replay before they
serve the version, so the first real request does not pay for graph tracing and allocation.

Signatures: ``serving_default`` (the model's call, as ``model.export`` writes it) and, unless turned
off, ``serving_float16``: the same inputs, the same output names, float32 outputs cast to float16
(half the bytes on the wire; ``ServingPeer(float16_outputs=True)`` asks for it). Other outputs keep
their dtype. float16 keeps about 3 significant digits and saturates to inf beyond 65504, so it suits
predictions such as depth in metres, normals or probabilities, not raw logits of huge magnitude.

With ``image_size_multiple`` (a task's ``Task.image_size_multiple``, e.g. 32 for the U-Nets) both
signatures first check that every image input ([B, H, W, C]) has a height and width that are positive
multiples of it, and fail with ``INVALID_ARGUMENT`` naming the multiple otherwise, before the network
runs: a U-Net given 31x63 images would otherwise answer with a 32x64 map, and 40x72 would fail deep inside
with a concatenation shape error. The check is part of the graph, so ``tensorflow_model_server`` enforces
it too.
"""

from __future__ import annotations

import os
import shutil
from typing import Mapping

import numpy as np

from taskology_tf.core import storage

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
DEFAULT_SIGNATURE = "serving_default"
FLOAT16_SIGNATURE = "serving_float16"
SAVED_MODEL_FILES = ("saved_model.pbtxt", "saved_model.pb")  # published last: a version is complete once one is there


def is_complete(version_dir: str) -> bool:
    """True once a version folder holds its ``saved_model.pb`` (or ``.pbtxt``), published last."""
    return any(storage.exists(storage.join(version_dir, name)) for name in SAVED_MODEL_FILES)


def export_model(
    model,
    base_path: str,
    version: int,
    keep: int | None = None,
    warmup_inputs: Mapping[str, np.ndarray] | None = None,
    float16_signature: bool = True,
    image_size_multiple: int | None = None,
) -> str:
    """Export ``model`` (dict inputs/outputs) with ``serving_default`` (+ ``serving_float16``); returns the version folder.

    Args:
      model: a Keras model with named dict inputs and outputs.
      base_path: the model's base folder (``<workdir>/<task>/export``): a local path or a filesystem URL.
      version: integer version (the trainer's global step).
      keep: keep only the newest ``keep`` versions (None = all).
      warmup_inputs: a small batch of inputs (name -> array, e.g. {"image": uint8 [1, H, W, 3]}) written
        as one warm-up ``PredictRequest`` for the ``serving_default`` signature; None = no warm-up file.
      float16_signature: also write ``serving_float16`` (float32 outputs cast to float16); False = only
        ``serving_default``, exactly what ``model.export`` writes (unless ``image_size_multiple`` is given).
      image_size_multiple: the signatures refuse image inputs whose height or width is not a positive
        multiple of this (``INVALID_ARGUMENT``, before the network runs); None = any size.
    """
    if int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}.")
    if image_size_multiple is not None and (int(image_size_multiple) != image_size_multiple or image_size_multiple < 1):
        raise ValueError(f"image_size_multiple must be a positive integer or None, got {image_size_multiple!r}.")
    if warmup_inputs is not None:
        warmup_inputs = _check_warmup_inputs(model, warmup_inputs)
    base_path = os.fspath(base_path)
    storage.makedirs(base_path)
    final = storage.join(base_path, str(int(version)))
    if storage.exists(final):
        if not storage.is_url(base_path) or is_complete(final):
            return final
        storage.rmtree(final)  # a copy cut short (the writer died): publish it again
    tmp = storage.join(base_path, f".tmp-{int(version)}-{os.getpid()}")
    storage.rmtree(tmp)
    try:
        if float16_signature or image_size_multiple:
            _export_archive(model, tmp, float16_signature, image_size_multiple)
        else:
            model.export(tmp, format="tf_saved_model", verbose=False)
        if warmup_inputs is not None:
            write_warmup_requests(tmp, warmup_inputs)
        storage.publish_tree(tmp, final, last=SAVED_MODEL_FILES)
    finally:
        storage.rmtree(tmp)
    if keep:
        for old in list_versions(base_path)[:-keep]:
            remove_version(base_path, old)
    return final


def _export_archive(model, path: str, float16_signature: bool, image_size_multiple: int | None) -> None:
    """Write ``model`` as a SavedModel with ``serving_default`` (its call) and, optionally, ``serving_float16``.

    ``keras.export.ExportArchive`` with the input signature ``model.export`` derives, the model's call
    registered first (so it is also ``serving_default``, as ``model.export`` makes it), and a second
    endpoint on the same inputs whose float32 outputs are cast to float16. With ``image_size_multiple``
    both endpoints check the image inputs' sizes first.
    """
    import keras

    input_signature = _input_signature(model)

    def checked(args):
        return _check_image_sizes(args, image_size_multiple) if image_size_multiple else args

    def serve(*args):
        return model(*checked(args))

    def serve_float16(*args):
        outputs = model(*checked(args))
        if not isinstance(outputs, Mapping):
            raise ValueError(
                f"export_model needs a model with named dict outputs (e.g. {{'depth': ...}}), got {type(outputs).__name__}; "
                "or pass float16_signature=False."
            )
        return {
            k: keras.ops.cast(v, "float16") if keras.backend.standardize_dtype(v.dtype) == "float32" else v
            for k, v in outputs.items()
        }

    archive = keras.export.ExportArchive()
    if image_size_multiple:
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature)
    else:
        archive.track_and_add_endpoint("serve", model, input_signature)
    if float16_signature:
        archive.add_endpoint(FLOAT16_SIGNATURE, serve_float16, input_signature)
    archive.write_out(path, verbose=False)


def _check_image_sizes(args, multiple: int, name: str = "input"):
    """``args`` (the endpoint's inputs: tensors in dicts, lists, tuples) with every image input ([B, H, W, C])
    passed through a check that its H and W are positive multiples of ``multiple``; dict keys name them."""
    import tensorflow as tf

    if isinstance(args, Mapping):
        return {k: _check_image_sizes(v, multiple, str(k)) for k, v in args.items()}
    if isinstance(args, (list, tuple)):
        return type(args)(_check_image_sizes(v, multiple, name) for v in args)
    if args.shape.rank != 4:
        return args
    h, w = tf.shape(args)[1], tf.shape(args)[2]
    ok = tf.reduce_all(tf.stack([h > 0, w > 0, h % multiple == 0, w % multiple == 0]))
    assertion = tf.debugging.Assert(ok, [
        f"input '{name}': this network takes images whose height and width are positive multiples of {multiple} "
        f"(its total stride is {multiple}); crop them to the multiple below or pad them to the one above, as "
        "training does. Got height",
        h, "width", w,
    ])
    with tf.control_dependencies([assertion]):
        return tf.identity(args)


def _input_signature(model):
    """The input signature ``model.export`` uses (Keras keeps the helper private; kept in one place here)."""
    from keras.src.export.export_utils import get_input_signature

    return get_input_signature(model)


def list_versions(base_path: str) -> list[int]:
    """Integer version folders under ``base_path`` (a local path or a URL), ascending."""
    if not storage.isdir(base_path):
        return []
    return sorted(int(d) for d in storage.listdir(base_path)
                  if d.isdigit() and storage.isdir(storage.join(base_path, d)))


def remove_version(base_path: str, version: int) -> None:
    """Delete ``<base>/<version>`` so that no poller sees it half deleted: renamed away first on a local
    path; on a URL its ``saved_model.pb`` goes first (pollers then no longer take it for complete)."""
    folder = storage.join(base_path, str(int(version)))
    if storage.is_url(folder):
        for name in reversed(SAVED_MODEL_FILES):
            storage.remove(storage.join(folder, name))
        storage.rmtree(folder)
        return
    trash = os.path.join(base_path, f".del-{int(version)}-{os.getpid()}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def write_warmup_requests(version_dir: str, inputs: Mapping[str, np.ndarray], signature_name: str = DEFAULT_SIGNATURE) -> str:
    """Write ``<version_dir>/assets.extra/tf_serving_warmup_requests`` holding one Predict request; returns its path."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from taskology_tf.serving.codec import to_tensor_proto

    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(to_tensor_proto(np.asarray(value)))
    path = storage.join(version_dir, *WARMUP_FILE.split(os.sep))
    storage.makedirs(storage.join(version_dir, os.path.dirname(WARMUP_FILE)))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())
    return path


def _check_warmup_inputs(model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays of the names and dtypes the model's inputs declare (when the model declares them)."""
    inputs = {str(k): np.asarray(v) for k, v in dict(inputs).items()}
    if not inputs:
        raise ValueError("warmup_inputs must name at least one input (or be None for no warm-up file).")
    declared = getattr(model, "input", None) if getattr(model, "built", False) else None
    if isinstance(declared, dict):
        if set(declared) != set(inputs):
            raise ValueError(
                f"warmup_inputs must have exactly the model's input names {sorted(declared)}, got {sorted(inputs)}."
            )
        for name, spec in declared.items():
            want = np.dtype(str(spec.dtype)) if str(spec.dtype) != "string" else None
            if want is not None and inputs[name].dtype != want:
                raise ValueError(f"warmup_inputs['{name}'] must be {want}, got {inputs[name].dtype}.")
    return inputs
