"""ReAct and ViM against numpy implementations written from the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance

from softlabel_ood.scoring import head_scores


def _data(seed=0, d=12, k=5, n_train=300, n=40):
    rng = np.random.default_rng(seed)
    # Post-ReLU features (non-negative, some exact zeros), as penultimate features are.
    train = np.maximum(rng.normal(0.3, 1.0, (n_train, d)), 0).astype(np.float32)
    test = np.maximum(rng.normal(0.1, 1.3, (n, d)), 0).astype(np.float32)
    kernel = rng.normal(0, 0.5, (d, k)).astype(np.float32)
    bias = rng.normal(0, 0.2, k).astype(np.float32)
    return test, train, kernel, bias


def numpy_react(f, train, kernel, bias, percentile=90):
    """Sun et al. 2021: h̄ = min(h, c), c the p-th percentile of ID activations; energy score."""
    c = np.percentile(train.astype(np.float64).flatten(), percentile)
    logits = np.minimum(f.astype(np.float64), c) @ kernel.astype(np.float64) + bias
    return logsumexp(logits, axis=-1)


def numpy_vim(f, train, kernel, bias, dim):
    """Wang et al. 2022 (ViM), as the authors' code computes it with w = kernel.T [K, D]."""
    w, b = kernel.T.astype(np.float64), bias.astype(np.float64)
    f, train = f.astype(np.float64), train.astype(np.float64)
    u = -np.matmul(np.linalg.pinv(w), b)
    ec = EmpiricalCovariance(assume_centered=True)
    ec.fit(train - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    ns = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T)
    vlogit_train = np.linalg.norm(np.matmul(train - u, ns), axis=-1)
    alpha = (train @ w.T + b).max(axis=-1).mean() / vlogit_train.mean()
    vlogit = np.linalg.norm(np.matmul(f - u, ns), axis=-1) * alpha
    return -vlogit + logsumexp(f @ w.T + b, axis=-1)


@pytest.mark.parametrize("percentile", [90, 50, 99.5])
def test_react_matches_the_formula(percentile):
    f, train, kernel, bias = _data(1)
    got = head_scores.react(f, train, kernel, bias, percentile=percentile)
    np.testing.assert_allclose(got, numpy_react(f, train, kernel, bias, percentile), rtol=1e-12)
    # Clipping matters: at the 50th percentile the score differs from the plain energy.
    energy = logsumexp(f.astype(np.float64) @ kernel + bias, axis=-1)
    assert not np.allclose(got, energy)


@pytest.mark.parametrize(("d", "dim"), [(12, None), (12, 3), (9, 8)])
def test_vim_matches_the_formula(d, dim):
    f, train, kernel, bias = _data(2, d=d)
    expected_dim = d // 2 if dim is None else dim
    got = head_scores.vim(f, train, kernel, bias, dimension=dim)
    np.testing.assert_allclose(got, numpy_vim(f, train, kernel, bias, expected_dim),
                               rtol=1e-9, atol=1e-9)


def test_vim_dimension_follows_the_vim_code():
    assert [head_scores.vim_dimension(d) for d in (64, 128, 512, 768, 2048, 4096)] == \
        [32, 64, 256, 512, 1000, 1000]


@pytest.mark.parametrize(("call", "message"), [
    (lambda f, t, k, b: head_scores.react(f, t, k[:3], b), "do not fit"),
    (lambda f, t, k, b: head_scores.vim(f, t[:, :4], k, b), "do not fit"),
    (lambda f, t, k, b: head_scores.react(f, t, k, b, percentile=101), "percentile: 101"),
    (lambda f, t, k, b: head_scores.vim(f, t, k, b, dimension=12), "dimension: 12 is outside"),
])
def test_invalid_inputs_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call(*_data())
