"""On-device augmentation and normalization, run inside the jitted train step.

`random_crop_flip` reproduces torchvision's `RandomCrop(size, padding=4)` followed by
`RandomHorizontalFlip()`, the CIFAR augmentation of the reference code: the image is padded with
zeros (torchvision's default `fill=0`, `padding_mode="constant"`, applied to the raw image
before `Normalize`, so the border is black in pixel space and becomes -mean/std after
normalization), a window of the original size is cut at a uniform offset in [0, 2·padding] on
each axis, and the result is mirrored left-right with probability 1/2. Every example draws its
own offsets and flip, all in one vectorized gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def random_crop_flip(key: jax.Array, images: jax.Array, *, padding: int = 4) -> jax.Array:
    """Per-example random crop with zero padding, then random horizontal flip.

    images: uint8 or float NHWC; the result has the same shape and dtype.
    """
    batch, height, width, channels = images.shape
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * padding + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    cropped = jax.vmap(crop)(padded, offsets)
    return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1, :], cropped)


def normalize(images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float],
              dtype=jnp.float32) -> jax.Array:
    """(x / 255 - mean) / std per channel, computed in float32 and returned in `dtype`."""
    x = images_uint8.astype(jnp.float32) / 255.0
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.astype(dtype)
