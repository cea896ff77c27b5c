"""Learned relation between two separate tasks: a frozen task-transfer network (TTNet, XTasC-Net).

    L = d( TTNet(y_source), y_target )        per example [B]

A TTNet (``models.ttnet``) maps the source task's prediction (e.g. segmentation logits) into
the target task's prediction space (e.g. depth); the relation compares that transferred
prediction with the target task's own prediction:

  kind "regression":      mean over pixels of |TTNet(y_s) - y_t|              (eq. 15)
  kind "classification":  mean over pixels of KL(sg(q) || p) + KL(sg(p) || q)  (symmetric KL, eq. 6)
                          with p = softmax(y_t), q = softmax(TTNet(y_s))

Both are 0 exactly when the two predictions agree and positive otherwise. The trainer of the
target task sees its live y_t and a ``stop_gradient`` peer y_s: the gradient pulls y_t towards
the transferred prediction (in the classification case, the cross-entropy of p against the
soft target q). The trainer of the source task sees its live y_s: the gradient flows through the
frozen TTNet into y_s (eq. 13/15's direction, the target held constant). The held-constant
``stop_gradient``s inside the symmetric KL make each direction train only its live side.

The TTNet is *frozen*: its weights are loaded from a file, built by the factory outside every
task's model, never in any trainer's ``trainable_variables``, and read behind ``stop_gradient``
(``frozen_call``), so no task updates it and no gradient is ever computed for it. Train
it beforehand on labelled pairs with ``models.ttnet.train_ttnet`` (inputs: ``one_hot_labels`` of
segmentation or depth labels; save with ``save_weights("x.weights.h5")``), or take a TTNet of a
trained XTasC model (``models.xtasc.ttnets(model)[...].save_weights(...)``), which has seen
predictions rather than labels.

Experiments refer to relations by registered name, so a second transfer relation in the same
experiment (e.g. the other direction) needs its own name:
``register_relation("task_transfer_back")(task_transfer)`` in a module you import.
"""

from __future__ import annotations

import functools
from typing import Sequence

import gin
import keras
from keras import ops

from taskology_tf.core.registry import register_relation
from taskology_tf.core.relation import Relation, weight_overrides
from taskology_tf.models.ttnet import KINDS, PAPER_WIDTHS, build_ttnet, ttnet_keys


def symmetric_kl(logits_a, logits_b):
    """Per-pixel KL(sg(q_a) || q_b) + KL(sg(q_b) || q_a) of softmax distributions; [B, H, W] float32.

    Each KL holds its first argument constant, so the gradient reaching ``logits_b`` is that of the
    cross-entropy against the soft target q_a, and vice versa.
    """
    log_a = ops.log_softmax(ops.cast(logits_a, "float32"), axis=-1)
    log_b = ops.log_softmax(ops.cast(logits_b, "float32"), axis=-1)
    held_a, held_b = ops.stop_gradient(log_a), ops.stop_gradient(log_b)
    kl_ab = ops.sum(ops.exp(held_a) * (held_a - log_b), axis=-1)
    kl_ba = ops.sum(ops.exp(held_b) * (held_b - log_a), axis=-1)
    return kl_ab + kl_ba


