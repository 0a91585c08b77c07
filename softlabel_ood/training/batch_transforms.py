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
from typing import NamedTuple

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


class CutMixDraws(NamedTuple):
    partner: jax.Array  # int32 [B]: a random permutation of the batch
    lam: jax.Array  # λ ~ Beta(a, a), which sizes the box
    row: jax.Array  # int32: the box's centre, uniform over the image's rows ...
    column: jax.Array  # ... and columns
    mixes: jax.Array  # bool: whether the batch is mixed at all (probability cutmix.prob)


def cutmix_draws(key: jax.Array, alpha: jax.Array, prob: jax.Array, batch: int, height: int,
                 width: int) -> CutMixDraws:
    keys = jax.random.split(key, 5)
    return CutMixDraws(jax.random.permutation(keys[0], batch),
                       jax.random.beta(keys[1], alpha, alpha),
                       jax.random.randint(keys[2], (), 0, height),
                       jax.random.randint(keys[3], (), 0, width),
                       jax.random.uniform(keys[4]) < prob)


def cutmix_box(draws: CutMixDraws, height: int, width: int) -> jax.Array:
    """bool [H, W]: Yun et al.'s rand_bbox, sides ⌊L·√(1 − λ)⌋ about the drawn centre, from
    centre − side//2 to centre + side//2 clipped to the image; a mask, so shapes stay static."""
    scale = jnp.sqrt(1 - draws.lam)

    def inside(length, centre):
        half = jnp.floor(length * scale).astype(jnp.int32) // 2
        positions = jnp.arange(length)
        return ((positions >= jnp.clip(centre - half, 0, length))
                & (positions < jnp.clip(centre + half, 0, length)))

    return inside(height, draws.row)[:, None] & inside(width, draws.column)[None, :]


def cutmix(key, hp, images, targets):
    """Yun et al. 2019: with probability cutmix.prob, a box of each image's partner pasted into
    it, and the target mixed by the area kept, λ = 1 − box area / (H·W) (their code's
    correction of the drawn λ); otherwise the batch unchanged."""
    batch, height, width = images.shape[:3]
    draws = cutmix_draws(key, hp.method_values["cutmix.alpha"], hp.method_values["cutmix.prob"],
                         batch, height, width)
    box = cutmix_box(draws, height, width) & draws.mixes  # empty when the batch is not mixed
    pasted = jnp.where(box[None, :, :, None], images[draws.partner], images)
    kept = 1 - jnp.sum(box) / (height * width)
    return pasted, mixed_targets(targets, draws.partner, kept)


TRANSFORMS: dict[str, Transform] = {
    "mixup": mixup,
    "cutmix": cutmix,
}
