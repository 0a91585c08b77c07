"""The batch losses of the training methods, by the name each method's record gives (`methods`).

`methods.py` says what a method is and reads (without JAX, for configs and the validator);
`soft_labels.py` builds the targets and per-example losses; this module combines them into the
scalar that the train step differentiates. Every loss has one signature, so the step looks its
method's loss up in `LOSSES` and names no method itself:

    loss(hp, logits, inputs: LossInputs) -> float32 scalar

`logits` are the model's [B, K] outputs on the ID batch. `hp` is the run's
`train_step.Hyperparams`: a loss reads its method's hyperparameters from `hp.method_values` by
config field; those a method does not read hold their neutral values (`methods`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from softlabel_ood.training import soft_labels


class LossInputs(NamedTuple):
    labels: jax.Array  # int32 [B]: the ID examples' classes
    # float32 [B, K]: the one-hot labels, or the targets of the method's batch transform (mixup's
    # mixed labels); rows sum to 1.
    targets: jax.Array
    outlier_logits: jax.Array | None  # [B_out, K] for methods that need outliers, else None
    teacher_logits: jax.Array | None  # [B, K] for methods that need a teacher, else None


Loss = Callable[..., jax.Array]


def _mean_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(soft_labels.cross_entropy(logits, targets))


def cross_entropy(hp, logits, inputs: LossInputs) -> jax.Array:
    # (1 - α)·targets + α/K: with α = 0 (ce) exactly the targets, so ce and the α sweep of ls are
    # one loss and one compiled program; with one-hot targets, label smoothing.
    targets = optax.losses.smooth_labels(inputs.targets, hp.method_values["label_smoothing"])
    return _mean_cross_entropy(logits, targets)


def outlier_exposure(hp, logits, inputs: LossInputs) -> jax.Array:
    hard = _mean_cross_entropy(logits, soft_labels.one_hot(inputs.labels, logits.shape[-1]))
    return hard + soft_labels.outlier_exposure_loss(inputs.outlier_logits,
                                                    weight=hp.method_values["oe.weight"])


def distillation(hp, logits, inputs: LossInputs) -> jax.Array:
    return jnp.mean(soft_labels.kd_loss(
        logits, inputs.teacher_logits, inputs.labels,
        temperature=hp.method_values["kd.temperature"], weight=hp.method_values["kd.weight"],
        num_classes=logits.shape[-1]))


def teacher_incorrect(hp, logits, inputs: LossInputs) -> jax.Array:
    # The teacher shapes only the incorrect-class mass α, at temperature T.
    targets = soft_labels.teacher_incorrect(
        inputs.labels, inputs.teacher_logits / hp.method_values["kd.temperature"],
        hp.method_values["label_smoothing"])
    return _mean_cross_entropy(logits, targets)


# Added to τ·‖z‖ in LogitNorm's divisor (Wei et al.'s 1e-7).
LOGIT_NORM_EPSILON = 1e-7


def logit_norm(hp, logits, inputs: LossInputs) -> jax.Array:
    # Wei et al. 2022: the logits' norm cannot lower the loss, only their direction can. Only
    # the loss normalises: the model's outputs, and so its predictions, stay z.
    z = logits.astype(jnp.float32)
    squared = jnp.sum(z * z, axis=-1, keepdims=True)
    # sqrt's gradient is infinite at 0: a row of zero logits has norm 0 and a finite gradient.
    norm = jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1.0)), 0.0)
    divisor = hp.method_values["logitnorm.temperature"] * norm + LOGIT_NORM_EPSILON
    return _mean_cross_entropy(z / divisor, inputs.targets)


def focal(hp, logits, inputs: LossInputs) -> jax.Array:
    # Lin et al. 2017, for calibration Mukhoti et al. 2020: hard labels, the well-classified
    # examples' cross-entropy scaled down by (1 − p_y)^γ.
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                                inputs.labels[:, None], axis=-1)[:, 0]
    q = -jnp.expm1(log_p)  # 1 − p_y, exact near p_y = 1
    gamma = hp.method_values["focal.gamma"]
    # Where p_y rounds to 1 the loss and its gradient are 0, but q^γ's gradient γ·q^(γ−1) would
    # be NaN or infinite for γ < 1: q^γ is taken on q > 0 only, 0^γ (1 at γ = 0) elsewhere.
    weight = jnp.where(q > 0, jnp.power(jnp.where(q > 0, q, 1.0), gamma), jnp.power(0.0, gamma))
    return jnp.mean(-weight * log_p)


def confidence_penalty(hp, logits, inputs: LossInputs) -> jax.Array:
    # Pereyra et al. 2017: the output distribution's entropy rewarded, label smoothing with the
    # KL divergence reversed.
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    return (_mean_cross_entropy(logits, inputs.targets)
            - hp.method_values["confidence_penalty.beta"] * jnp.mean(entropy))


LOSSES: dict[str, Loss] = {
    "cross_entropy": cross_entropy,
    "outlier_exposure": outlier_exposure,
    "distillation": distillation,
    "teacher_incorrect": teacher_incorrect,
    "logit_norm": logit_norm,
    "focal": focal,
    "confidence_penalty": confidence_penalty,
}
