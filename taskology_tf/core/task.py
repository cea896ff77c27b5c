"""A task: its network, its supervised loss, its metrics and its optimizer.

A task never imports another task. It declares the example keys its network
consumes (``input_keys``) and the labels its supervised loss reads
(``label_keys``); the trainer checks datasets against these before training.
Losses are *per example* (shape [B]) so that weighting strategies can act on
single examples; the trainer reduces them.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras


class Task:
    """Base class. Subclasses set ``input_keys``/``label_keys``/``output_keys`` and implement the methods."""

    input_keys: tuple[str, ...] = ("image",)
    label_keys: tuple[str, ...] = ()
    output_keys: tuple[str, ...] = ()
    # Image inputs' height and width must be multiples of this (e.g. 32 for a U-Net that downsamples 5 times);
    # None = any size. Exported serving signatures refuse other sizes with INVALID_ARGUMENT naming it.
    image_size_multiple: int | None = None

    def __init__(self, name: str):
        self.name = name

    # --- network --------------------------------------------------------------------------------
    def build_model(self) -> keras.Model:
        """A Keras model: dict of ``input_keys`` tensors -> dict of ``output_keys`` tensors."""
        raise NotImplementedError

    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The part of an example batch the network consumes.

        A two-frame task (``input_keys`` with ``image_next``) also trains on single labelled frames:
        a batch without ``image_next`` gets the frame itself there (the ``*_next`` outputs are then unused).
        """
        out = {}
        for k in self.input_keys:
            if k == "image_next" and k not in batch and "image" in batch:
                out[k] = batch["image"]
            else:
                out[k] = batch[k]
        return out

    def labelled_keys(self) -> tuple[str, ...]:
        """Example keys the dedicated and evaluation data must have: inputs (``image_next`` may be
        missing, see ``model_inputs``) and labels."""
        inputs = tuple(k for k in self.input_keys if not (k == "image_next" and "image" in self.input_keys))
        return inputs + tuple(self.label_keys)

    def validate_spec(self, element_spec: Mapping[str, Any]) -> None:
        """Raise a clear error if a dataset's (unbatched) element spec does not suit the network."""

    # --- learning -------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, Any], predictions: Mapping[str, Any]) -> Any:
        """Supervised loss per example, [B] float32; 0 for examples whose labels are masked."""
        raise NotImplementedError

    # Kinds of loss terms, for weightings that treat them differently (instance-level task parameters:
    # l / (2 sigma^2) for regression, l / sigma^2 for classification). Term name -> kind; default regression.
    loss_kinds: Mapping[str, str] = {}

    def loss_terms(self, batch: Mapping[str, Any], predictions: Mapping[str, Any]) -> dict[str, Any]:
        """The supervised loss split into named per-example terms (name -> [B] float32), for loss weighting.

        A single-output task has one term named after itself (its ``loss``); a multi-output task (e.g. a
        shared-encoder multi-task network) returns one term per output. ``loss`` must equal their sum
        (or the task's fixed combination of them) so that training without a weighting is unchanged.
        """
        return {self.name: self.loss(batch, predictions)}

    def loss_kind(self, term: str) -> str:
        """'regression' or 'classification' for a term of ``loss_terms``."""
        return self.loss_kinds.get(term, "regression")

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """The task's own optimizer with its published hyper-parameters."""
        return keras.optimizers.Adam(learning_rate=1e-3)

    # --- ground truth (for checking relations against known-good partners) ---------------------
    # Example keys ``ground_truth`` reads: the labels that determine this task's true predictions.
    ground_truth_keys: tuple[str, ...] = ()

    def ground_truth(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The predictions a perfect network of this task would make for ``batch`` (dict of ``output_keys``
        tensors), computed from the labels named in ``ground_truth_keys``. Used by ``GroundTruthPeer``."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot answer with ground truth: it does not implement ground_truth(); "
            f"remove {self.name!r} from Experiment.ground_truth.")

    # --- evaluation -----------------------------------------------------------------------------
    def make_metrics(self):
        """An accumulator with ``update(batch, predictions)`` (numpy dicts) and ``result() -> dict``."""
        raise NotImplementedError

    def summary_images(self, batch: Mapping[str, Any], predictions: Mapping[str, Any]) -> dict[str, Any]:
        """Named image panels for TensorBoard: name -> [B, H, W, 3] float in [0, 1] (numpy)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
