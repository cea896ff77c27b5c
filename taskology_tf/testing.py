"""Helpers for tests: the Table 3 experiment shrunk to seconds on a CPU, polling for a condition, and loading a
script of the repository (``benchmarks/``, ``tools/``) as a module."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

REPO = pathlib.Path(__file__).resolve().parents[1]

# Gin bindings that shrink gin/experiments/table3_*.gin to a few seconds per step count.
TINY_TABLE3 = (
    "synthetic.height = 32",
    "synthetic.width = 64",
    "sim_train/synthetic.num_examples = 16",
    "real_train/synthetic.num_examples = 8",
    "real_depth/synthetic.num_examples = 8",
    "real_eval/synthetic.num_examples = 8",
    "TaskTrainer.batch_size = 4",
    "Experiment.mediator_batch_size = 4",
    "TaskTrainer.checkpoint_every = 2",
    "TaskTrainer.eval_every = 0",
)


def gin_param_flags(*bindings: str, base=TINY_TABLE3) -> list[str]:
    """``--gin_param`` flags for ``base`` followed by ``bindings`` (later bindings win)."""
    flags: list[str] = []
    for binding in (*base, *bindings):
        flags += ["--gin_param", binding]
    return flags


def wait_for(predicate, timeout: float = 60.0, every: float = 0.02) -> bool:
    """Poll ``predicate()`` every ``every`` seconds until it is true or ``timeout`` seconds passed; its last value.

    The timeout only bounds how long a failing test waits: a condition that holds returns at once, so it is
    generous (a loaded machine may take many times longer than an idle one to load a model or start a process).
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def load_script(relative_path: str, name: str | None = None) -> types.ModuleType:
    """The repository's script ``relative_path`` (e.g. ``"benchmarks/cost_model.py"``) imported as a module named
    ``name`` (default ``bench_<stem>``) and registered in ``sys.modules`` (dataclasses look their module up)."""
    path = REPO / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such script in the repository.")
    spec = importlib.util.spec_from_file_location(name or f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
