"""ServingPeer: a peer task's predictions from a model server speaking TF Serving's gRPC API.

The peer's own trainer publishes its network every ``export_every`` steps as version
``<workdir>/export/<step>``; a model server (``taskology_tf.serving.server`` or
``tensorflow_model_server``) serves the newest version; this peer sends each mediator batch to
it and hands the answers to the consuming trainer as float32 constants (no gradient reaches the
peer: they are ``stop_gradient`` by construction).

Staleness. The server-side publish period (the peer trainer's ``export_every``, plus the server's
file-system poll period) is the main staleness control: predictions are computed by whatever
version the server has, which is at most about ``export_every`` peer steps behind the peer's
trainer. The consumer cannot know the peer trainer's progress, so ``staleness()`` reports what it
can see: ``version`` (the version that answered; the peer trainer's step when exports are
numbered by steps), ``steps`` = newest version seen by this peer minus the version that answered
(non-zero when answers come from older versions, e.g. behind a load balancer or a pinned
version), and ``seconds`` since that version was first seen (the age of the served weights as
seen from here, a lower bound of their true age).

``refresh_steps`` / ``refresh_seconds`` add intentional staleness on top, like ``InProcessPeer``:
with 0 / None (default) every batch asks for the newest version. Otherwise the peer pins the
version that answered and asks for exactly that version (``model_spec.version``) until the pin is
``refresh_steps`` consumer steps or ``refresh_seconds`` old, then moves it to the newest. Pinning
needs a server that keeps several versions loaded (TF Serving with ``model_version_policy
{ latest { num_versions: N } }`` or ``{ all {} }``); the project's server and TF Serving's default
keep only the newest, and when the pinned version is gone (NOT_FOUND) the peer moves the pin to
the newest at once (logged at INFO the first time).

Prefetch. ``prefetch_next(batch)`` sends the request for the next mediator batch from a
background thread, so the round trip overlaps the current training step; ``predict(batch)`` then
returns that answer when ``batch`` is the same batch (equal ``id`` key when both have one, else
equal input arrays), and otherwise asks synchronously.

Peer down. When the server cannot be reached (``PeerUnavailableError`` after the client's retries),
``predict`` returns the last successful predictions if they are within ``max_staleness_steps``
consumer steps and ``max_staleness_seconds`` seconds and were computed for a batch of the same
shape, and raises ``PeerUnavailable`` otherwise, so the trainer can skip the relation terms that
read this peer for the step. Note that reused predictions belong to an earlier batch (unless the
same batch comes again): with both bounds None (default) nothing is reused. While down, the
server is probed at most once every ``probe_seconds`` (one attempt on a fresh channel, so gRPC's
reconnect back-off does not delay noticing that it is back); other steps fail over at once.
``predict`` waits at most ``max_wait_seconds`` = (retries + 1) * timeout + the back-off sleeps
for an answer while the server is up (0.25 s more for a prefetched one; a one-time signature
fallback or a pin move adds one more call), and at most ``timeout`` (one probe) while it is down.

Traffic. ``traffic`` (``client.Traffic``) counts the requests and the serialized bytes sent to and
received from the server by every channel of the peer, probes and prefetched requests whose answer
was not used included: what the trainer costs the network.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import time
import warnings
from typing import Any, Mapping, Sequence

import gin
import numpy as np
import tensorflow as tf

from taskology_tf.core.peer import Peer
from taskology_tf.data.example import KEYS
from taskology_tf.serving.client import (
    InvalidRequestError,
    ModelNotFoundError,
    PeerUnavailableError,
    PredictClient,
    Traffic,
)
from taskology_tf.serving.tls import TlsConfig

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
FLOAT16_SIGNATURE = "serving_float16"
STILL_DOWN_LOG_SECONDS = 60.0  # while a peer stays down, remind at most this often
GUARD_SLACK_SECONDS = 0.25  # a prefetched answer is waited for max_wait_seconds plus this (the client's deadlines end it first)


class PeerUnavailable(ConnectionError):
    """A peer's predictions cannot be had for this step (server down, nothing recent enough to reuse).

    Attributes: ``task_name``, ``address``, ``down_steps`` (steps answered without the server so far),
    ``down_seconds`` (seconds since the server was last reached successfully, or since it went down).
    """

    def __init__(self, message: str, task_name: str, address: str, down_steps: int, down_seconds: float,
                 before_first_answer: bool = False):
        super().__init__(message)
        self.task_name = task_name
        self.address = address
        self.down_steps = down_steps
        self.down_seconds = down_seconds
        # The peer never answered yet (e.g. its trainer has not published version 0): expected at start-up.
        self.before_first_answer = before_first_answer


@dataclasses.dataclass
class _Result:
    """The last successful predictions and what they were computed for."""

    outputs: dict[str, tf.Tensor]
    version: int
    shapes: dict[str, tuple[int, ...]]  # input shapes of the batch
    received_at: float  # time.monotonic()
    step: int  # consumer step when received


@dataclasses.dataclass
class _Pending:
    """A request sent ahead by ``prefetch_next``."""

    arrays: dict[str, np.ndarray]
    ids: np.ndarray | None
    future: concurrent.futures.Future
    submitted_at: float
    requested: int | None  # pinned version asked for, None = newest


def _ids(inputs: Mapping[str, Any]) -> np.ndarray | None:
    return np.asarray(inputs["id"]) if "id" in inputs else None


def _as_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype.kind == "f" and array.dtype != np.float32 else array


@gin.configurable(denylist=["task_name", "address", "model_name", "input_keys", "output_keys"])
class ServingPeer(Peer):
    """Predictions of task ``task_name`` from a TF Serving-compatible model server (see the module doc).

    Args:
      task_name: the peer task.
      address: ``host:port`` of the model server.
      model_name: served model name; default ``task_name``.
      input_keys: example keys sent to the server (the peer network's inputs), e.g. ("image",).
      output_keys: prediction keys to ask for (``output_filter``); None = all the signature's outputs.
      timeout: deadline of each attempt, seconds.
      retries: extra attempts after a transient failure (while the server is up).
      backoff: first wait between attempts, seconds; doubles each retry.
      tls: TLS settings for a TLS server; None = plaintext.
      refresh_steps / refresh_seconds: pin the answering version for this many consumer steps /
        seconds (0 / None = always the newest version); see the module doc.
      max_staleness_steps / max_staleness_seconds: while the server is down, reuse the last
        predictions if they are at most this many consumer steps / seconds old (None = no bound on
        that axis; both None = never reuse).
      float16_outputs: ask for signature ``serving_float16`` (half the bytes on the wire), falling
        back to ``serving_default`` with a one-time warning when the model has no such signature;
        outputs are float32 either way.
      prefetch: run ``prefetch_next`` requests on a background thread (False: ``prefetch_next`` is a no-op).
      probe_seconds: while the server is down, try it again at most this often.
    """

    def __init__(
        self,
        task_name: str,
        address: str,
        model_name: str | None = None,
        input_keys: Sequence[str] = ("image",),
        output_keys: Sequence[str] | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.1,
        tls: TlsConfig | None = None,
        refresh_steps: int = 0,
        refresh_seconds: float | None = None,
        max_staleness_steps: int | None = None,
        max_staleness_seconds: float | None = None,
        float16_outputs: bool = False,
        prefetch: bool = True,
        probe_seconds: float = 1.0,
    ):
        if not task_name or not isinstance(task_name, str):
            raise ValueError(f"task_name must name the peer task, got {task_name!r}.")
        if isinstance(input_keys, str) or not input_keys:
            raise ValueError(f"input_keys must be a non-empty sequence of example keys, e.g. ('image',); got {input_keys!r}.")
        if output_keys is not None and (isinstance(output_keys, str) or not output_keys):
            raise ValueError(f"output_keys must be a non-empty sequence of prediction keys or None (all); got {output_keys!r}.")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0, backoff >= 0; got {timeout}, {retries}, {backoff}.")
        if refresh_steps < 0:
            raise ValueError(f"refresh_steps must be >= 0 (0 = always the newest version), got {refresh_steps}.")
        if refresh_seconds is not None and refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be positive or None, got {refresh_seconds}.")
        if max_staleness_steps is not None and max_staleness_steps < 0:
            raise ValueError(f"max_staleness_steps must be >= 0 or None, got {max_staleness_steps}.")
        if max_staleness_seconds is not None and max_staleness_seconds < 0:
            raise ValueError(f"max_staleness_seconds must be >= 0 or None, got {max_staleness_seconds}.")
        if probe_seconds <= 0:
            raise ValueError(f"probe_seconds must be positive, got {probe_seconds}.")
        self.task_name = task_name
        self.address = address
        self.model_name = model_name or task_name
        self.input_keys = tuple(input_keys)
        self.output_keys = None if output_keys is None else tuple(output_keys)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.tls = tls
        self.refresh_steps = int(refresh_steps)
        self.refresh_seconds = refresh_seconds
        self.max_staleness_steps = max_staleness_steps
        self.max_staleness_seconds = max_staleness_seconds
        self.float16_outputs = bool(float16_outputs)
        self.probe_seconds = float(probe_seconds)
        self.unavailable_steps = 0  # predict calls answered without the server (reused or raised)
        self.traffic = Traffic()  # bytes of every Predict call to this peer's server (all channels, probes too)

        self._signature = FLOAT16_SIGNATURE if float16_outputs else DEFAULT_SIGNATURE
        self._client = self._new_client(self.retries)
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"peer-{task_name}") if prefetch else None
        )
        self._pending: _Pending | None = None
        self._inflight: concurrent.futures.Future | None = None  # a request not waited for (down)
        self._last: _Result | None = None
        self._version = -1
        self._newest = -1
        self._first_seen: dict[int, float] = {}
        self._step = 0
        self._stepped = False
        self._calls = 0
        self._pinning = self.refresh_steps > 0 or refresh_seconds is not None
        self._pin: int | None = None
        self._pinned_step = 0
        self._pinned_at = 0.0
        self._available = True
        self._down_since = 0.0
        self._down_steps_at_start = 0
        self._last_down_log = 0.0
        self._next_probe = -math.inf  # no probe yet: due now (not a time since boot)
        self._last_error: BaseException | None = None
        self._warned_convert = False
        self._told_unpinned = False

    # -- Peer API ----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Version (the peer trainer's export step) that computed the last predictions; -1 before any."""
        return self._version

    @property
    def available(self) -> bool:
        """False from the first failed call until the server answers again."""
        return self._available

    @property
    def max_wait_seconds(self) -> float:
        """Longest a call waits for the server: every attempt's deadline plus the back-off sleeps."""
        return (self.retries + 1) * self.timeout + self.backoff * (2**self.retries - 1)

    def on_step(self, step: int) -> None:
        """Record the consumer's step (staleness bounds and version pins count these)."""
        self._step = int(step)
        self._stepped = True

    def staleness(self) -> dict[str, float]:
        """{'steps': newest version seen - answering version, 'seconds': since that version was first
        seen, 'version': the answering version}; {} before the first answer."""
        if self._last is None:
            return {}
        now = time.monotonic()
        version = self._version
        seen = self._first_seen.get(version, self._last.received_at)
        steps = max(self._newest - version, 0) if version >= 0 else 0
        return {"steps": float(steps), "seconds": float(now - seen), "version": float(version)}

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Peer predictions (name -> float32 [B, ...] constant) for ``inputs`` (must hold ``input_keys``).

        Raises:
          PeerUnavailable: the server is down and no recent-enough predictions of this batch shape exist.
          KeyError / ValueError: missing inputs, or images that are neither uint8 nor floats in [0, 1].
          InvalidRequestError, ModelNotFoundError, ServingError: the server rejected the request.
        """
        self._calls += 1
        arrays, ids = self._wire(inputs), _ids(inputs)
        pending, self._pending = self._pending, None
        if pending is not None:
            if self._matches(pending, arrays, ids):
                if self._available or pending.future.done():
                    return self._finish(arrays, *self._outcome(pending))
                self._inflight = pending.future  # down and its probe is still out: do not wait for it
                return self._unavailable(arrays)
            self._discard(pending)
        if not self._available and not self._probe_due():
            return self._unavailable(arrays)
        return self._finish(arrays, *self._call_now(arrays))

    def prefetch_next(self, inputs: Mapping[str, Any]) -> None:
        """Send the request for the next mediator batch now, from a background thread; ``predict`` on
        the same batch picks the answer up. While the server is down this is the (rate-limited) probe."""
        if self._executor is None:
            return
        arrays, ids = self._wire(inputs), _ids(inputs)
        old, self._pending = self._pending, None
        if old is not None:
            self._discard(old)
        probe = not self._available
        if probe and not self._probe_due():
            return
        now = time.monotonic()
        requested = self._requested_version()
        client = self._client
        if probe:
            client = self._new_client(0)
            self._next_probe = now + self.probe_seconds
        future = self._executor.submit(self._request, client, arrays, requested, probe)
        if probe:
            self._inflight = future
        self._pending = _Pending(arrays, ids, future, now, requested)

    def close(self) -> None:
        """Stop the prefetch thread and close the channel."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._pending = None
        self._client.close()

    def __enter__(self) -> "ServingPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inputs ------------------------------------------------------------------------------------

    def _wire(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The arrays to send: ``input_keys`` only, copied, images as uint8, floats in the contract dtype."""
        missing = [k for k in self.input_keys if k not in inputs]
        if missing:
            raise KeyError(
                f"peer '{self.task_name}' needs inputs {missing} (input_keys={list(self.input_keys)}); "
                f"the batch has {sorted(inputs)}."
            )
        return {k: self._wire_array(k, inputs[k]) for k in self.input_keys}

    def _wire_array(self, key: str, value: Any) -> np.ndarray:
        array = np.array(value, copy=True)  # the caller may reuse its buffer while a prefetch is out
        spec = KEYS.get(key)
        if spec is None:
            return array
        if spec.dtype != "uint8":
            want = np.dtype(spec.dtype)
            return array.astype(want) if array.dtype.kind == "f" and want.kind == "f" else array
        if array.dtype == np.uint8:
            return array
        if array.dtype.kind == "f":
            if array.size and (not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0):
                low, high = (float(np.nanmin(array)), float(np.nanmax(array))) if np.isfinite(array).any() else (np.nan, np.nan)
                raise ValueError(
                    f"peer '{self.task_name}': input '{key}' is {array.dtype} with values in [{low}, {high}]; images go "
                    "on the wire as uint8: pass uint8 images, or floats in [0, 1] (converted to uint8)."
                )
            converted = np.rint(array * 255.0).astype(np.uint8)
        elif array.dtype.kind in "iu":
            if array.size and (array.min() < 0 or array.max() > 255):
                raise ValueError(
                    f"peer '{self.task_name}': input '{key}' is {array.dtype} with values outside [0, 255]; pass uint8 images."
                )
            converted = array.astype(np.uint8)
        else:
            raise ValueError(f"peer '{self.task_name}': input '{key}' must be a uint8 image, got dtype {array.dtype}.")
        if not self._warned_convert:
            self._warned_convert = True
            warnings.warn(
                f"peer '{self.task_name}': input '{key}' is {array.dtype}; converting to uint8 (the wire format, "
                "x * 255 rounded) for the model server. Feed the uint8 images of the dataset to avoid the conversion "
                "(warned once).",
                UserWarning,
                stacklevel=4,
            )
        return converted

    @staticmethod
    def _matches(pending: _Pending, arrays: Mapping[str, np.ndarray], ids: np.ndarray | None) -> bool:
        """Same batch: equal ids when both have them, else equal input arrays."""
        if any(pending.arrays[k].shape != a.shape or pending.arrays[k].dtype != a.dtype for k, a in arrays.items()):
            return False
        if pending.ids is not None and ids is not None:
            return pending.ids.shape == ids.shape and bool(np.array_equal(pending.ids, ids))
        return all(np.array_equal(pending.arrays[k], a) for k, a in arrays.items())

    # -- requests ----------------------------------------------------------------------------------

    def _new_client(self, retries: int) -> PredictClient:
        return PredictClient(
            self.address,
            self.model_name,
            timeout=self.timeout,
            retries=retries,
            backoff=self.backoff,
            tls=self.tls,
            signature_name=self._signature,
            traffic=self.traffic,
        )

    def _request(self, client: PredictClient, arrays, requested: int | None, close: bool):
        try:
            return client.predict(arrays, self.output_keys, version=requested)
        finally:
            if close:
                client.close()

    def _requested_version(self) -> int | None:
        """The pinned version to ask for, or None (newest) when not pinning or the pin is due for a refresh."""
        if not self._pinning or self._pin is None:
            return None
        if self.refresh_steps and self._current_step() - self._pinned_step >= self.refresh_steps:
            return None
        if self.refresh_seconds is not None and time.monotonic() - self._pinned_at >= self.refresh_seconds:
            return None
        return self._pin

    def _current_step(self) -> int:
        """Consumer step from ``on_step``; the number of predict calls if nobody calls ``on_step``."""
        return self._step if self._stepped else self._calls

    def _probe_due(self) -> bool:
        return time.monotonic() >= self._next_probe and (self._inflight is None or self._inflight.done())

    def _call_now(self, arrays):
        """Ask synchronously; returns (value, error, requested). Down: one attempt on a fresh channel."""
        requested = self._requested_version()
        probe = not self._available
        client = self._client
        if probe:
            client = self._new_client(0)
            self._next_probe = time.monotonic() + self.probe_seconds
        try:
            return self._request(client, arrays, requested, probe), None, requested
        except Exception as e:  # noqa: BLE001 - _finish decides what to do with it
            return None, e, requested

    def _outcome(self, pending: _Pending):
        """Wait (at most what is left of ``max_wait_seconds`` + slack) for a prefetched answer: (value, error, requested)."""
        remaining = self.max_wait_seconds + GUARD_SLACK_SECONDS - (time.monotonic() - pending.submitted_at)
        try:
            return pending.future.result(timeout=max(remaining, 0.0)), None, pending.requested
        except concurrent.futures.TimeoutError:
            self._inflight = pending.future
            error = PeerUnavailableError(
                f"model server at {self.address} did not answer model '{self.model_name}' within "
                f"{self.max_wait_seconds:.1f} s",
                self.address,
                self.model_name,
                self.retries + 1,
            )
            return None, error, pending.requested
        except concurrent.futures.CancelledError:
            return self._call_now(pending.arrays)
        except Exception as e:  # noqa: BLE001
            return None, e, pending.requested

    def _discard(self, pending: _Pending) -> None:
        """Drop a prefetched request for another batch (its answer, if any, is not used)."""
        if pending.future.cancel():
            return
        if pending.future.done():
            if not self._available and pending.future.exception() is None:
                self._next_probe = -math.inf  # it got through: the server is back, ask now
            return
        self._inflight = pending.future

    def _finish(self, arrays, value, error, requested, retry: bool = True) -> dict[str, tf.Tensor]:
        if error is None:
            return self._accept(arrays, value, requested)
        if isinstance(error, PeerUnavailableError):
            self._last_error = error
            return self._unavailable(arrays)
        if retry and isinstance(error, InvalidRequestError) and self.float16_outputs:
            if self._signature == FLOAT16_SIGNATURE:
                if not self._float16_signature_missing():
                    raise error
                self._signature = DEFAULT_SIGNATURE
                self._client.signature_name = DEFAULT_SIGNATURE
                warnings.warn(
                    f"peer '{self.task_name}': model '{self.model_name}' at {self.address} has no signature "
                    f"'{FLOAT16_SIGNATURE}'; asking for '{DEFAULT_SIGNATURE}' (float32 outputs) instead (warned once).",
                    UserWarning,
                    stacklevel=3,
                )
            return self._finish(arrays, *self._call_now(arrays), retry=False)
        if retry and isinstance(error, ModelNotFoundError) and requested is not None:
            log.log(
                logging.DEBUG if self._told_unpinned else logging.INFO,
                "peer '%s': pinned version %d of model '%s' is no longer served at %s; moving to the newest version. "
                "(Pinning with refresh_steps/refresh_seconds needs a server that keeps several versions loaded.)",
                self.task_name, requested, self.model_name, self.address,
            )
            self._told_unpinned = True
            self._pin = None
            return self._finish(arrays, *self._call_now(arrays), retry=False)
        raise error

    def _float16_signature_missing(self) -> bool:
        """Whether the served model lacks the float16 signature (checked through GetModelMetadata)."""
        try:
            self._client.metadata()
        except InvalidRequestError:
            return True
        except Exception:  # noqa: BLE001 - cannot tell; keep the original error
            return False
        return False

    # -- results and failures ----------------------------------------------------------------------

    def _accept(self, arrays, value, requested) -> dict[str, tf.Tensor]:
        outputs_np, version = value
        now = time.monotonic()
        outputs = {k: tf.constant(_as_float32(np.asarray(v))) for k, v in outputs_np.items()}
        if not self._available:
            self._available = True
            self._client.close()
            self._client = self._new_client(self.retries)  # a fresh channel: the old one may be backing off
            self._inflight = None
            if version >= 0 and version < self._newest:  # the server came back with older versions
                self._newest = version
            log.info(
                "peer '%s': model '%s' at %s is back after %.1f s (%d step(s) without it); serving version %d.",
                self.task_name, self.model_name, self.address, now - self._down_since,
                self.unavailable_steps - self._down_steps_at_start, version,
            )
        self._last_error = None
        if version >= 0:
            self._first_seen.setdefault(version, now)
            self._newest = max(self._newest, version)
            for old in [v for v in self._first_seen if v < version]:
                del self._first_seen[old]
        self._version = version
        if self._pinning and requested is None and version >= 0:
            self._pin, self._pinned_step, self._pinned_at = version, self._current_step(), now
        self._last = _Result(outputs, version, {k: a.shape for k, a in arrays.items()}, now, self._current_step())
        return outputs

    def _unavailable(self, arrays) -> dict[str, tf.Tensor]:
        """The server could not answer this step: reuse the last predictions within bounds, else raise."""
        now = time.monotonic()
        self.unavailable_steps += 1
        cause = f"{self._last_error}" if self._last_error is not None else "no answer"
        if self._available:
            self._available = False
            self._down_since = now
            self._down_steps_at_start = self.unavailable_steps - 1
            self._last_down_log = now
            self._next_probe = now + self.probe_seconds
            reuse = self.max_staleness_steps is not None or self.max_staleness_seconds is not None
            if self._last is None:  # start-up: the peer's server has no version yet, or is not up yet
                log.info("peer '%s': no predictions from model '%s' at %s yet (its first version may not be "
                         "published yet); relation terms that read it wait for it.", self.task_name, self.model_name,
                         self.address)
            else:
                log.warning(
                    "peer '%s': model '%s' at %s is unavailable (%s); %s; trying again every %.1f s.",
                    self.task_name, self.model_name, self.address, cause,
                    "reusing its last predictions within max_staleness_steps=%s / max_staleness_seconds=%s"
                    % (self.max_staleness_steps, self.max_staleness_seconds)
                    if reuse else "relation terms that read it cannot be computed until it is back",
                    self.probe_seconds,
                )
        elif now - self._last_down_log >= STILL_DOWN_LOG_SECONDS:
            self._last_down_log = now
            log.warning(
                "peer '%s': model '%s' at %s still unavailable after %.0f s (%d step(s)).",
                self.task_name, self.model_name, self.address, now - self._down_since,
                self.unavailable_steps - self._down_steps_at_start,
            )
        refusal = self._reuse_refusal({k: a.shape for k, a in arrays.items()}, now)
        if refusal is None:
            return self._last.outputs
        down_steps = self.unavailable_steps - self._down_steps_at_start
        raise PeerUnavailable(
            f"peer '{self.task_name}' (model '{self.model_name}' at {self.address}) unavailable for {down_steps} "
            f"step(s), {now - self._down_since:.1f} s ({cause}), and {refusal}. Skip the relation terms that read "
            f"it this step, or restart its model server.",
            self.task_name,
            self.address,
            down_steps,
            now - self._down_since,
            before_first_answer=self._last is None,
        )

    def _reuse_refusal(self, shapes, now) -> str | None:
        """None if the last predictions may stand in for this batch, else why not."""
        if self.max_staleness_steps is None and self.max_staleness_seconds is None:
            return "reusing old predictions is off (max_staleness_steps and max_staleness_seconds are None)"
        last = self._last
        if last is None:
            return "there are no earlier predictions to reuse"
        if last.shapes != shapes:
            return f"the last predictions were for inputs of shapes {last.shapes}, this batch has {shapes}"
        age_steps = self._current_step() - last.step
        if self.max_staleness_steps is not None and age_steps > self.max_staleness_steps:
            return f"the last predictions are {age_steps} step(s) old (max_staleness_steps={self.max_staleness_steps})"
        age = now - last.received_at
        if self.max_staleness_seconds is not None and age > self.max_staleness_seconds:
            return f"the last predictions are {age:.1f} s old (max_staleness_seconds={self.max_staleness_seconds})"
        return None
