"""The batch losses of the training methods, by the name each method's record gives (`methods`).

`methods.py` says what a method is and reads (without JAX, for configs and the validator);
`soft_labels.py` builds the targets and per-example losses; this module combines them into the
scalar that the train step differentiates. Every loss has one signature, so the step looks its
method's loss up in `LOSSES` and names no method itself:

    loss(hp, logits, labels, outlier_logits, teacher_logits) -> float32 scalar

`logits` are the model's [B, K] outputs on the ID batch and `labels` its int [B] classes;
`outlier_logits` ([B_out, K], methods that need outliers) and `teacher_logits` ([B, K], methods
that need a teacher) are None for the others. `hp` is the run's `train_step.Hyperparams`, whose
fields a method does not read hold their neutral values (`methods.NEUTRAL`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from softlabel_ood.training import soft_labels

Loss = Callable[..., jax.Array]


def _mean_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(soft_labels.cross_entropy(logits, targets))


def cross_entropy(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    # (1 - α)·onehot + α/K: with α = 0 (ce) exactly the one-hot target, so ce and the α sweep of
    # ls are one loss and one compiled program.
    targets = soft_labels.label_smoothing(labels, logits.shape[-1], hp.label_smoothing)
    return _mean_cross_entropy(logits, targets)


def outlier_exposure(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    hard = _mean_cross_entropy(logits, soft_labels.one_hot(labels, logits.shape[-1]))
    return hard + soft_labels.outlier_exposure_loss(outlier_logits, weight=hp.oe_weight)


def distillation(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    return jnp.mean(soft_labels.kd_loss(
        logits, teacher_logits, labels, temperature=hp.kd_temperature, weight=hp.kd_weight,
        num_classes=logits.shape[-1]))


def teacher_incorrect(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    # The teacher shapes only the incorrect-class mass α, at temperature T.
    targets = soft_labels.teacher_incorrect(
        labels, teacher_logits / hp.kd_temperature, hp.label_smoothing)
    return _mean_cross_entropy(logits, targets)


LOSSES: dict[str, Loss] = {
    "cross_entropy": cross_entropy,
    "outlier_exposure": outlier_exposure,
    "distillation": distillation,
    "teacher_incorrect": teacher_incorrect,
}

