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

Transform = Callable[..., tuple[jax.Array, jax.Array]]

TRANSFORMS: dict[str, Transform] = {}
