"""The decision statistics (paired and independent comparisons, Spearman, outcomes combined)
against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from softlabel_ood.analysis import claims, metric_stats
from softlabel_ood.analysis.decision_statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    combine_outcomes,
    compare,
    compare_paired,
    part_outcome,
    spearman,
)


def test_noise_threshold_uses_the_combined_seed_std():
    rules = claims.ClaimRules(min_effect=0.005)
    a = metric_stats.Stat((0.90, 0.95, 1.00))  # std 0.05
    b = metric_stats.Stat((0.80, 0.80, 0.80))  # std 0
    c = compare(a, b, rules)
    assert c.threshold == pytest.approx(0.05)
    assert c.direction == 1
    c = compare(metric_stats.Stat((0.84, 0.86, 0.88)), b, rules)  # diff 0.06, threshold 0.02
    assert c.direction == 1
    c = compare(metric_stats.Stat((0.70, 0.85, 1.0)), b, rules)  # diff 0.05 < std 0.15
    assert c.direction == 0
    assert compare(metric_stats.Stat((0.9,)), b, rules).direction == 0  # one seed: unknown


def test_spearman_averages_tied_ranks_and_is_nan_for_constant_input():
    # Ranks by hand: x -> 1..5; y -> 4, 2.5, 2.5, 1, 5 (the two 0.8s share ranks 2 and 3).
    # Deviations from the mean rank 3: dx = -2, -1, 0, 1, 2 and dy = 1, -.5, -.5, -2, 2, so
    # rho = sum(dx dy) / sqrt(sum dx² sum dy²) = 0.5 / sqrt(10 * 9.5).
    x, y = [0.0, 0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.8, 0.7, 0.95]
    assert spearman(x, y) == pytest.approx(0.5 / np.sqrt(95.0))
    assert spearman(x, x[::-1]) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, [0.5] * 5))
    assert np.isnan(spearman([0.1], [0.2]))


def test_compare_paired_by_hand():
    rules = claims.ClaimRules(min_effect=0.005, min_seeds=2)
    a = {0: 0.90, 1: 0.95, 2: 1.00, 7: 0.5}  # seed 7 has no partner: left out
    b = {0: 0.80, 1: 0.86, 2: 0.89, 3: 0.1}
    c = compare_paired(a, b, rules)
    assert [seed for seed, _ in c.differences] == [0, 1, 2]
    d = np.array([0.10, 0.09, 0.11])
    assert c.mean == pytest.approx(d.mean())
    assert c.std == pytest.approx(d.std(ddof=1))
    assert c.threshold == pytest.approx(max(0.005, d.std(ddof=1)))
    assert c.direction == 1
    assert compare_paired(b, a, rules).direction == -1
    # One pair: the spread is unknown below min_seeds.
    one = compare_paired({0: 0.9}, {0: 0.1}, rules)
    assert np.isnan(one.threshold)
    assert one.direction == 0


def test_a_part_holds_against_or_within_noise_and_the_parts_combine():
    assert [part_outcome(d, +1) for d in (1, -1, 0)] == [1, -1, 0]
    assert [part_outcome(d, -1) for d in (1, -1, 0)] == [-1, 1, 0]
    # One contradicted part decides against the claim, even beside parts that hold.
    assert combine_outcomes([1, -1]) == NOT_SUPPORTED
    assert combine_outcomes([1, 0]) == INCONCLUSIVE
    assert combine_outcomes([1, 1]) == SUPPORTED
    assert combine_outcomes([]) == INCONCLUSIVE  # no part: nothing decided


def test_comparisons_read_only_the_noise_rules_of_the_claims():
    class Noise:
        min_effect, min_seeds = 0.05, 3

    # Two pairs are below min_seeds = 3 here, though ClaimRules' default would take them.
    two = {0: 0.9, 1: 0.8}
    assert np.isnan(compare_paired(two, {0: 0.1, 1: 0.1}, Noise()).threshold)
    assert compare_paired(two, {0: 0.1, 1: 0.1}, claims.ClaimRules()).direction == 1
