"""The sorted keys and counts behind the rank metrics, against comparing the floats themselves."""

from __future__ import annotations

import numpy as np
import pytest

from softlabel_ood.scoring import rank_counts

SPECIAL = np.array([-0.0, 0.0, 5e-324, -5e-324, 1.0, -1.0, 1e300, -1e300, 0.5])


def order(a):
    """-1, 0 or 1 for every pair (i, j): a[i] below, equal to or above a[j]."""
    return (a[:, None] > a[None, :]).astype(int) - (a[:, None] < a[None, :])


def test_keys_order_exactly_as_the_floats_with_signed_zeros_tied():
    x = np.concatenate([SPECIAL, np.random.default_rng(0).normal(size=200)])
    assert np.array_equal(order(rank_counts.order_keys(x)), order(x))


@pytest.mark.parametrize("seed", range(4))
def test_sorted_keys_put_each_rows_padding_last_and_counts_equal_comparing_floats(seed):
    rng = np.random.default_rng(seed)
    # Few distinct values: ties within and across rows; padding holds anything, even NaN.
    values = np.concatenate([SPECIAL, rng.normal(size=3)])
    rows, queries = rng.choice(values, (3, 30)), rng.choice(values, (3, 2, 25))
    sizes = rng.integers(1, 31, 3)
    rows[np.arange(30) >= sizes[:, None]] = np.nan
    keys = rank_counts.sorted_keys(rows, sizes)
    at_most = rank_counts.count_at_most(keys, rank_counts.order_keys(queries))
    below = rank_counts.count_at_most(keys, rank_counts.order_keys(queries), strictly=True)
    for g in range(3):
        valid = rows[g, :sizes[g]]
        assert np.array_equal(keys[g, :sizes[g]], rank_counts.order_keys(np.sort(valid)))
        assert (keys[g, sizes[g]:] == rank_counts.PAD_KEY).all()
        assert np.array_equal(at_most[g], (valid <= queries[g][..., None]).sum(-1))
        assert np.array_equal(below[g], (valid < queries[g][..., None]).sum(-1))
