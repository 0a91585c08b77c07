"""Sorted keys and counts behind the rank metrics (`metrics`, `selective`), with numpy.

Every OOD and selective-classification metric is a function of counts at the distinct score
values (metrics.py's docstring). The sorting and binary searches are exact integer work, so
numpy does them, at any shape and without a compiled program; the compiled programs that follow
do the arithmetic whose last bits depend on how XLA compiles it.

Scores are compared as int64 keys that order exactly like the float64 values (integer sorts are
faster than float sorts); -0.0 is folded into +0.0 on the integer bits, so that the two remain a
tie while a subnormal stays above zero. Rows of different sizes share one array through padding:
padded entries get the largest key, which no finite score reaches, so they sort last, and are
masked out of every count.
"""

from __future__ import annotations

import numpy as np

PAD_KEY = np.iinfo(np.int64).max
_SIGN_MASK_COMPLEMENT = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def order_keys(x) -> np.ndarray:
    """int64 keys with key(a) < key(b) exactly when a < b, for finite float64 a and b."""
    bits = np.ascontiguousarray(x, np.float64).view(np.int64)
    # Negative floats order backwards by their magnitude bits: flip those bits (bits >> 63 is
    # all ones for a negative float, zero otherwise).
    keys = bits >> 63
    keys &= _SIGN_MASK_COMPLEMENT
    keys ^= bits
    # -0.0 (the sign bit alone) became -1: fold it into +0.0, so that the two remain a tie.
    keys[keys == -1] = 0
    return keys


def sorted_keys(scores, sizes) -> np.ndarray:
    """Each row's keys in increasing order, the padding past the row's size last: scores
    [..., L], sizes [...]."""
    keys = order_keys(scores)
    keys[np.arange(scores.shape[-1]) >= sizes[..., None]] = PAD_KEY
    keys.sort(axis=-1)
    return keys


def count_at_most(sorted_rows: np.ndarray, queries: np.ndarray, *, strictly: bool = False):
    """#{x in sorted_rows[g] : x <= q} (x < q with `strictly`) for every q in queries[g]:
    rows [G, M], queries [G, ...]; int32 [G, ...]."""
    side = "left" if strictly else "right"
    return np.stack([np.searchsorted(row, q.reshape(-1), side).reshape(q.shape)
                     for row, q in zip(sorted_rows, queries, strict=True)]).astype(np.int32)
