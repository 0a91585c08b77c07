"""Selective-classification metrics and the pnorm score against direct references: plain numpy
loops written from the definitions, a brute-force average over the orders of tied examples, and
scikit-learn for the error-detection metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from softlabel_ood import scoring
from softlabel_ood.scoring import selective


def aurc_loop(scores, correct):
    """The definition, one position at a time: tie blocks in order of decreasing score."""
    scores, errors = np.asarray(scores, float), ~np.asarray(correct, bool)
    total, before, errors_before = 0.0, 0, 0
    for value in sorted(set(scores.tolist()), reverse=True):
        block = scores == value
        m, e = int(block.sum()), int(errors[block].sum())
        for j in range(1, m + 1):
            total += (errors_before + j * e / m) / (before + j)
        before, errors_before = before + m, errors_before + e
    return total / len(scores)


def aurc_of_orders(scores, correct):
    """AURC averaged over every order of the tied examples (the risk curve of a strict order
    is plain: errors among the first i over i)."""
    scores, errors = np.asarray(scores, float), ~np.asarray(correct, bool)
    blocks = [np.flatnonzero(scores == v) for v in sorted(set(scores.tolist()), reverse=True)]
    results = []
    for orders in itertools.product(*(itertools.permutations(b) for b in blocks)):
        order = np.concatenate(orders)
        results.append(np.mean(np.cumsum(errors[order]) / np.arange(1, len(order) + 1)))
    return float(np.mean(results))


def error_fpr95_reference(scores, correct):
    fpr, tpr, _ = roc_curve(correct.astype(int), scores, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


def tie_heavy(rng, n, levels):
    scores = rng.integers(0, levels, n) / levels
    # Errors more likely at low scores, so the metrics are far from their chance values.
    correct = rng.uniform(size=n) < 0.3 + 0.6 * scores
    return scores, correct


def test_aurc_is_the_mean_over_the_orders_of_tied_examples():
    # Small enough to enumerate every order of every tie block.
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores, correct = tie_heavy(rng, 7, 3)
        got = selective.selective_metrics(scores[None], correct[None])["aurc"][0]
        assert got == pytest.approx(aurc_of_orders(scores, correct), abs=1e-12)


@pytest.mark.parametrize(("n", "levels"), [(1, 1), (2, 1), (50, 3), (400, 20), (1000, 1000)])
def test_every_metric_equals_its_reference_on_tie_heavy_data(n, levels):
    rng = np.random.default_rng(n + levels)
    rows = [tie_heavy(rng, n, levels) for _ in range(6)]
    scores = np.stack([s for s, _ in rows])
    correct = np.stack([c for _, c in rows])
    correct[0] = True  # no errors: aurc and eaurc 0, error metrics undefined
    if n > 1:
        correct[1, :] = np.arange(n) % 2 == 0
    out = selective.selective_metrics(scores, correct)
    for g, (s, c) in enumerate(zip(scores, correct, strict=True)):
        r = float(np.mean(~c))
        expected_aurc = aurc_loop(s, c)
        assert out["aurc"][g] == pytest.approx(expected_aurc, abs=1e-12)
        optimal = r + (1 - r) * math.log(1 - r) if r < 1 else 1.0
        assert out["eaurc"][g] == pytest.approx(expected_aurc - optimal, abs=1e-12)
        if c.all() or not c.any():
            assert np.isnan(out["error_auroc"][g])
            assert np.isnan(out["error_fpr95"][g])
            continue
        assert out["error_auroc"][g] == pytest.approx(roc_auc_score(c, s), abs=1e-12)
        assert out["error_fpr95"][g] == pytest.approx(error_fpr95_reference(s, c), abs=1e-12)


def test_a_perfect_score_has_zero_eaurc_and_a_reversed_one_the_worst_aurc():
    correct = np.array([True] * 80 + [False] * 20)
    perfect = np.linspace(1, 0, 100)
    out = selective.selective_metrics(np.stack([perfect, -perfect]), np.stack([correct] * 2))
    # Discrete AURC of a perfect ranking: sum over the errors at coverages 81..100.
    discrete = np.mean(np.concatenate([np.zeros(80), np.arange(1, 21) / np.arange(81, 101)]))
    assert out["aurc"][0] == pytest.approx(discrete, abs=1e-15)
    assert out["eaurc"][0] == pytest.approx(discrete - (0.2 + 0.8 * math.log(0.8)), abs=1e-15)
    assert out["error_auroc"].tolist() == [1.0, 0.0]
    assert out["aurc"][1] == pytest.approx(np.mean(np.minimum(np.arange(1, 101), 20)
                                                   / np.arange(1, 101)), abs=1e-15)


def test_rows_of_different_sizes_equal_each_row_alone():
    rng = np.random.default_rng(3)
    rows = [tie_heavy(rng, n, 5) for n in (13, 40, 7)]
    scores = np.zeros((3, 40))
    correct = np.zeros((3, 40), bool)
    for g, (s, c) in enumerate(rows):
        scores[g, :len(s)], correct[g, :len(s)] = s, c
        scores[g, len(s):] = 1e300  # padding is never read
    together = selective.selective_metrics(scores, correct, sizes=[13, 40, 7])
    for g, (s, c) in enumerate(rows):
        alone = selective.selective_metrics(s[None], c[None])
        for metric in scoring.SELECTIVE_METRICS:
            np.testing.assert_equal(together[metric][g], alone[metric][0])


def test_bad_inputs_are_refused():
    with pytest.raises(scoring.ScoringError, match="of one shape"):
        selective.selective_metrics(np.zeros((2, 3)), np.zeros((2, 4), bool))
    with pytest.raises(scoring.ScoringError, match="NaN or infinite"):
        selective.selective_metrics(np.array([[0.0, np.nan]]), np.ones((1, 2), bool))
    with pytest.raises(scoring.ScoringError, match="sizes"):
        selective.selective_metrics(np.zeros((1, 3)), np.ones((1, 3), bool), sizes=[0])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5, 200.0])
def test_pnorm_is_the_max_of_the_centred_logits_over_their_p_norm(p):
    rng = np.random.default_rng(int(p))
    logits = rng.normal(size=(50, 7)).astype(np.float32) * 10
    logits[0] = 3.0  # all equal: no confidence, defined as 0
    centred = logits.astype(np.float64) - logits.astype(np.float64).mean(1, keepdims=True)
    norms = np.array([np.sum(np.abs(row) ** p) ** (1 / p) for row in centred])
    expected = np.where(norms > 0, centred.max(1) / np.where(norms > 0, norms, 1), 0.0)
    np.testing.assert_allclose(scoring.pnorm(logits, p), expected, rtol=1e-12, atol=0)
    assert scoring.pnorm(logits, p)[0] == 0.0


def test_pnorm_refuses_a_p_that_is_not_a_norm():
    for p in (0.5, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="pnorm_p"):
            scoring.pnorm(np.zeros((2, 3)), p)
