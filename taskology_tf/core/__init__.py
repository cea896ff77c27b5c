"""The framework: tasks, relations, peers, one trainer per task, and the in-process collective.

``task``, ``relation``, ``schedule`` and ``registry`` do not import TensorFlow (task and relation
code stays backend-agnostic); the training classes load lazily on first use.
"""

from taskology_tf.core.registry import register_relation, register_task
from taskology_tf.core.relation import Relation
from taskology_tf.core.schedule import Schedule
from taskology_tf.core.task import Task

_LAZY = {
    "Collective": "taskology_tf.core.collective",
    "InProcessPeer": "taskology_tf.core.peer",
    "Peer": "taskology_tf.core.peer",
    "NonFiniteLossError": "taskology_tf.core.trainer",
    "TaskTrainer": "taskology_tf.core.trainer",
}

__all__ = ["Relation", "Schedule", "Task", "register_relation", "register_task", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskology_tf.core' has no attribute {name!r}")