def transfer_consistency(transferred, own, kind: str):
    """Per-example mean discrepancy [B] between a transferred and an own prediction [B, H, W, C].

    kind: "regression" (L1) or "classification" (symmetric KL of the softmax of both logits).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if tuple(transferred.shape[1:]) != tuple(own.shape[1:]) and None not in transferred.shape[1:] + own.shape[1:]:
        raise ValueError(
            f"The transferred prediction {tuple(transferred.shape)} and the target task's prediction "
            f"{tuple(own.shape)} must have the same [H, W, C]; check the TTNet's output channels."
        )
    if kind == "regression":
        per_pixel = ops.mean(ops.abs(ops.cast(transferred, "float32") - ops.cast(own, "float32")), axis=-1)
    else:
        per_pixel = symmetric_kl(transferred, own)
    return ops.mean(per_pixel, axis=(1, 2))


def task_transfer_loss(inputs, predictions, *, ttnet: keras.Model, source: str, source_key: str,
                       target: str, target_key: str, kind: str):
    """The relation's loss [B]: ``transfer_consistency(ttnet(y_source), y_target, kind)``.

    predictions: ``{source: {source_key: [B, H, W, C_in]}, target: {target_key: [B, H, W, C_out]}}``.
    """
    del inputs  # the relation reads predictions only
    in_key, out_key = ttnet_keys(ttnet)
    src = predictions[source][source_key]
    expected = ttnet.input[in_key].shape[-1]
    if src.shape[-1] is not None and expected is not None and src.shape[-1] != expected:
        raise ValueError(
            f"Relation task_transfer: task {source!r} output {source_key!r} has {src.shape[-1]} channels, "
            f"the TTNet {ttnet.name!r} expects {expected}."
        )
    transferred = frozen_call(ttnet, {in_key: src})[out_key]
    return transfer_consistency(transferred, predictions[target][target_key], kind)


def frozen_call(model: keras.Model, inputs):
    """``model(inputs, training=False)`` with every weight behind ``stop_gradient``: a constant function
    of its inputs for any tape or backend (``trainable = False`` alone keeps weights out of optimizers,
    but a TF tape still watches the underlying variables)."""
    held = lambda variables: [ops.stop_gradient(v.value) for v in variables]  # noqa: E731
    outputs, _ = model.stateless_call(held(model.trainable_variables), held(model.non_trainable_variables),
                                      inputs, training=False)
    return outputs


def load_ttnet(
    path: str,
    in_channels: int | None = None,
    out_channels: int | None = None,
    **build_kwargs,
) -> keras.Model:
    """A frozen TTNet from ``path``: a whole ``.keras`` model, or ``.weights.h5`` weights of a
    ``build_ttnet(in_channels, out_channels, **build_kwargs)`` network."""
    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)
    elif path.endswith(".weights.h5"):
        if not in_channels or not out_channels:
            raise ValueError(f"Loading TTNet weights {path!r} needs in_channels and out_channels "
                             f"(got {in_channels}, {out_channels}) to rebuild the network.")
        model = build_ttnet(in_channels, out_channels, **build_kwargs)
        model.load_weights(path)
    else:
        raise ValueError(f"TTNet path must end with '.keras' (whole model) or '.weights.h5' (weights), got {path!r}.")
    model.trainable = False
    return model


@register_relation("task_transfer")
@gin.configurable
def task_transfer(
    source: str = "segmentation",
    target: str = "depth",
    source_key: str = "segmentation_logits",
    target_key: str = "depth",
    kind: str = "regression",
    ttnet_path: str | None = None,
    ttnet: keras.Model | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    widths: Sequence[int] = PAPER_WIDTHS,
    input_transform: str = "softmax",
    input_scale: float = 1.0,
    output_activation: str | None = None,
    weight: float = 1.0,
    source_weight: float | None = None,
    target_weight: float | None = None,
    start_step: int = 0,
    ramp_steps: int = 0,
    name: str = "task_transfer",
) -> Relation:
    """A learned relation: the frozen TTNet maps ``source``'s ``source_key`` to ``target``'s ``target_key``.

    Args:
      source, target: task names (the target's prediction is compared with the transferred one).
      source_key, target_key: prediction keys read from each task.
      kind: "regression" (L1; e.g. depth) or "classification" (symmetric KL of logits; segmentation).
      ttnet_path: ``.keras`` model or ``.weights.h5`` weights (then give ``in_channels``,
        ``out_channels`` and the build options below, as when it was trained).
      ttnet: an already built TTNet instead of a path (programmatic use); it is frozen.
      in_channels, out_channels, widths, input_transform, input_scale, output_activation: see
        ``models.ttnet.build_ttnet`` (input_transform "softmax" for a logits source, "none" for depth).
      weight: weight for both tasks; ``source_weight``/``target_weight`` override it per task.
      start_step, ramp_steps: warm-up of the relation's weight (see ``Relation``).
      name: relation name (summaries, trainer terms).
    """
    if kind not in KINDS:
        raise ValueError(f"task_transfer.kind must be one of {KINDS}, got {kind!r}.")
    if source == target:
        raise ValueError(f"task_transfer ties two separate tasks; got source = target = {source!r}.")
    if (ttnet is None) == (ttnet_path is None):
        raise ValueError("task_transfer needs exactly one of ttnet_path (a trained TTNet file) and ttnet (a model).")
    if ttnet is None:
        ttnet = load_ttnet(ttnet_path, in_channels, out_channels, widths=widths, input_transform=input_transform,
                           input_scale=input_scale, output_activation=output_activation)
    ttnet.trainable = False
    ttnet_keys(ttnet)  # checks it has one named input and one named output
    return Relation(
        name=name,
        reads={source: (source_key,), target: (target_key,)},
        loss_fn=functools.partial(task_transfer_loss, ttnet=ttnet, source=source, source_key=source_key,
                                  target=target, target_key=target_key, kind=kind),
        weight=weight,
        task_weights=weight_overrides({source: source_weight, target: target_weight}),
        start_step=start_step,
        ramp_steps=ramp_steps,
    )
