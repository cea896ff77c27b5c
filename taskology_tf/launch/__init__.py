"""Starting an experiment's tasks as separate processes on one machine: a model server and a trainer per task.

``taskology launch --gin_file table3_consistency --workdir /tmp/run`` runs what ``taskology serve`` and
``taskology train --task T --peer ...`` would run by hand, restarts crashed processes (trainers resume
from their last checkpoint) and collects every task's metrics. See ``launcher.launch_main``.
``--target kubernetes`` writes the same plan as Kubernetes manifests instead (``kubernetes.py``).
"""

__all__ = ["LaunchError", "LaunchPlan", "Launcher", "launch_main", "plan_launch"]


def __getattr__(name):
    # Imported on first use, so that ``python -m taskology_tf.launch.launcher`` runs the module only once.
    if name in __all__:
        from taskology_tf.launch import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
