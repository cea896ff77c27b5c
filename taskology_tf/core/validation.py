"""Checks of configuration values that gin passes through unchecked: counts, and scopes nobody enters."""

from __future__ import annotations

import difflib
import logging
import numbers
from typing import Iterable, Mapping

log = logging.getLogger(__name__)


def whole_number(name: str, value, minimum: int | None = 0) -> int:
    """``value`` as an int when it is a whole number (an int, or a float such as 1e3 with no fraction) of at
    least ``minimum``; ValueError naming ``name`` otherwise (5.5 steps, 'five', True)."""
    ok = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def checked_task_copies(copies: Mapping[str, str] | None, tasks: Iterable[str]) -> dict[str, str]:
    """``Experiment.task_copies`` as a plain dict, checked: a mapping of task names (each in ``tasks``) to the
    names of the tasks they are built as (which are not copies themselves); ValueError otherwise."""
    tasks = list(tasks)
    if copies is None:
        return {}
    if not isinstance(copies, Mapping):
        raise ValueError("Experiment.task_copies maps a task name to the task it is built as, e.g. "
                         f"{{'segmentation_teacher': 'segmentation'}}, got {copies!r}.")
    copies = {str(k): str(v) for k, v in copies.items()}
    unknown = sorted(k for k in copies if k not in tasks)
    if unknown:
        raise ValueError(f"Experiment.task_copies names {unknown}, which are not in Experiment.tasks {tasks}; "
                         "add them there too.")
    chained = sorted(k for k, v in copies.items() if v in copies or v == k)
    if chained:
        raise ValueError(f"Experiment.task_copies: {chained} are built as copies of copies (or of themselves); "
                         "name the registered task directly.")
    return copies


def _referenced_scopes(value, found: set[str]) -> None:
    import gin

    if isinstance(value, gin.config.ConfigurableReference):
        found.update(s for s in value.scopes if s)
    elif isinstance(value, dict):
        for v in value.values():
            _referenced_scopes(v, found)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            _referenced_scopes(v, found)


def _built_in_task_scope(selector: str) -> bool:
    """Whether gin's configurable ``selector`` is only ever built inside a task's scope (the trainer, the
    task itself, its serving peers), so that any other scope of a binding for it is a mistake."""
    import gin

    from taskology_tf.core.task import Task

    if selector.rsplit(".", 1)[-1] in ("TaskTrainer", "ServingPeer"):
        return True
    try:
        wrapped = gin.config._REGISTRY.get_match(selector).wrapped  # gin keeps no public lookup
    except (AttributeError, KeyError, ValueError):
        return False
    return isinstance(wrapped, type) and issubclass(wrapped, Task)


def check_gin_scopes(tasks: Iterable[str], relations: Iterable[str] = (), extra: Iterable[str] = ()) -> None:
    """ValueError for a gin binding that gin would silently ignore because of its scope: a binding of a
    trainer, task or serving peer (built only in their task's scope) in a scope that is not a task, e.g.
    ``nromals/TaskTrainer.batch_size``. A warning for other bindings in scopes this experiment never enters
    (e.g. shared overrides of a data source that another experiment uses).

    Known scopes: the experiment's task and relation names (their objects are built inside those scopes),
    the scopes of references in the configuration (``@sim_train/synthetic()``), and ``extra``.
    """
    import gin

    config = gin.config._CONFIG  # (scope, selector) -> {parameter: value}; gin has no public iterator
    tasks, relations = sorted(set(tasks)), sorted(set(relations))
    known = set(tasks) | set(relations) | set(extra)
    for params in config.values():
        for value in params.values():
            _referenced_scopes(value, known)
    from taskology_tf.core.registry import TASKS, _import_builtins

    _import_builtins()
    registered = set(TASKS)  # a task another experiment has: its bindings are shared overrides, not typos
    problems, unused = [], []
    for (scope, selector), params in config.items():
        if not scope or selector.endswith("macro"):
            continue
        parts = scope.split("/")
        short = selector.rsplit(".", 1)[-1]
        binding = f"{scope}/{short}.{sorted(params)[0]}" if params else f"{scope}/{short}"
        if _built_in_task_scope(selector) and not any(s in tasks or s in registered for s in parts):
            close = difflib.get_close_matches(parts[0], tasks, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}/{short}'?" if close else ""
            problems.append(f"'{binding}': {short} is configured per task, and '{parts[0]}' is not a task (the "
                            f"experiment's are {tasks}).{hint}")
            continue
        if any(s not in known for s in parts):
            unused.append(binding)
    if problems:
        raise ValueError("gin binding(s) that would be silently ignored: " + " ".join(problems))
    if unused:
        log.warning("gin binding(s) in scopes this experiment never enters, so ignored: %s.", ", ".join(unused))
