"""Batch transforms: what a method does to a batch's images and targets before the forward pass.

A method's record (`methods.Method.transform`) names its transform here; the train step calls
it without naming any method, on the augmented, normalised ID images:

    transform(key, hp, images, targets) -> (images, targets)

images float [B, H, W, C], targets float32 [B, K] (one-hot labels) in, the same shapes out.
`key` is the step's own stream for transforms, derived from (seed, step) like augmentation, so
a resumed run and a run in a population draw the same numbers as a run alone. A transform reads
its hyperparameters from `hp.method_values` by config field, as the losses do.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Transform = Callable[..., tuple[jax.Array, jax.Array]]


def mixed_targets(targets: jax.Array, partner: jax.Array, lam: jax.Array) -> jax.Array:
    """λ·t + (1 - λ)·t[partner]: each row's target mixed with its partner's by λ."""
    return lam * targets + (1 - lam) * targets[partner]


def mixup_draws(key: jax.Array, alpha: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """(partner, λ) of one batch: a random permutation of its rows and λ ~ Beta(a, a)."""
    permutation_key, lambda_key = jax.random.split(key)
    return (jax.random.permutation(permutation_key, batch),
            jax.random.beta(lambda_key, alpha, alpha))


def mixup(key, hp, images, targets):
    """Zhang et al. 2018: every image and its target mixed with those of a random partner in
    the batch, by one λ per batch (their code's batch-level λ)."""
    partner, lam = mixup_draws(key, hp.method_values["mixup.alpha"], images.shape[0])
    x = images.astype(jnp.float32)
    return lam * x + (1 - lam) * x[partner], mixed_targets(targets, partner, lam)


TRANSFORMS: dict[str, Transform] = {
    "mixup": mixup,
}
