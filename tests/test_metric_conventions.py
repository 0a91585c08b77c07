"""The conventions docs/scores_and_metrics.md states beside the metrics, where they differ from
the peers' code by definition: each checked against an independent computation of the peers'
quantity (a trapezoid, scikit-learn, a squared distance)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from softlabel_ood import scoring
from softlabel_ood.scoring import float64


def _selective(scores, correct):
    with float64.enabled():
        out = scoring.selective_metrics(np.asarray(scores, float)[None],
                                        np.asarray(correct, bool)[None])
    return {m: float(v[0]) for m, v in out.items()}


def test_the_peers_trapezoid_aurc_is_aurc_minus_half_the_error_rate_over_n():
    rng = np.random.default_rng(0)
    n = 500
    scores = rng.permutation(n).astype(float)  # no ties: the sort order cannot matter
    correct = rng.uniform(size=n) < 0.8
    order = np.argsort(-scores)
    risks = np.cumsum(~correct[order]) / np.arange(1, n + 1)
    coverage = np.arange(n + 1) / n
    trapezoid = np.trapezoid(np.r_[0.0, risks], coverage)  # from (0, 0), as the peers do
    r = 1 - correct.mean()
    assert _selective(scores, correct)["aurc"] - r / (2 * n) == pytest.approx(trapezoid,
                                                                               abs=1e-15)


def test_a_perfect_ranking_has_eaurc_above_zero_the_discrete_minus_the_continuous_optimum():
    n, errors = 2000, 1200  # r = 0.6
    correct = np.r_[np.ones(n - errors, bool), np.zeros(errors, bool)]
    scores = np.linspace(1, 0, n)  # every error last
    i = np.arange(1, n + 1)
    discrete = np.mean(np.maximum(0, i - (n - errors)) / i)  # lfpc's optimum
    r = errors / n
    continuous = r + (1 - r) * np.log(1 - r)
    got = _selective(scores, correct)["eaurc"]
    assert got == pytest.approx(discrete - continuous, abs=1e-15)
    assert got == pytest.approx(1.5e-4, rel=1e-3)  # the doc's figure, about r / (2n)


def test_openood_aupr_is_a_trapezoid_that_differs_from_average_precision_on_ties():
    # Three score levels: average precision (aupr_in here, as scikit-learn's) and the trapezoid
    # under the precision-recall curve (OpenOOD) are different numbers.
    y = np.r_[np.ones(6), np.zeros(6)]
    s = np.array([2, 2, 2, 1, 1, 0, 2, 1, 1, 1, 0, 0], float)
    with float64.enabled():
        out = scoring.ood_metrics(s[:6][None], s[6:][None, None])
    precision, recall, _ = precision_recall_curve(y, s)
    assert float(out["aupr_in"][0, 0]) == pytest.approx(average_precision_score(y, s),
                                                        abs=1e-15)
    assert abs(auc(recall, precision) - float(out["aupr_in"][0, 0])) > 0.02


def test_openood_knn_is_twice_this_knn_the_negative_squared_distance():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(40, 5)), rng.normal(size=(9, 5))
    k = 3
    ours = scoring.knn(test, train, k)

    def normalised(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    squared = ((normalised(test)[:, None] - normalised(train)[None]) ** 2).sum(-1)
    openood = -np.sort(squared, axis=1)[:, k - 1]  # faiss IndexFlatL2: squared distances
    np.testing.assert_allclose(openood, 2 * ours, atol=1e-6)
