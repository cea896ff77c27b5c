"""taskology_tf: collective training of separate task networks through consistency losses.

Heavy modules (TensorFlow) load lazily, so ``import taskology_tf.geometry`` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name):
    lazy = {"register_task", "register_relation", "Task", "Relation", "Peer", "TaskTrainer", "Collective", "Schedule"}
    if name in lazy:
        from taskology_tf import core

        return getattr(core, name)
    raise AttributeError(f"module 'taskology_tf' has no attribute {name!r}")
