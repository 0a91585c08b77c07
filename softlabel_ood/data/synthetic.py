"""Synthetic OOD test sets, built as the Outlier Exposure reference builds them (CIFAR/test.py of
hendrycks/outlier-exposure), then stored as uint8 pixels.

The reference draws each set as a float image x in [-1, 1] and feeds x to the network directly.
Here x is mapped to pixels p = round((x + 1) / 2 * 255), so that noise is stored, batched and
normalised exactly like every real dataset (one uint8 pipeline, one on-device normalisation with
the ID dataset's mean/std, no special case in the predict code). Consequence: the network sees
(p / 255 - mean) / std, not x. For CIFAR constants (mean ~0.48, std ~0.25) that is roughly 2x,
shifted by ~0.1: the same shapes of noise, at about twice the reference's input scale, and
quantised to 256 levels. OOD numbers on these sets are therefore comparable within this project,
not digit-for-digit with the OE paper.

Per pixel, with N(0, s) a normal of standard deviation s:
- gaussian:   x = clip(N(0, 0.5), -1, 1). Pixel mean 127.5, std 61.1 (x std 0.479);
              P(|N(0, 0.5)| >= 1) = 4.55% of pixels saturate (about 2.3% at 0 and at 255).
- rademacher: x = 2 * Bernoulli(0.5) - 1, so pixels are 0 or 255, each with probability 1/2.
- blobs:      b = Bernoulli(0.7) on an [H, W, C] grid; b = gaussian_filter(b, sigma=1.5) over
              all three axes, channels included (the reference calls skimage's gaussian with
              multichannel=False on an HWC image, which blurs across channels; mode "nearest",
              truncate 4); b[b < 0.75] = 0; x = 2b - 1. Pixels are 0 or in [191, 255]; measured:
              21% are non-zero at 32x32x3 (31% at 28x28x1, where no channel blur applies).
              (The reference uses sigma=1.5, not 1: that is what its code runs.)
- uniform:    x = U(-1, 1). Pixel mean 127.5, std 255 / sqrt(12) = 73.6.
All draws come from a numpy Generator seeded by (seed, crc32(name), crc32(split)), in NHWC order
and in chunks, so a set is the same on every machine and every process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from softlabel_ood.data.sources import Source

BLOB_PROBABILITY = 0.7
BLOB_SIGMA = 1.5
BLOB_THRESHOLD = 0.75
GAUSSIAN_SCALE = 0.5
DEFAULT_COUNT = 2000  # images per set unless num_examples says otherwise
_CHUNK = 1024  # images drawn per call; bounds float64 temporaries, fixed for reproducibility


def _to_pixels(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 pixels, p = round((x + 1) / 2 * 255)."""
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return _to_pixels(np.clip(rng.normal(0.0, GAUSSIAN_SCALE, size=shape), -1.0, 1.0))


def rademacher(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.binomial(1, 0.5, size=shape) * 255).astype(np.uint8)


def uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return _to_pixels(rng.uniform(-1.0, 1.0, size=shape))


def blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    b = rng.binomial(1, BLOB_PROBABILITY, size=shape).astype(np.float32)
    # sigma 0 on the batch axis: each image is blurred on its own, over H, W and C.
    b = ndimage.gaussian_filter(b, sigma=(0, BLOB_SIGMA, BLOB_SIGMA, BLOB_SIGMA),
                                mode="nearest", truncate=4.0)
    b[b < BLOB_THRESHOLD] = 0.0
    return _to_pixels(2.0 * b - 1.0)


Draw = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Noise(Source):
    """A generated set: `draw` gives uint8 pixels for a batch shape [n, H, W, C]."""

    draw: Draw
    default_count: int = DEFAULT_COUNT

    def load(self, name: str, split: str, *, shape: tuple[int, int, int],
             num_examples: int | None, rng: np.random.Generator, path: str | None,
             data_dir: str | None, download: bool) -> tuple[np.ndarray, None]:
        return generate(self.draw, num_examples or self.default_count, shape, rng), None


def generate(draw: Draw, num_examples: int, shape: tuple[int, int, int],
             rng: np.random.Generator) -> np.ndarray:
    """uint8 [num_examples, *shape] of `draw`'s noise, drawn in fixed chunks."""
    out = np.empty((num_examples, *shape), np.uint8)
    for start in range(0, num_examples, _CHUNK):
        stop = min(start + _CHUNK, num_examples)
        out[start:stop] = draw(rng, (stop - start, *shape))
    return out
