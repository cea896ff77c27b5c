"""Versioned SavedModel export: ``<base>/<version>/`` written under a temporary name and renamed atomically.

A server that polls ``<base>`` (the project's or TF Serving's ``tensorflow_model_server``) only ever
sees complete versions: the export is written to ``<base>/.tmp-<version>-<pid>`` (not a number, so
ignored by version polling) and renamed to ``<base>/<version>`` in one step.
"""

from __future__ import annotations

import os
import shutil


def export_model(model, base_path: str, version: int, keep: int | None = None) -> str:
    """Export ``model`` (dict inputs/outputs) with a ``serving_default`` signature; returns the version folder.

    Args:
      model: a Keras model with named dict inputs and outputs.
      base_path: the model's base folder (``<workdir>/<task>/export``).
      version: integer version (the trainer's global step).
      keep: keep only the newest ``keep`` versions (None = all).
    """
    if int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}.")
    os.makedirs(base_path, exist_ok=True)
    final = os.path.join(base_path, str(int(version)))
    if os.path.exists(final):
        return final
    tmp = os.path.join(base_path, f".tmp-{int(version)}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.export(tmp, format="tf_saved_model", verbose=False)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep:
        for old in list_versions(base_path)[:-keep]:
            shutil.rmtree(os.path.join(base_path, str(old)), ignore_errors=True)
    return final


def list_versions(base_path: str) -> list[int]:
    """Integer version folders under ``base_path``, ascending."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(d) for d in os.listdir(base_path) if d.isdigit() and os.path.isdir(os.path.join(base_path, d)))
