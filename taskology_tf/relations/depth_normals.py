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
from taskology_tf.core.relation import Relation, weight_overrides
from keras import ops

from taskology_tf.geometry.normals import cosine_distance, normals_from_depth


def reliable_depth_mask(depth, max_depth=None, max_relative_step=None):
    """Where normals computed from ``depth`` mean something: [B, H, W, 1] float 0/1, no gradient.

    depth: [B, H, W, 1] metres. ``max_depth`` drops far pixels (sky, horizon; None = keep);
    ``max_relative_step`` drops pixels whose depth differs from both neighbours along a row or a
    column by more than this fraction (depth discontinuities; None = keep).
    """
    depth = ops.stop_gradient(depth)
    mask = ops.ones_like(depth)
    if max_depth is not None:
        mask = mask * ops.cast(depth <= max_depth, depth.dtype)
    if max_relative_step is not None:
        z = ops.maximum(depth, 1e-6)
        for axis in (1, 2):
            pad = [(0, 0)] * 4
            pad[axis] = (1, 1)
            zp = ops.pad(z, pad, mode="symmetric")  # repeats the border pixel
            if axis == 1:
                prev, nxt = zp[:, :-2], zp[:, 2:]
            else:
                prev, nxt = zp[:, :, :-2], zp[:, :, 2:]
            step = ops.minimum(ops.abs(nxt - z), ops.abs(prev - z)) / z
            mask = mask * ops.cast(step <= max_relative_step, depth.dtype)
    return mask


def depth_normals_loss(
    inputs,
    predictions,
    depth_task="depth",
    normals_task="normals",
    scheme="edge_aware",
    max_depth=None,
    max_relative_step=None,
):
    """Per-example Eq. (6) [B], optionally restricted to pixels where the depth supports normals.

    inputs: needs ``intrinsics`` [B, 3, 3]. predictions: ``{depth_task: {"depth": [B,H,W,1]},
    normals_task: {"normals": [B,H,W,3]}}``. ``max_depth`` (metres) and ``max_relative_step``: see
    ``reliable_depth_mask`` (computed on the predicted depth).
    """
    depth = predictions[depth_task]["depth"]
    from_depth = normals_from_depth(depth, inputs["intrinsics"], scheme=scheme)
    mask = None
    if max_depth is not None or max_relative_step is not None:
        mask = reliable_depth_mask(depth, max_depth, max_relative_step)
    return cosine_distance(from_depth, predictions[normals_task]["normals"], mask=mask)


@register_relation("depth_normals")
@gin.configurable
def depth_normals(
    depth: str = "depth",
    normals: str = "normals",
    weight: float = 1.0,
    depth_weight: float | None = None,
    normals_weight: float | None = None,
    scheme: str = "edge_aware",
    max_depth: float | None = None,
    max_relative_step: float | None = None,
    start_step: int = 0,
    ramp_steps: int = 0,
) -> Relation:
    """The Eq. (6) relation between a depth task and a normals task.

    Args:
      depth, normals: names of the two tasks in the experiment.
      weight: loss weight for both tasks; ``depth_weight``/``normals_weight`` override it per task.
      scheme: finite-difference scheme of normals-from-depth ("edge_aware" or "central").
      max_depth, max_relative_step: ignore far pixels / depth discontinuities of the predicted depth.
      start_step, ramp_steps: warm-up of the relation's weight (see ``Relation``).
    """
    return Relation(
        name="depth_normals",
        reads={depth: ("depth",), normals: ("normals",)},
        input_keys=("intrinsics",),
        loss_fn=functools.partial(
            depth_normals_loss,
            depth_task=depth,
            normals_task=normals,
            scheme=scheme,
            max_depth=max_depth,
            max_relative_step=max_relative_step,
        ),
        weight=weight,
        task_weights=weight_overrides({depth: depth_weight, normals: normals_weight}),
        start_step=start_step,
        ramp_steps=ramp_steps,
    )
