"""Name -> factory tables for tasks and relations.

A user adds a task or relation from their own module by decorating it with
``register_task``/``register_relation`` and importing that module (``--import
my_module`` on the command line, or an ``import my_module`` line in a gin file).
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")

TASKS: dict[str, Callable] = {}
RELATIONS: dict[str, Callable] = {}


class UnknownNameError(KeyError):
    """A task or relation name that nobody registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


def _register(table: dict[str, Callable], kind: str, name: str) -> Callable[[T], T]:
    if not name or not isinstance(name, str):
        raise ValueError(f"A {kind} needs a non-empty string name, got {name!r}.")

    def decorator(factory: T) -> T:
        existing = table.get(name)
        if existing is not None and existing is not factory and (
            getattr(existing, "__qualname__", None) != getattr(factory, "__qualname__", None)
        ):
            raise ValueError(f"{kind} name {name!r} is already registered by {existing!r}; pick another name.")
        table[name] = factory
        return factory

    return decorator


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: make a ``Task`` subclass available as ``name`` in experiments."""
    return _register(TASKS, "task", name)


def register_relation(name: str) -> Callable[[T], T]:
    """Decorator: make a ``Relation`` factory available as ``name`` in experiments."""
    return _register(RELATIONS, "relation", name)


def _lookup(table: dict[str, Callable], kind: str, name: str) -> Callable:
    _import_builtins()
    if name not in table:
        known = ", ".join(sorted(table)) or "(none)"
        raise UnknownNameError(
            f"Unknown {kind} {name!r}. Known {kind}s: {known}. To use your own, decorate it with "
            f"taskology_tf.register_{kind}({name!r}) and import its module (--import your.module, "
            f"or an 'import your.module' line in the gin file)."
        )
    return table[name]


def task_factory(name: str) -> Callable:
    return _lookup(TASKS, "task", name)


def relation_factory(name: str) -> Callable:
    return _lookup(RELATIONS, "relation", name)


def _import_builtins() -> None:
    """Import the built-in tasks and relations so that they register themselves."""
    import taskology_tf.relations  # noqa: F401
    import taskology_tf.tasks  # noqa: F401
