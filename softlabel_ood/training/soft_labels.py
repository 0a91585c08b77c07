"""Soft-label targets and the losses built on them (DESIGN.md §7).

Pure functions on batches: labels are int [B], logits float [B, K], targets float [B, K] rows
that sum to 1. Per-example losses return [B]; averaging over the batch is the caller's business,
except for the outlier-exposure term, which the method defines as a mean over the outlier batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def label_smoothing(labels: jax.Array, num_classes: int, alpha: float) -> jax.Array:
    """(1 - α)·onehot + α/K: mass α spread uniformly over all K classes (the true one included)."""
    return optax.losses.smooth_labels(one_hot(labels, num_classes), alpha)


def distillation_targets(teacher_logits: jax.Array, temperature: float) -> jax.Array:
    """softmax(teacher_logits / T): Hinton et al.'s soft targets."""
    return jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)


def teacher_incorrect(labels: jax.Array, teacher_logits: jax.Array, alpha: float) -> jax.Array:
    """(1 - α)·onehot + α·(teacher softmax over the incorrect classes only).

    The true class keeps exactly 1 - α, and the mass α is shared among the incorrect classes in
    the teacher's proportions. The renormalised distribution is a softmax restricted to the
    incorrect classes rather than p / (1 - p_true): a confident teacher has 1 - p_true == 0 in
    float32, and the restricted softmax stays exact there.
    """
    num_classes = teacher_logits.shape[-1]
    true_class = one_hot(labels, num_classes)
    incorrect = jax.nn.softmax(teacher_logits.astype(jnp.float32), axis=-1, where=true_class == 0)
    # `where` leaves the excluded entry unspecified in general; pin it to exactly zero.
    incorrect = jnp.where(true_class == 0, incorrect, 0.0)
    return (1.0 - alpha) * true_class + alpha * incorrect


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example cross-entropy -Σ_k targets_k·log softmax(logits)_k, shape [B]."""
    return optax.losses.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
            temperature: float, weight: float, num_classes: int) -> jax.Array:
    """Per-example (1 - w)·CE(student, onehot) + w·T²·KL(softmax(t/T) || softmax(s/T)).

    The T² factor keeps the soft term's gradient scale independent of T (Hinton et al. 2015).
    No gradient is stopped here: the caller decides whether the teacher is trainable.
    """
    hard = cross_entropy(student_logits, one_hot(labels, num_classes))
    student_log_probs = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
    # Both sides in log space: a teacher probability that underflows to 0 would otherwise turn
    # its log into -inf.
    teacher_log_probs = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    soft = optax.losses.kl_divergence_with_log_targets(student_log_probs, teacher_log_probs)
    return (1.0 - weight) * hard + weight * temperature**2 * soft


def outlier_exposure_loss(outlier_logits: jax.Array, *, weight: float = 1.0) -> jax.Array:
    """weight · mean over the outlier batch of CE(outlier logits, uniform), a scalar.

    CE to uniform is logsumexp(z) - mean(z) ≥ log K, with equality exactly when all logits are
    equal: the term pushes outliers towards a flat softmax (Hendrycks et al. 2019).
    """
    num_classes = outlier_logits.shape[-1]
    uniform = jnp.full(outlier_logits.shape, 1.0 / num_classes, jnp.float32)
    return weight * jnp.mean(cross_entropy(outlier_logits, uniform))
