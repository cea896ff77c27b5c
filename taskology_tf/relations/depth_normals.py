"""Depth <-> surface normals consistency (Sec. 3.2.3, Eq. 6).

    L = cosine_distance(n_d, n_p)

with n_d the normals computed analytically from the predicted depth (finite
differences of back-projected points, ``geometry.normals_from_depth``) and n_p
the predicted normals. The depth task receives the gradient through n_d, the
normals task through n_p.
"""

from __future__ import annotations

import functools

import gin

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation
from taskology_tf.geometry.normals import cosine_distance, normals_from_depth


def depth_normals_loss(inputs, predictions, depth_task="depth", normals_task="normals", scheme="edge_aware"):
    """Per-example Eq. (6) [B].

    inputs: needs ``intrinsics`` [B, 3, 3]. predictions: ``{depth_task: {"depth": [B,H,W,1]},
    normals_task: {"normals": [B,H,W,3]}}``.
    """
    from_depth = normals_from_depth(predictions[depth_task]["depth"], inputs["intrinsics"], scheme=scheme)
    return cosine_distance(from_depth, predictions[normals_task]["normals"])


@register_relation("depth_normals")
@gin.configurable
def depth_normals(
    depth: str = "depth",
    normals: str = "normals",
    weight: float = 1.0,
    depth_weight: float | None = None,
    normals_weight: float | None = None,
    scheme: str = "edge_aware",
) -> Relation:
    """The Eq. (6) relation between a depth task and a normals task.

    Args:
      depth, normals: names of the two tasks in the experiment.
      weight: loss weight for both tasks; ``depth_weight``/``normals_weight`` override it per task.
      scheme: finite-difference scheme of normals-from-depth ("edge_aware" or "central").
    """
    task_weights = {}
    if depth_weight is not None:
        task_weights[depth] = depth_weight
    if normals_weight is not None:
        task_weights[normals] = normals_weight
    return Relation(
        name="depth_normals",
        reads={depth: ("depth",), normals: ("normals",)},
        input_keys=("intrinsics",),
        loss_fn=functools.partial(depth_normals_loss, depth_task=depth, normals_task=normals, scheme=scheme),
        weight=weight,
        task_weights=task_weights,
    )
