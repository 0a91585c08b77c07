"""Scores that need the classifier head (head.npz, predictions format v2 on) besides features.

Both use the penultimate features f (the `features` arrays: the globally pooled activations the
final dense layer reads, dimension D), the `id_train` split's features as the ID reference, and
the head: logits(f) = f @ W + b with W = kernel [D, K], b = bias [K].

    react  logsumexp_k logits(min(f, c))_k                                   (Sun et al. 2021)
           c: the REACT_PERCENTILE-th percentile (90, numpy's linear interpolation) of all
           D x N_train activation values of the id_train features. Clipping only from above;
           the energy of the rectified features at T = 1.
    vim    logsumexp_k logits(f)_k - s ||(f - o) R||                     (Wang et al. 2022)
           o = -pinv(W^T) b: the origin at which the logits vanish (in the least-squares sense);
           R [D, D - d]: the eigenvectors of (1/N) sum_i (g_i - o)(g_i - o)^T over the id_train
           features g_i, outside the d largest eigenvalues (the residual of the principal
           subspace); d = vim_dimension(D): 1000 for D >= 2048, 512 for D >= 768, else D // 2
           (the ViM code's rule). s = mean_i max_k logits(g_i)_k / mean_i ||(g_i - o) R||
           over the id_train features (the paper's α), so the virtual logit is on the scale of the
           real ones.

Computed in float64 from the saved float32 arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softlabel_ood.scoring import float64, score_records

HEAD_SCORES = score_records.reading("head")
REACT_PERCENTILE = 90.0

_HIGHEST = jax.lax.Precision.HIGHEST


def vim_dimension(feature_dim: int) -> int:
    """The principal subspace's dimension d in ViM, by the ViM code's rule."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return feature_dim // 2


def _logits(features, kernel, bias):
    return jnp.matmul(features, kernel, precision=_HIGHEST) + bias


@jax.jit
def _react(features, train_features, kernel, bias, percentile):
    clip = jnp.percentile(train_features.reshape(-1), percentile)
    return jax.nn.logsumexp(_logits(jnp.minimum(features, clip), kernel, bias), axis=-1)


def _vim(features, train_features, kernel, bias, dimension):
    origin = -jnp.matmul(jnp.linalg.pinv(kernel.T), bias, precision=_HIGHEST)
    centered = train_features - origin
    covariance = jnp.matmul(centered.T, centered, precision=_HIGHEST) / train_features.shape[0]
    _, eigenvectors = jnp.linalg.eigh(covariance)  # ascending eigenvalues
    residual_space = eigenvectors[:, :features.shape[1] - dimension]

    def residual_norm(x):
        return jnp.linalg.norm(jnp.matmul(x - origin, residual_space, precision=_HIGHEST),
                               axis=-1)

    scale = jnp.mean(jnp.max(_logits(train_features, kernel, bias), axis=-1)) \
        / jnp.mean(residual_norm(train_features))
    energy = jax.nn.logsumexp(_logits(features, kernel, bias), axis=-1)
    return energy - scale * residual_norm(features)


_vim_jit = jax.jit(_vim, static_argnames="dimension")


def _check(features, train_features, kernel, bias):
    features, train_features = np.asarray(features), np.asarray(train_features)
    kernel, bias = np.asarray(kernel), np.asarray(bias)
    if features.ndim != 2 or train_features.ndim != 2 or kernel.ndim != 2 \
            or features.shape[1] != train_features.shape[1] != kernel.shape[0] \
            or features.shape[1] != kernel.shape[0] or bias.shape != kernel.shape[1:] \
            or not len(train_features):
        raise ValueError(f"features {features.shape}, train_features {train_features.shape}, "
                         f"kernel {kernel.shape} and bias {bias.shape} do not fit "
                         "[N, D], [M > 0, D], [D, K] and [K]")
    return features, train_features, kernel, bias


def react(features, train_features, kernel, bias, *,
          percentile: float = REACT_PERCENTILE) -> np.ndarray:
    """The react score (module docstring) of each row of `features`, float64 [N]."""
    arrays = _check(features, train_features, kernel, bias)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile: {percentile} is outside [0, 100]")
    with float64.enabled():
        arrays = [jnp.asarray(a, jnp.float64) for a in arrays]
        return np.asarray(jax.device_get(_react(*arrays, percentile)))


def vim(features, train_features, kernel, bias, *, dimension: int | None = None) -> np.ndarray:
    """The vim score (module docstring) of each row of `features`, float64 [N]."""
    arrays = _check(features, train_features, kernel, bias)
    feature_dim = arrays[0].shape[1]
    dimension = vim_dimension(feature_dim) if dimension is None else dimension
    if not 0 <= dimension < feature_dim:
        raise ValueError(f"dimension: {dimension} is outside [0, {feature_dim})")
    with float64.enabled():
        arrays = [jnp.asarray(a, jnp.float64) for a in arrays]
        return np.asarray(jax.device_get(_vim_jit(*arrays, dimension=dimension)))
