"""Which data a trainer step draws: dedicated (supervised), mediator (relations), or both."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A repeating cycle of ``dedicated_steps`` supervised steps and ``mediator_steps`` relation steps.

    ``together=True`` draws both kinds in every step (one tape over both losses).
    When a trainer has only one kind of data, every step uses that kind.
    """

    dedicated_steps: int = 1
    mediator_steps: int = 1
    together: bool = True

    def __post_init__(self):
        if self.dedicated_steps < 0 or self.mediator_steps < 0 or self.dedicated_steps + self.mediator_steps == 0:
            raise ValueError(
                f"Schedule needs non-negative step counts with a positive sum, got dedicated={self.dedicated_steps}, "
                f"mediator={self.mediator_steps}."
            )

    @classmethod
    def parse(cls, spec: "str | Schedule") -> "Schedule":
        """``'both'``, ``'alternate'`` or ``'ratio:D:M'`` (D dedicated steps then M mediator steps)."""
        if isinstance(spec, Schedule):
            return spec
        text = str(spec).strip().lower()
        if text == "both":
            return cls(1, 1, together=True)
        if text == "alternate":
            return cls(1, 1, together=False)
        if text.startswith("ratio:"):
            parts = text.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                return cls(int(parts[1]), int(parts[2]), together=False)
        raise ValueError(f"Unknown schedule {spec!r}; use 'both', 'alternate' or 'ratio:D:M' (e.g. 'ratio:3:1').")

    def draws(self, step: int, has_dedicated: bool, has_mediator: bool) -> tuple[bool, bool]:
        """(use dedicated batch, use mediator batch) at ``step``."""
        if not has_dedicated or not has_mediator:
            return has_dedicated, has_mediator
        if self.together:
            return True, True
        if self.mediator_steps == 0:
            return True, False
        if self.dedicated_steps == 0:
            return False, True
        phase = step % (self.dedicated_steps + self.mediator_steps)
        dedicated = phase < self.dedicated_steps
        return dedicated, not dedicated
