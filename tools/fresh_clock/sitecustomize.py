"""Make ``time.monotonic()`` read as on a freshly booted host, in every Python process started with it.

On Linux ``time.monotonic()`` counts seconds since boot, so code that compares a reading with a fixed
origin (``last = 0.0; if now - last >= period``) behaves differently in the first minutes after a boot
than on a machine that has been up for hours. This module, found by Python at start-up when its folder is
on ``PYTHONPATH`` (``site`` imports ``sitecustomize``), shifts the clock of each process so that it starts
at ``TASKOLOGY_FRESH_CLOCK`` seconds (e.g. 0) when that variable is set; differences between readings are
unchanged. Child processes inherit the environment and start near that value too.

    TASKOLOGY_FRESH_CLOCK=0 PYTHONPATH=tools/fresh_clock .venv/bin/python -m pytest -n 2 tests

Nothing happens when ``TASKOLOGY_FRESH_CLOCK`` is unset.
"""

import os
import time

_start = os.environ.get("TASKOLOGY_FRESH_CLOCK")
if _start not in (None, ""):
    _real_monotonic = time.monotonic
    _real_monotonic_ns = time.monotonic_ns
    _offset = _real_monotonic() - float(_start)
    _offset_ns = _real_monotonic_ns() - int(float(_start) * 1e9)

    def monotonic() -> float:
        return _real_monotonic() - _offset

    def monotonic_ns() -> int:
        return _real_monotonic_ns() - _offset_ns

    monotonic.__doc__ = _real_monotonic.__doc__
    time.monotonic = monotonic
    time.monotonic_ns = monotonic_ns
