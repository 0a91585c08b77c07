"""Scores against direct formulas, and the scoring package's import footprint."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance

from softlabel_ood.scoring import scores


def test_logit_scores_match_their_formulas():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(300, 7)) * rng.uniform(0.1, 20, (300, 1))).astype(np.float32)
    got = scores.logit_scores(logits)
    x = logits.astype(np.float64)
    p = softmax(x, axis=1)
    np.testing.assert_allclose(got["msp"], p.max(1), rtol=1e-13)
    np.testing.assert_array_equal(got["max_logit"], x.max(1))
    np.testing.assert_allclose(got["energy"], logsumexp(x, axis=1), rtol=1e-13)
    with np.errstate(divide="ignore", invalid="ignore"):
        neg_entropy = np.nansum(p * np.log(p), axis=1)
    np.testing.assert_allclose(got["entropy"], neg_entropy, rtol=1e-10, atol=1e-13)
    for name in scores.LOGIT_SCORES:
        assert got[name].dtype == np.float64
    # The jnp building blocks agree with the batched pass.
    for name, fn in [("msp", scores.msp), ("max_logit", scores.max_logit),
                     ("energy", scores.energy), ("entropy", scores.entropy)]:
        np.testing.assert_allclose(np.asarray(fn(logits)), got[name], rtol=1e-5, atol=1e-6)


def test_confident_softmax_scores_do_not_collapse_into_ties():
    # In float32, both confidences round to 1.0 and would tie; float64 keeps them apart.
    logits = np.array([[20.0, 0.0, 0.0], [25.0, 0.0, 0.0]], np.float32)
    got = scores.logit_scores(logits)
    assert got["msp"][0] < got["msp"][1] < 1.0
    assert got["entropy"][0] < got["entropy"][1] < 0.0


def test_predicted_class_is_argmax_with_first_max_on_ties():
    logits = np.array([[1, 3, 3], [2, 2, 2], [0, -1, 5]], np.float32)
    np.testing.assert_array_equal(scores.predicted_class(logits), [1, 0, 2])


def test_mahalanobis_matches_sklearn_covariance():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 400).astype(np.int32)  # class 4 of 5 never appears
    train[labels == 1] += 3.0
    features = rng.normal(size=(30, 6)).astype(np.float32)
    means = np.stack([train[labels == c].astype(np.float64).mean(0) for c in range(4)])
    covariance = EmpiricalCovariance(assume_centered=True).fit(train - means[labels])
    expected = -np.min(np.stack([covariance.mahalanobis(features - m) for m in means]), axis=0)
    got = scores.mahalanobis(features, train, labels, num_classes=5)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # The class means themselves are the most in-distribution points.
    at_means = scores.mahalanobis(means.astype(np.float32), train, labels, num_classes=5)
    assert np.all(at_means > got.max())


def test_mahalanobis_handles_rank_deficient_features():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(5, 8)).astype(np.float32)  # fewer examples than dimensions
    train[:, 7] = 0.0  # a dead unit
    got = scores.mahalanobis(rng.normal(size=(4, 8)).astype(np.float32), train,
                             np.array([0, 0, 1, 1, 1], np.int32), num_classes=2)
    assert np.isfinite(got).all()
    assert (got <= 0).all()


def test_knn_is_the_kth_cosine_similarity_minus_one():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(60, 5)).astype(np.float32)
    features = rng.normal(size=(11, 5)).astype(np.float32)
    features[0] = 0.0  # a zero vector has similarity 0 to everything
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = unit(features.astype(np.float64)) @ unit(train.astype(np.float64)).T
    for k in (1, 7, 60):
        expected = -np.sort(-similarity, axis=1)[:, k - 1] - 1.0
        np.testing.assert_allclose(scores.knn(features, train, k, chunk=4), expected,
                                   atol=1e-6)
    # k is capped at the number of train examples.
    np.testing.assert_array_equal(scores.knn(features, train, 500), scores.knn(features, train,
                                                                                60))
    assert scores.knn(features, train, 3)[0] == -1.0


@pytest.mark.parametrize(("num_train", "k"), [
    (50_000, 50),  # Sun et al.'s CIFAR setting
    (60_000, 60),  # Fashion-MNIST
    (1_347, 1),  # the digits config's training split
    (1_281_167, 1281),  # ImageNet-1k: Sun et al. use 1000 (ratio 1/1281), the CIFAR ratio 1281
    (12_812, 13),  # ImageNet's 1% sample: Sun et al. use 10
    (1_500, 2), (1_499, 1), (499, 1), (1, 1)])  # halves round up; never below 1
def test_default_knn_k_is_one_neighbour_per_thousand_train_examples(num_train, k):
    assert scores.default_knn_k(num_train) == k


def test_knn_without_k_uses_the_default_for_the_train_size():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(2_600, 4)).astype(np.float32)
    features = rng.normal(size=(9, 4)).astype(np.float32)
    np.testing.assert_array_equal(scores.knn(features, train), scores.knn(features, train, 3))
    assert not np.array_equal(scores.knn(features, train, 3), scores.knn(features, train, 50))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: scores.logit_scores(np.zeros((0, 3), np.float32)), "non-empty [N, K]"),
    (lambda: scores.knn(np.zeros((2, 3)), np.zeros((4, 2))), "share a feature dimension"),
    (lambda: scores.knn(np.zeros((2, 3)), np.zeros((4, 3)), 0), "k: must be at least 1"),
    (lambda: scores.mahalanobis(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(3, np.int32), 2),
     "one label per train feature row"),
])
def test_invalid_inputs_are_rejected(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_scoring_imports_neither_flax_nor_tensorflow():
    code = ("import sys, softlabel_ood.scoring, softlabel_ood.workdir.predictions, "
            "softlabel_ood.score; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'flax', 'tensorflow', 'sklearn', 'optax', 'orbax', 'tensorflow_datasets'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_kth_largest_by_bisection_matches_numpy_with_ties_signs_and_zeros():
    rng = np.random.default_rng(5)
    rows = np.concatenate([
        rng.normal(size=(20, 30)),
        np.round(rng.normal(size=(20, 30)), 1),  # heavy ties
        np.where(rng.random((20, 30)) < 0.5, 0.0, -rng.random((20, 30))),  # zeros, negatives
    ]).astype(np.float32)
    for k in (1, 7, 30):
        got = np.asarray(scores._kth_largest(rows, k))
        np.testing.assert_array_equal(got, np.sort(rows, axis=1)[:, -k])
