"""Task-level loss weighting: one weight per loss term, shared by every example.

Strategies (the baselines of the instance-level task parameters paper, Sec. 4, and of XTasC, App. C):

- ``EqualWeighting``: the plain sum of the terms.
- ``UncertaintyWeighting`` (Kendall et al. 2018): a learned log-variance s_k per term;
  sum_k c_k exp(-s_k) L_k + s_k / 2 with c = 1/2 for regression and 1 for classification terms.
- ``DynamicWeightAverage`` (DWA, Liu et al. 2019): w_k = n softmax_k(r_k / T), r_k = L_k(e-1) / L_k(e-2)
  from the mean losses of the last two epochs (w = 1 for the first two epochs).
- ``GeometricLossStrategy`` (GLS, Chennupati et al. 2019): (prod_k L_k)^(1/n).
- ``GradNorm`` (Chen et al. 2018): weights trained so that the gradient norms of the weighted terms on a
  shared layer follow (relative inverse training rate)^alpha; renormalised to sum to n.

All share one small interface, ``Weighting``: built with the names of the terms (and their kinds), a
``combine`` of named per-example losses into one scalar, and hooks for whatever state the method keeps.
L_k above is the batch mean of term k. Math lives in small pure functions (``keras.ops``); the classes only
hold state (``tf.Variable``s, checkpointable with ``tf.train.Checkpoint``) and call them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gin
import keras
import numpy as np
import tensorflow as tf
from keras import ops

KINDS = ("regression", "classification")


# --- pure functions ---------------------------------------------------------------------------------
def kind_scales(kinds: Sequence[str]) -> np.ndarray:
    """Likelihood scale c of each term: 1/2 for regression (Gaussian), 1 for classification (scaled softmax)."""
    return np.asarray([0.5 if k == "regression" else 1.0 for k in kinds], np.float32)


def uncertainty_loss(losses, log_variances, scales):
    """Kendall et al.'s homoscedastic-uncertainty loss, a scalar.

    losses: [n] mean loss per term; log_variances: [n] s = log sigma^2; scales: [n] c (see ``kind_scales``).
    Returns sum_k c_k exp(-s_k) L_k + s_k / 2 (= L/(2 sigma^2) + log sigma for regression terms).
    """
    return ops.sum(scales * ops.exp(-log_variances) * losses + 0.5 * log_variances)


def dwa_weights(previous, before_previous, temperature: float):
    """DWA weights [n] from the mean losses of the last two epochs ([n] each): n softmax(r / T), r = prev / before."""
    ratios = previous / ops.maximum(before_previous, 1e-12)
    n = ops.cast(ops.shape(previous)[0], "float32")
    return n * ops.softmax(ratios / temperature)


def geometric_mean(losses, eps: float = 1e-12):
    """GLS total loss: the geometric mean (prod_k L_k)^(1/n) of the [n] term losses (clamped at ``eps``)."""
    return ops.exp(ops.mean(ops.log(ops.maximum(losses, eps))))


def gradnorm_weight_gradient(weights, grad_norms, losses, initial_losses, alpha: float):
    """Gradient of the GradNorm loss with respect to the weights, and the loss itself.

    weights: [n] w_k; grad_norms: [n] ||grad_W L_k|| of the *unweighted* term losses on the shared weights W;
    losses, initial_losses: [n] L_k(t) and L_k(0); alpha: restoring-force strength.
    With G_k = w_k ||grad_W L_k||, r_k = (L_k(t)/L_k(0)) / mean_j(L_j(t)/L_j(0)) and the target
    mean_j(G_j) r_k^alpha held constant (as in the paper), the loss is sum_k |G_k - target_k| and its
    gradient sign(G_k - target_k) ||grad_W L_k||. Returns (gradient [n], loss scalar).
    """
    g = weights * grad_norms
    ratios = losses / ops.maximum(initial_losses, 1e-12)
    r = ratios / ops.maximum(ops.mean(ratios), 1e-12)
    target = ops.stop_gradient(ops.mean(g) * r**alpha)
    return ops.sign(g - target) * grad_norms, ops.sum(ops.abs(g - target))


def renormalise(weights, total: float, floor: float = 1e-3):
    """Weights clipped at ``floor`` (they must stay positive) and rescaled to sum to ``total``."""
    w = ops.maximum(weights, floor)
    return w * (total / ops.sum(w))


def batch_mean(loss):
    """Mean over the batch (and any trailing axes) of a per-example loss [B, ...]; a scalar stays as it is."""
    x = tf.cast(loss, tf.float32)
    return x if x.shape.rank == 0 else tf.reduce_mean(x)


# --- the interface ----------------------------------------------------------------------------------
class Weighting(tf.Module):
    """Combines named per-example loss terms into one scalar loss.

    Args:
      terms: names of the loss terms (e.g. a task's ``loss_terms`` keys); their order is the order of the
        strategy's weight vectors.
      kinds: term -> 'regression' or 'classification' (default regression).
      epoch_steps: training steps per epoch, for strategies that look at epoch losses (DWA) or act per epoch
        (instance-parameter snapshots); None = unknown (a ``TaskTrainer`` sets it from its dataset's size).

    A training loop uses it as follows (``TaskTrainer`` does this):
      1. inside the gradient tape: ``total, weights = w.combine(losses, ids=batch['id'])``;
      2. gradients of the total loss for the model *and* ``w.trainable_variables`` in one ``tape.gradient``,
         plus ``extra = w.update_inputs(tape, term_means, model)`` (needs ``persistent_tape`` when not None);
      3. ``w.apply_gradients(grads_of_trainable_variables, extra)``: the strategy updates its own state;
      4. after the step, ``w.after_step(step, mean_losses)`` (floats); every ``epoch_steps`` steps it calls
         ``end_epoch(epoch mean losses)``.
    """

    uses_ids = False  # combine() needs the examples' ``id`` (instance-level parameters)
    persistent_tape = False  # update_inputs() differentiates on the tape again (GradNorm)

    def __init__(self, terms: Sequence[str], kinds: Mapping[str, str] | None = None, epoch_steps: int | None = None):
        super().__init__(name=type(self).__name__)
        terms = tuple(terms)
        if not terms or len(set(terms)) != len(terms) or not all(isinstance(t, str) for t in terms):
            raise ValueError(f"terms must be a non-empty sequence of distinct names, got {list(terms)}.")
        kinds = dict(kinds or {})
        unknown = sorted(set(kinds) - set(terms))
        if unknown:
            raise ValueError(f"kinds names terms {unknown} that are not among terms={list(terms)}.")
        for term, kind in kinds.items():
            if kind not in KINDS:
                raise ValueError(f"kinds[{term!r}] must be one of {KINDS}, got {kind!r}.")
        if epoch_steps is not None and int(epoch_steps) <= 0:
            raise ValueError(f"epoch_steps must be positive or None, got {epoch_steps}.")
        self.terms = terms
        self.kinds = tuple(kinds.get(t, "regression") for t in terms)
        self.epoch_steps = None if epoch_steps is None else int(epoch_steps)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._epoch_sums = tf.Variable(tf.zeros([len(terms)], tf.float64), trainable=False, name="epoch_sums")
        self._epoch_counts = tf.Variable(tf.zeros([len(terms)], tf.int64), trainable=False, name="epoch_counts")

    @property
    def num_terms(self) -> int:
        return len(self.terms)

    @property
    def trainable_variables(self) -> list:
        """Variables trained on the gradient of the combined loss (the strategy applies it itself)."""
        return []

    def combine(self, losses: Mapping[str, Any], *, ids=None) -> tuple[Any, dict[str, Any]]:
        """losses: term -> [B] per-example loss (or a scalar); ids: [B] int64 example ids (instance-level only).

        Returns (total loss, a scalar; term -> its current weight, a scalar).
        """
        raise NotImplementedError

    def update_inputs(self, tape: tf.GradientTape, term_means: Mapping[str, Any], model: keras.Model) -> Any:
        """Extra tensors ``apply_gradients`` needs, computed while the tape is alive (None: nothing)."""
        return None

    def apply_gradients(self, grads: Sequence[Any], update_inputs: Any = None) -> None:
        """Update the strategy's state: ``grads`` align with ``trainable_variables`` (None where absent)."""

    def after_step(self, step: int, mean_losses: Mapping[str, float]) -> None:
        """Record one step's mean term losses (floats); at the end of an epoch call ``end_epoch``."""
        values = [mean_losses.get(t) for t in self.terms]
        present = np.asarray([v is not None for v in values])
        self._epoch_sums.assign_add(np.asarray([v if v is not None else 0.0 for v in values], np.float64))
        self._epoch_counts.assign_add(present.astype(np.int64))
        if self.epoch_steps and step % self.epoch_steps == 0:
            counts = self._epoch_counts.numpy()
            sums = self._epoch_sums.numpy()
            if counts.all():
                self.end_epoch({t: float(s / c) for t, s, c in zip(self.terms, sums, counts)})
            self._epoch_sums.assign(tf.zeros_like(self._epoch_sums))
            self._epoch_counts.assign(tf.zeros_like(self._epoch_counts))

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """An epoch ended with these mean term losses."""
        self.epoch.assign_add(1)

    # --- helpers for subclasses -----------------------------------------------------------------
    def _check_terms(self, losses: Mapping[str, Any]) -> None:
        if set(losses) != set(self.terms):
            raise ValueError(
                f"{type(self).__name__} was built for loss terms {list(self.terms)} but got terms {sorted(losses)}; "
                "build it with the task's loss_terms names."
            )

    def _means(self, losses: Mapping[str, Any]):
        """[n] batch means of the terms, in ``terms`` order."""
        self._check_terms(losses)
        return tf.stack([batch_mean(losses[t]) for t in self.terms])

    def _weights_dict(self, weights) -> dict[str, Any]:
        return {t: weights[i] for i, t in enumerate(self.terms)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(terms={list(self.terms)})"


@gin.configurable(denylist=["terms", "kinds"])
class EqualWeighting(Weighting):
    """The plain sum of the term losses (every weight 1)."""

    def combine(self, losses, *, ids=None):
        means = self._means(losses)
        return tf.reduce_sum(means), self._weights_dict(tf.ones_like(means))


@gin.configurable(denylist=["terms", "kinds"])
class UncertaintyWeighting(Weighting):
    """Kendall et al.'s homoscedastic uncertainty: a learned log-variance per term, trained with its own optimizer.

    Args:
      learning_rate: of the log-variances' Adam optimizer.
      initial_log_variance: start value of every s_k.
    """

    def __init__(self, terms, kinds=None, learning_rate: float = 1e-3, initial_log_variance: float = 0.0,
                 epoch_steps=None):
        super().__init__(terms, kinds, epoch_steps)
        self.log_variances = keras.Variable(np.full([self.num_terms], initial_log_variance, np.float32),
                                            name="log_variances")
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build([self.log_variances])
        self._scales = kind_scales(self.kinds)

    @property
    def trainable_variables(self):
        return [self.log_variances]

    def combine(self, losses, *, ids=None):
        means = self._means(losses)
        s = tf.convert_to_tensor(self.log_variances)
        total = uncertainty_loss(means, s, self._scales)
        return total, self._weights_dict(self._scales * tf.exp(-s))

    def apply_gradients(self, grads, update_inputs=None):
        if grads and grads[0] is not None:
            self.optimizer.apply(list(grads), self.trainable_variables)


@gin.configurable(denylist=["terms", "kinds"])
class DynamicWeightAverage(Weighting):
    """DWA: weights from the rate of change of each term's epoch-mean loss.

    Args:
      temperature: softmax temperature T (the paper's default 2; larger = closer to equal weights).
      epoch_steps: steps per epoch (see ``Weighting``).
    """

    def __init__(self, terms, kinds=None, temperature: float = 2.0, epoch_steps=None):
        super().__init__(terms, kinds, epoch_steps)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = float(temperature)
        self.history = tf.Variable(tf.zeros([2, self.num_terms]), trainable=False, name="history")  # [L(e-2), L(e-1)]
        self.weights = tf.Variable(tf.ones([self.num_terms]), trainable=False, name="weights")

    def combine(self, losses, *, ids=None):
        means = self._means(losses)
        w = tf.convert_to_tensor(self.weights)
        return tf.reduce_sum(w * means), self._weights_dict(w)

    def end_epoch(self, mean_losses):
        latest = np.asarray([mean_losses[t] for t in self.terms], np.float32)
        self.history.assign(tf.stack([self.history[1], latest]))
        super().end_epoch(mean_losses)
        if int(self.epoch.numpy()) >= 2:
            self.weights.assign(dwa_weights(self.history[1], self.history[0], self.temperature))


@gin.configurable(denylist=["terms", "kinds"])
class GeometricLossStrategy(Weighting):
    """GLS: the geometric mean of the term losses. Its implied weight of term k is GM / (n L_k)."""

    def combine(self, losses, *, ids=None):
        means = self._means(losses)
        total = geometric_mean(means)
        weights = tf.stop_gradient(total / (self.num_terms * tf.maximum(means, 1e-12)))
        return total, self._weights_dict(weights)


@gin.configurable(denylist=["terms", "kinds"])
class GradNorm(Weighting):
    """GradNorm: term weights trained to balance the terms' gradient norms on shared weights.

    Args:
      alpha: restoring-force strength (the paper uses 0.12 to 1.5; 0 = equal gradient norms).
      learning_rate: of the weights' Adam optimizer on the GradNorm loss (Adam, as the weights' gradients scale
        with the gradient norms, which plain gradient descent would need tuning to).
      shared_layer: name of the model's layer whose weights W are "the last shared layer"; None = every
        trainable variable of the model (one network per task, no designated shared layer).

    The weights are constants in ``combine`` (total = sum_k w_k L_k); ``update_inputs`` takes the per-term
    gradient norms on W from a *persistent* tape, and ``apply_gradients`` steps the weights on the GradNorm
    loss (``gradnorm_weight_gradient``), then renormalises them to sum to n. L_k(0) is taken at the first update.
    """

    persistent_tape = True

    def __init__(self, terms, kinds=None, alpha: float = 1.5, learning_rate: float = 0.025,
                 shared_layer: str | None = None, epoch_steps=None):
        super().__init__(terms, kinds, epoch_steps)
        self.alpha = float(alpha)
        self.shared_layer = shared_layer
        self.weights = keras.Variable(np.ones([self.num_terms], np.float32), name="weights")
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build([self.weights])
        self.initial_losses = tf.Variable(tf.zeros([self.num_terms]), trainable=False, name="initial_losses")
        self.started = tf.Variable(False, trainable=False, name="started")

    def combine(self, losses, *, ids=None):
        means = self._means(losses)
        w = tf.convert_to_tensor(self.weights)
        return tf.reduce_sum(w * means), self._weights_dict(w)

    def shared_variables(self, model: keras.Model) -> list:
        """The shared weights W of ``model`` (see ``shared_layer``)."""
        if self.shared_layer is None:
            return list(model.trainable_variables)
        try:
            layer = model.get_layer(self.shared_layer)
        except ValueError as e:
            raise ValueError(
                f"GradNorm.shared_layer={self.shared_layer!r} is not a layer of model {model.name!r} ({e})."
            ) from e
        if not layer.trainable_variables:
            raise ValueError(f"GradNorm.shared_layer={self.shared_layer!r} has no trainable weights.")
        return list(layer.trainable_variables)

    def term_gradient_norms(self, tape: tf.GradientTape, term_means: Mapping[str, Any], shared: Sequence[Any]):
        """[n] ||grad_W L_k|| of every term (``tape`` must be persistent and have recorded ``term_means``)."""
        self._check_terms(term_means)
        norms = []
        for t in self.terms:
            grads = [g for g in tape.gradient(term_means[t], list(shared)) if g is not None]
            norms.append(tf.linalg.global_norm(grads) if grads else tf.constant(0.0))
        return tf.stack(norms)

    def update_inputs(self, tape, term_means, model):
        return {
            "grad_norms": self.term_gradient_norms(tape, term_means, self.shared_variables(model)),
            "losses": tf.stack([tf.stop_gradient(batch_mean(term_means[t])) for t in self.terms]),
        }

    def apply_gradients(self, grads, update_inputs=None):
        if update_inputs is None:
            return
        losses = update_inputs["losses"]
        self.initial_losses.assign(tf.where(self.started, self.initial_losses, losses))
        self.started.assign(True)
        grad, _ = gradnorm_weight_gradient(tf.convert_to_tensor(self.weights), update_inputs["grad_norms"], losses,
                                           tf.convert_to_tensor(self.initial_losses), self.alpha)
        self.optimizer.apply([grad], [self.weights])
        self.weights.assign(renormalise(tf.convert_to_tensor(self.weights), float(self.num_terms)))
