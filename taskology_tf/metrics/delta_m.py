"""Delta_m: the mean relative improvement of a multi-task model over a baseline (XTasC eq. 17), in percent.

XTasC (Sec. V-B, following Vandenhende et al. and Maninis et al.) defines, for a model m,
a baseline b (the single-task networks) and the evaluation metrics M::

    Delta_m = 1/|M| * sum_i (-1)^{l_i} (M_{m,i} - M_{b,i}) / M_{b,i}

with ``l_i = 1`` when a lower value of metric i is better and 0 otherwise; reported in percent
(x 100), so a positive Delta_m means better on average. The paper's M for Cityscapes and NYUv2
is mIoU, pixel accuracy (higher better), Abs Err and Rel Err (lower better).

Results are dicts metric -> value. ``load_results`` reads them from JSON files: a flat
``{"miou": 66.5, ...}``, or the project's nested ``{"step": ..., "metrics": {"segmentation":
{"miou": ...}, "depth": {...}}}``, flattened to ``"segmentation/miou"``. A metric's direction
is looked up by its name, or by the part after the last "/", in ``DIRECTIONS`` (extend it with
``directions``). The ratio is scale-free, so the metrics may be fractions or percentages, as
long as model and baseline use the same.
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

HIGHER, LOWER = "higher", "lower"

# Known metric names -> whether higher or lower values are better.
DIRECTIONS: dict[str, str] = {
    # segmentation
    "miou": HIGHER, "mean_iou": HIGHER, "miou_movable": HIGHER, "pixel_accuracy": HIGHER, "pix_acc": HIGHER,
    # depth (XTasC / MTAN names, and the Eigen et al. set of taskology_tf.metrics.depth)
    "abs_err": LOWER, "rel_err": LOWER, "abs_rel": LOWER, "sq_rel": LOWER, "rmse": LOWER, "rmse_log": LOWER,
    "a1": HIGHER, "a2": HIGHER, "a3": HIGHER,
    # surface normals (angular errors in degrees, shares within thresholds)
    "mean": LOWER, "median": LOWER, "within_11.25": HIGHER, "within_22.5": HIGHER, "within_30": HIGHER,
}


def metric_direction(name: str, directions: Mapping[str, str] | None = None) -> str:
    """``"higher"`` or ``"lower"`` (which values are better) for ``name`` or its last "/"-part; ValueError if unknown."""
    table = dict(DIRECTIONS)
    table.update(directions or {})
    for key in (name, name.rsplit("/", 1)[-1]):
        if key in table:
            direction = table[key]
            if direction not in (HIGHER, LOWER):
                raise ValueError(f"direction of {key!r} must be {HIGHER!r} or {LOWER!r}, got {direction!r}.")
            return direction
        if key.startswith("iou_"):  # per-class IoU of taskology_tf.metrics.segmentation
            return HIGHER
    raise ValueError(f"unknown direction for metric {name!r}: pass directions={{{name!r}: 'higher' or 'lower'}} "
                     f"(known: {sorted(DIRECTIONS)}).")


def _value(results: Mapping[str, float], name: str, which: str) -> float:
    try:
        value = float(results[name])
    except KeyError:
        raise ValueError(f"metric {name!r} is missing from the {which} results, which have {sorted(results)}.") from None
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} of the {which} results is not a number: {results[name]!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r} of the {which} results is not finite: {value!r}.")
    return value


def delta_m_terms(model: Mapping[str, float], baseline: Mapping[str, float], metrics: Sequence[str] | None = None,
                  directions: Mapping[str, str] | None = None) -> dict[str, float]:
    """Per metric, ``(-1)^l (model - baseline) / baseline`` in percent (positive = model better).

    ``metrics`` default: every metric of ``baseline`` (each must then be in ``model`` too).
    """
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a list of metric names, not a string ({metrics!r}).")
    names = list(baseline) if metrics is None else list(metrics)
    if not names:
        raise ValueError("no metrics to compare: the baseline results are empty and no metrics were given.")
    missing = [n for n in names if n not in model]
    if missing:
        raise ValueError(f"metrics {missing} are missing from the model results, which have {sorted(model)}.")
    terms = {}
    for name in names:
        sign = 1.0 if metric_direction(name, directions) == HIGHER else -1.0
        m, b = _value(model, name, "model"), _value(baseline, name, "baseline")
        if b == 0.0:
            raise ValueError(f"baseline value of {name!r} is 0: the relative change is undefined; leave it out of "
                             "metrics.")
        terms[name] = 100.0 * sign * (m - b) / abs(b)
    return terms


def delta_m(model: Mapping[str, float], baseline: Mapping[str, float], metrics: Sequence[str] | None = None,
            directions: Mapping[str, str] | None = None) -> float:
    """Delta_m in percent: the mean of ``delta_m_terms`` (XTasC eq. 17)."""
    terms = delta_m_terms(model, baseline, metrics, directions)
    return sum(terms.values()) / len(terms)


def flatten_results(results: Mapping, prefix: str = "") -> dict[str, float]:
    """Nested dicts -> {"a/b": value}; a top-level "metrics" dict, when present, is the results (other keys dropped)."""
    if not prefix and isinstance(results.get("metrics"), Mapping):
        results = results["metrics"]
    out: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_results(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def load_results(path: str) -> dict[str, float]:
    """Metric -> value from a results JSON file (flat, or nested as ``flatten_results`` reads it)."""
    with open(path) as f:
        try:
            payload = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"{path}: expected a JSON object of metric -> value, got {type(payload).__name__}.")
    results = flatten_results(payload)
    if not results:
        raise ValueError(f"{path}: no numeric metrics found.")
    return results


def delta_m_from_files(model_path: str, baseline_path: str, metrics: Sequence[str] | None = None,
                       directions: Mapping[str, str] | None = None) -> dict:
    """{"delta_m": percent, "terms": per-metric percent, "metrics", "model", "baseline"} from two results files.

    With ``metrics`` None, every metric of the baseline file counts (so give ``metrics`` for nested
    project files, e.g. ["segmentation/miou", "segmentation/pixel_accuracy", "depth/abs_rel"]).
    """
    model, baseline = load_results(model_path), load_results(baseline_path)
    terms = delta_m_terms(model, baseline, metrics, directions)
    return {
        "delta_m": sum(terms.values()) / len(terms),
        "terms": terms,
        "metrics": list(terms),
        "model": {k: model[k] for k in terms},
        "baseline": {k: baseline[k] for k in terms},
    }
