"""The batch loss of each training method: one function per name in `methods.METHODS`.

`methods.py` says what a method is and reads (without JAX, for configs and the validator);
`soft_labels.py` builds the targets and per-example losses; this module combines them into the
scalar that the train step differentiates. Every loss has one signature, so the step looks its
method up in `LOSSES` and names no method itself:

    loss(hp, logits, labels, outlier_logits, teacher_logits) -> float32 scalar

`logits` are the model's [B, K] outputs on the ID batch and `labels` its int [B] classes;
`outlier_logits` ([B_out, K], methods that need outliers) and `teacher_logits` ([B, K], methods
that need a teacher) are None for the others. `hp` is the run's `train_step.Hyperparams`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from softlabel_ood import methods
from softlabel_ood.training import soft_labels

Loss = Callable[..., jax.Array]


def _mean_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(soft_labels.cross_entropy(logits, targets))


def _hard(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return _mean_cross_entropy(logits, soft_labels.one_hot(labels, logits.shape[-1]))


def ce(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    return _hard(logits, labels)


def ls(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    targets = soft_labels.label_smoothing(labels, logits.shape[-1], hp.label_smoothing)
    return _mean_cross_entropy(logits, targets)


def oe(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    return _hard(logits, labels) + soft_labels.outlier_exposure_loss(
        outlier_logits, weight=hp.oe_weight)


def kd(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    return jnp.mean(soft_labels.kd_loss(
        logits, teacher_logits, labels, temperature=hp.kd_temperature, weight=hp.kd_weight,
        num_classes=logits.shape[-1]))


def kd_incorrect(hp, logits, labels, outlier_logits, teacher_logits) -> jax.Array:
    # The teacher shapes only the incorrect-class mass α, at temperature T.
    targets = soft_labels.teacher_incorrect(
        labels, teacher_logits / hp.kd_temperature, hp.label_smoothing)
    return _mean_cross_entropy(logits, targets)


LOSSES: dict[str, Loss] = {"ce": ce, "ls": ls, "oe": oe, "kd": kd, "kd_incorrect": kd_incorrect}

if set(LOSSES) != set(methods.METHODS):
    # A method defined without a loss (or the reverse) must fail on import, not at its first run.
    raise ImportError(f"method_losses.LOSSES covers {sorted(LOSSES)}, methods.METHODS is "
                      f"{sorted(methods.METHODS)}")
