"""A relation: a differentiable consistency loss tying the predictions of several tasks.

``loss_fn(inputs, predictions_by_task) -> [B]`` is a pure function of the
mediator batch and the predictions of every task it ties. Which of those
predictions are live (carry gradients) and which are ``stop_gradient`` peer
predictions is the trainer's business, so the same function serves joint,
collective and distributed training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

LossFn = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], Any]


def weight_overrides(weights: Mapping[str, float | None]) -> dict[str, float]:
    """Task name -> weight, keeping only the tasks whose weight is given (not None)."""
    return {task: float(w) for task, w in weights.items() if w is not None}


@dataclasses.dataclass(frozen=True)
class Relation:
    """A consistency loss between ``tasks``.

    Attributes:
      name: relation name (used in summaries).
      reads: task name -> prediction keys the loss reads from that task.
      input_keys: mediator example keys the loss reads (e.g. intrinsics).
      loss_fn: pure per-example loss, [B] float32.
      weight: weight of the loss in every participating task's objective.
      task_weights: optional per-task override of ``weight`` (the loss seen from that task).
      start_step: the relation is off before this step of the consuming trainer (0 = from the start).
      ramp_steps: after ``start_step`` its weight ramps up linearly over this many steps.
    """

    name: str
    reads: Mapping[str, tuple[str, ...]]
    loss_fn: LossFn
    input_keys: tuple[str, ...] = ()
    weight: float = 1.0
    task_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    start_step: int = 0
    ramp_steps: int = 0

    def __post_init__(self):
        if self.start_step < 0 or self.ramp_steps < 0:
            raise ValueError(
                f"Relation {self.name!r}: start_step and ramp_steps must be >= 0, got {self.start_step}, {self.ramp_steps}."
            )

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.reads)

    def weight_for(self, task: str) -> float:
        return float(self.task_weights.get(task, self.weight))

    def scale_at(self, step: int) -> float:
        """Warm-up factor in [0, 1] of the relation's weight at a trainer's ``step``."""
        if step < self.start_step:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - self.start_step + 1) / self.ramp_steps)

    def loss(self, inputs: Mapping[str, Any], predictions_by_task: Mapping[str, Mapping[str, Any]]) -> Any:
        """Per-example consistency loss [B]; checks that every task it reads is present."""
        missing = [t for t in self.reads if t not in predictions_by_task]
        if missing:
            raise KeyError(f"Relation {self.name!r} needs predictions of tasks {missing}.")
        return self.loss_fn(inputs, predictions_by_task)
