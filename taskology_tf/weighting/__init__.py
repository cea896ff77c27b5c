"""Loss weighting strategies, chosen by name: ``make_weighting('dwa', terms=[...], temperature=2.0)``.

Task level (one weight per loss term): 'equal', 'uncertainty', 'dwa', 'gls', 'gradnorm' (``task_level``).
Instance level (one learned log sigma^2 per training example and term): 'instance' (``instance_level``).
All implement ``task_level.Weighting``; ``TaskTrainer(weighting=...)`` takes a name or an object.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from taskology_tf.weighting.instance_level import InstanceParameters
from taskology_tf.weighting.task_level import (
    DynamicWeightAverage,
    EqualWeighting,
    GeometricLossStrategy,
    GradNorm,
    UncertaintyWeighting,
    Weighting,
)

WEIGHTINGS = {
    "equal": EqualWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gls": GeometricLossStrategy,
    "gradnorm": GradNorm,
    "instance": InstanceParameters,
}


def make_weighting(name: str, terms: Sequence[str], kinds: Mapping[str, str] | None = None, **kwargs) -> Weighting:
    """The strategy ``name`` (a key of ``WEIGHTINGS``) for loss terms ``terms`` of kinds ``kinds``.

    Other keyword arguments go to the strategy's class; unset ones take their gin bindings
    (e.g. ``InstanceParameters.learning_rate = 4.0``), then their defaults.
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}.")
    return WEIGHTINGS[name](terms, kinds, **kwargs)


__all__ = ["WEIGHTINGS", "make_weighting", "Weighting", "EqualWeighting", "UncertaintyWeighting",
           "DynamicWeightAverage", "GeometricLossStrategy", "GradNorm", "InstanceParameters"]
