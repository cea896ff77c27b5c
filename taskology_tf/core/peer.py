"""Peers: where a trainer gets the predictions of the other tasks.

A trainer does not care whether a peer is an in-process snapshot of another
task's weights (this module) or a client of a model server; both return a dict
of named prediction tensors for a batch of mediator inputs, and both say which
version (the peer's training step) computed them.
"""

from __future__ import annotations

import abc
import time
from typing import Any, Callable, Mapping

import tensorflow as tf


class Peer(abc.ABC):
    """Returns a task's predictions for a batch of inputs."""

    task_name: str
    input_keys: tuple[str, ...] = ()  # example keys the peer's network consumes
    # Requests and bytes exchanged with a model server for these predictions (``as_dict()``: requests,
    # answers, bytes_sent, bytes_received); None for peers that answer in process.
    traffic = None

    @abc.abstractmethod
    def predict(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Predictions (dict of [B, ...] tensors) of the peer task for ``inputs``."""

    def on_step(self, step: int) -> None:
        """Called by the consuming trainer before each of its steps (refresh hook)."""

    @property
    def version(self) -> int:
        """Training step of the peer weights that compute the predictions; -1 if unknown."""
        return -1

    def staleness(self) -> dict[str, float]:
        """How old the peer's weights are: {'steps': ..., 'seconds': ...}."""
        return {}


class InProcessPeer(Peer):
    """A snapshot of another task's model in the same process, refreshed periodically.

    Args:
      task: the peer task (builds the snapshot's network).
      live_model: the peer trainer's model.
      live_step: returns the peer trainer's current step.
      refresh_steps: copy the live weights every this many consumer steps; 0 = always current
        (read the live model, staleness 0).
      refresh_seconds: also refresh when the snapshot is older than this (None = never by time).
      jit_compile: compile the forward pass with XLA (as the consumer's own step, ``TaskTrainer.jit_compile``).

    Between ``hold_answers()`` and ``drop_answers()`` the peer answers a repeated request (the very same input
    tensors) from its last answer instead of running the network again: a ``Collective`` shares one peer among
    the tasks that read it and holds its answers for one round, in which no weights change.
    """

    def __init__(
        self,
        task,
        live_model,
        live_step: Callable[[], int],
        refresh_steps: int = 0,
        refresh_seconds: float | None = None,
        jit_compile: bool = False,
    ):
        if refresh_steps < 0:
            raise ValueError(f"refresh_steps must be >= 0 (0 = always current), got {refresh_steps}.")
        if refresh_seconds is not None and refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be positive or None, got {refresh_seconds}.")
        self.task_name = task.name
        self.input_keys = tuple(task.input_keys)
        self._task = task
        self._live = live_model
        self._live_step = live_step
        self.refresh_steps = int(refresh_steps)
        self.refresh_seconds = refresh_seconds
        self._always_current = self.refresh_steps == 0 and refresh_seconds is None
        self._snapshot = None if self._always_current else task.build_model()
        self._version = -1
        self._refreshed_at = 0.0
        self._last_refresh_step: int | None = None
        model = self._live if self._always_current else self._snapshot
        self._forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile,
                                    reduce_retracing=True)
        self._holding = False
        self._held: tuple[tuple, dict] | None = None  # (the request's tensors, the answer)
        if not self._always_current:
            self.refresh()

    def hold_answers(self) -> None:
        """Answer repeated requests from the last answer until ``drop_answers`` (the weights must not change)."""
        self._holding = True

    def drop_answers(self) -> None:
        """Forget the held answer and compute every request again."""
        self._holding, self._held = False, None

    def refresh(self) -> None:
        """Copy the live weights into the snapshot."""
        if self._always_current:
            return
        self._snapshot.set_weights(self._live.get_weights())
        self._version = int(self._live_step())
        self._refreshed_at = time.monotonic()

    def on_step(self, step: int) -> None:
        if self._always_current:
            return
        due = False
        if self.refresh_steps and (self._last_refresh_step is None or step - self._last_refresh_step >= self.refresh_steps):
            due = True
        if self.refresh_seconds is not None and time.monotonic() - self._refreshed_at >= self.refresh_seconds:
            due = True
        if due:
            if self._last_refresh_step is not None:
                self.refresh()
            self._last_refresh_step = step

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        request = tuple((k, inputs[k]) for k in sorted(inputs))
        if self._holding and self._held is not None and _same_request(self._held[0], request):
            return self._held[1]
        answer = {k: tf.stop_gradient(v) for k, v in self._forward(dict(inputs)).items()}
        if self._holding:
            self._held = (request, answer)
        return answer

    @property
    def version(self) -> int:
        return int(self._live_step()) if self._always_current else self._version

    def staleness(self) -> dict[str, float]:
        if self._always_current:
            return {"steps": 0.0, "seconds": 0.0}
        return {
            "steps": float(int(self._live_step()) - self._version),
            "seconds": time.monotonic() - self._refreshed_at,
        }


def _same_request(a: tuple, b: tuple) -> bool:
    """Whether two requests ((key, tensor) pairs) hold the very same objects (identity, not equal values)."""
    return len(a) == len(b) and all(ka == kb and va is vb for (ka, va), (kb, vb) in zip(a, b))


class GroundTruthPeer(Peer):
    """A peer that answers with the task's true predictions (``Task.ground_truth``) from the labels of the
    mediator batch, e.g. the synthetic world's depth, camera and object motion, or segmentation.

    Checks a relation against a known-good partner: a depth task trained through the photometric relation
    against a ``GroundTruthPeer`` motion task learns depth alone. Its ``input_keys`` are the label keys it
    reads, so the consumer's mediator data must carry them.
    """

    def __init__(self, task):
        if not task.ground_truth_keys:
            raise ValueError(f"Task {task.name!r} ({type(task).__name__}) has no ground_truth_keys: it cannot "
                             "answer as a ground-truth peer.")
        self.task_name = task.name
        self.input_keys = tuple(task.ground_truth_keys)
        self.output_keys = tuple(task.output_keys)
        self._task = task

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        missing = [k for k in self.input_keys if k not in inputs]
        if missing:
            raise KeyError(f"Ground-truth peer {self.task_name!r} needs the labels {missing} in the mediator data.")
        return {k: tf.stop_gradient(tf.convert_to_tensor(v)) for k, v in self._task.ground_truth(inputs).items()}

    @property
    def version(self) -> int:
        return 0

    def staleness(self) -> dict[str, float]:
        return {"steps": 0.0, "seconds": 0.0}
