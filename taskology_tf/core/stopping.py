"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM: finish the step, save a checkpoint, end without a traceback.

The ``taskology`` command installs the handlers (``handle_signals``); training loops run inside
``training_loop()`` and call ``check(save)`` after every step. While a loop runs, the first signal only
sets a flag: the loop finishes its current step, saves checkpoints and raises ``TrainingStopped``, which
the command reports (exit code 130 for SIGINT, 0 for SIGTERM, the convention of a service asked to stop).
A second SIGINT, or a signal while no loop runs (building datasets, tracing), stops at once
(``KeyboardInterrupt`` / ``TrainingStopped`` without a checkpoint: nothing new to save).

Library code that never installs the handlers keeps Python's default behaviour.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {"requested": None, "loops": 0}


class TrainingStopped(Exception):
    """The run stopped on a signal; ``saved`` lists the checkpoints written on the way out (may be empty)."""

    def __init__(self, signum: int, step: int | None = None, saved: tuple[str, ...] = ()):
        self.signum = signum
        self.step = step
        self.saved = tuple(p for p in saved if p)
        name = signal.Signals(signum).name
        where = f" at step {step}" if step is not None else " before training started"
        what = f"; saved {', '.join(self.saved)}" if self.saved else "; nothing new to save"
        super().__init__(f"stopped by {name}{where}{what}. Run the same command again to resume.")

    @property
    def exit_code(self) -> int:
        return 130 if self.signum == signal.SIGINT else 0


def requested() -> int | None:
    """The signal that asked the current run to stop, or None."""
    return _state["requested"]


def _on_signal(signum, frame) -> None:
    if _state["loops"] > 0 and _state["requested"] is None:
        _state["requested"] = signum
        print(f"\ntaskology: {signal.Signals(signum).name} received: stopping after this step and saving a "
              "checkpoint" + (" (Ctrl-C again to stop at once, without saving)." if signum == signal.SIGINT else "."),
              file=sys.stderr, flush=True)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise TrainingStopped(signum)


@contextlib.contextmanager
def handle_signals():
    """Install the graceful SIGINT/SIGTERM handlers for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    _state["requested"] = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state["requested"] = None


@contextlib.contextmanager
def training_loop():
    """Mark a training loop as running: a signal now stops it after the current step."""
    _state["loops"] += 1
    try:
        yield
    finally:
        _state["loops"] -= 1


def check(save, step: int) -> None:
    """After a step: when a stop was requested, ``save()`` (returns the checkpoint paths) and raise ``TrainingStopped``."""
    signum = _state["requested"]
    if signum is None:
        return
    saved = save()
    raise TrainingStopped(signum, step, tuple(saved or ()))
