"""OOD scores: in-distribution confidences, higher means more in-distribution (DESIGN.md §6).

From the logits l (K classes) of one example, with p = softmax(l):

    msp          max_k p_k                                       (Hendrycks & Gimpel 2017)
    max_logit    max_k l_k                                       (Hendrycks et al. 2022)
    energy       logsumexp_k l_k, i.e. -E(x) at temperature T = 1 (Liu et al. 2020)
    entropy      sum_k p_k log p_k, the negative Shannon entropy of p
    pnorm        max_k (l_k - mean(l)) / ||l - mean(l)||_p, MaxLogit-pNorm (Cattelan & Silva
                 2024): the post-hoc logit normalisation that recovers selective
                 classification after label smoothing (Xia et al. 2025); p = 2 unless the
                 run's config.pnorm_p says otherwise; 0 when all logits are equal

From penultimate features f, given the `id_train` split's features and labels:

    mahalanobis  -min_c (f - mu_c)^T Sigma^+ (f - mu_c)                 (Lee et al. 2018)
                 the vanilla variant on the last layer's features, as OpenOOD's MDS: no input
                 preprocessing, no ensemble of layers (Lee et al.'s headline configuration).
                 mu_c: mean feature of train class c (classes absent from the train split are
                 left out of the min); Sigma: the shared covariance
                 (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T over the N train examples;
                 Sigma^+: its pseudo-inverse, dropping eigenvalues below
                 lambda_max * D * 2.2e-16 (penultimate ReLU features are often rank-deficient).
                 The squared distance ranks examples exactly as the distance does.
    knn          -(1 - cos(f, f_(k))) = cos(f, f_(k)) - 1, where f_(k) is the train feature with
                 the k-th largest cosine similarity to f; by default k = default_knn_k(N_train),
                 one neighbour per 1,000 train examples (capped at their number). Equals
                 -||z - z_(k)||^2 / 2 for the L2-normalised
                 features z, so it ranks examples exactly as Sun et al. (2022)'s
                 -||z - z_(k)||. A zero feature vector has similarity 0 to everything.

Logit scores and mahalanobis are computed in float64 from the float32 outputs (near-saturated
softmax confidences must not collapse into ties); knn's similarities are float32 matrix products
at full precision, which is ample for a rank statistic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from softlabel_ood.scoring import float64, score_records

# The scores of one pass over the logits (`logit_scores`), as their records name them.
LOGIT_SCORES = score_records.fused("logit_scores")
# Logit scores computed with a parameter (config.pnorm_p), outside `logit_scores`.
POSTHOC_SCORES = tuple(s for s in score_records.reading("logits") if s not in LOGIT_SCORES)
DEFAULT_PNORM_P = score_records.PNORM_P.default
FEATURE_SCORES = tuple(s for s in score_records.reading("id_train", "features")
                       if "head" not in score_records.get(s).inputs)
# Sun et al. (2022) use k = 50 for CIFAR-10's 50,000 training images, and on ImageNet scale k
# with the fraction of the training set they search (k = 1000 for all of it, k = 10 for 1%).
KNN_TRAIN_PER_NEIGHBOUR = 1000


def default_knn_k(num_train: int) -> int:
    """k of the knn score for `num_train` train examples: Sun et al.'s k = 50 for 50,000,
    scaled with the train set's size (one neighbour per 1,000 examples, rounded, at least 1)."""
    return max(1, (num_train + KNN_TRAIN_PER_NEIGHBOUR // 2) // KNN_TRAIN_PER_NEIGHBOUR)


_HIGHEST = jax.lax.Precision.HIGHEST
# Rows per chunk of the logit scores' float64 work: small enough to stay in cache.
_CHUNK = 128


# Per-score definitions on arrays in the caller's dtype, for use inside other jitted code.

def msp(logits: jax.Array) -> jax.Array:
    top = jnp.max(logits, axis=-1, keepdims=True)
    return 1.0 / jnp.sum(jnp.exp(logits - top), axis=-1)


def max_logit(logits: jax.Array) -> jax.Array:
    return jnp.max(logits, axis=-1)


def energy(logits: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(logits, axis=-1)


def entropy(logits: jax.Array) -> jax.Array:
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _pnorm_rows(logits, p):
    """pnorm of [B, K] logits in float64; p is a Python number (2 takes the square root path)."""
    logits = logits.astype(jnp.float64)
    centered = logits - jnp.mean(logits, axis=-1, keepdims=True)
    top = jnp.max(centered, axis=-1)
    if p == 2:
        norm = jnp.sqrt(jnp.sum(centered * centered, axis=-1))
    else:
        # Scaled by the largest magnitude first: |x|^p of raw logits overflows for large p.
        scale = jnp.max(jnp.abs(centered), axis=-1, keepdims=True)
        unit = jnp.abs(centered) / jnp.where(scale > 0, scale, 1.0)
        norm = jnp.sum(unit ** p, axis=-1) ** (1.0 / p) * scale[:, 0]
    return jnp.where(norm > 0, top / jnp.where(norm > 0, norm, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames="p")
def pnorm_jax(logits, p: float) -> jax.Array:
    """The pnorm score (module docstring) of [N, K] logits, in float64 when the caller has
    enabled it, dispatched without waiting; `p` >= 1 is compiled in."""
    # In row chunks, as logit_scores_jax, to keep the float64 intermediates in cache.
    n = logits.shape[0]
    chunks = -(-n // _CHUNK)
    padded = jnp.pad(logits, ((0, chunks * _CHUNK - n), (0, 0)))
    return jax.lax.map(lambda rows: _pnorm_rows(rows, p),
                       padded.reshape(chunks, _CHUNK, -1)).reshape(-1)[:n]


def pnorm(logits, p: float = DEFAULT_PNORM_P) -> np.ndarray:
    """The pnorm score (module docstring) of each row of [N, K] logits, float64 [N]."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits: expected a non-empty [N, K] array, got {logits.shape}")
    check_pnorm_p(p)
    with float64.enabled():
        return np.asarray(jax.device_get(pnorm_jax(logits, float(p))))


def check_pnorm_p(p) -> None:
    problem = score_records.PNORM_P.problem(p)
    if problem is not None:
        raise ValueError(problem)


def _logit_scores_rows(logits):
    """{score: [B] float64} for LOGIT_SCORES, from one pass over the exponentials of [B, K]
    logits."""
    top = jnp.max(logits, axis=-1).astype(jnp.float64)
    shifted = logits.astype(jnp.float64) - top[:, None]
    e = jnp.exp(shifted)
    z = jnp.sum(e, axis=-1)  # >= 1: the top class contributes exp(0)
    log_z = jnp.log(z)
    # sum_k p_k log p_k = sum_k e_k (l_k - top) / z - log z: no cancellation against logsumexp.
    neg_entropy = jnp.sum(e * shifted, axis=-1) / z - log_z
    return {"msp": 1.0 / z, "max_logit": top, "energy": top + log_z, "entropy": neg_entropy}


@jax.jit
def logit_scores_jax(logits) -> dict[str, jax.Array]:
    """The computation behind `logit_scores`: {score: [N]} for LOGIT_SCORES from JAX logits,
    dispatched without waiting, so callers can overlap it with reading the next run; float64
    must be enabled by the caller."""
    # Small row chunks keep the float64 intermediates in cache: on CPU this is several times
    # faster than materialising [N, K] float64 arrays.
    n = logits.shape[0]
    chunks = -(-n // _CHUNK)
    padded = jnp.pad(logits, ((0, chunks * _CHUNK - n), (0, 0)))
    scores = jax.lax.map(_logit_scores_rows, padded.reshape(chunks, _CHUNK, -1))
    return {name: v.reshape(-1)[:n] for name, v in scores.items()}


def logit_scores(logits) -> dict[str, np.ndarray]:
    """{score: float64 [N]} for LOGIT_SCORES, from logits [N, K]."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits: expected a non-empty [N, K] array, got {logits.shape}")
    with float64.enabled():
        scores = jax.device_get(logit_scores_jax(logits))
    return {name: np.asarray(scores[name]) for name in LOGIT_SCORES}


@jax.jit
def predicted_class_jax(logits) -> jax.Array:
    """The computation behind `predicted_class`, traceable inside a caller's jit."""
    # The first class attaining the max, as argmax picks it; argmax itself lowers to a variadic
    # reduction that is several times slower on CPU.
    top = jnp.max(logits, axis=-1, keepdims=True)
    classes = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(logits == top, classes, logits.shape[-1]), axis=-1)


def predicted_class(logits) -> np.ndarray:
    """argmax over classes (the first maximum), int32 [N], from logits [N, K]."""
    return np.asarray(jax.device_get(predicted_class_jax(np.asarray(logits))))


@functools.partial(jax.jit, static_argnames="num_classes")
def _mahalanobis(features, train_features, train_labels, num_classes):
    train = train_features.astype(jnp.float64)
    counts = jax.ops.segment_sum(jnp.ones(train.shape[0]), train_labels, num_classes)
    means = jax.ops.segment_sum(train, train_labels, num_classes) / jnp.maximum(counts, 1)[:, None]
    centered = train - means[train_labels]
    covariance = jnp.matmul(centered.T, centered, precision=_HIGHEST) / train.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
    tolerance = jnp.max(eigenvalues) * covariance.shape[0] * jnp.finfo(jnp.float64).eps
    inv_sqrt = jnp.where(eigenvalues > tolerance,
                         1.0 / jnp.sqrt(jnp.where(eigenvalues > tolerance, eigenvalues, 1.0)), 0.0)
    whiten = eigenvectors * inv_sqrt  # whiten @ whiten.T == Sigma^+
    z = jnp.matmul(features.astype(jnp.float64), whiten, precision=_HIGHEST)
    m = jnp.matmul(means, whiten, precision=_HIGHEST)
    squared = (jnp.sum(z * z, axis=1)[:, None] - 2.0 * jnp.matmul(z, m.T, precision=_HIGHEST)
               + jnp.sum(m * m, axis=1)[None, :])
    squared = jnp.where(counts[None, :] > 0, jnp.maximum(squared, 0.0), jnp.inf)
    return -jnp.min(squared, axis=1)


def mahalanobis(features, train_features, train_labels, num_classes: int) -> np.ndarray:
    """The mahalanobis score (module docstring) of each row of `features`, float64 [N]."""
    features, train_features = np.asarray(features), np.asarray(train_features)
    train_labels = np.asarray(train_labels)
    if features.ndim != 2 or train_features.ndim != 2 \
            or features.shape[1] != train_features.shape[1]:
        raise ValueError(f"features: shapes {features.shape} and {train_features.shape} do not "
                         "share a feature dimension")
    if train_labels.shape != train_features.shape[:1] or not len(train_labels):
        raise ValueError("train_labels: expected one label per train feature row")
    with float64.enabled():
        return np.asarray(jax.device_get(
            _mahalanobis(features, train_features, train_labels, num_classes)))


def _kth_largest(values, k: int):
    """The k-th largest of each row of float32 `values` [B, M], exactly (ties counted).

    A bisection over the 32 bits of order-preserving int32 keys: the largest key t with at
    least k keys >= t is the k-th largest. 32 passes of compare-and-count over the rows are
    about 10x faster on CPU than lax.top_k or a sort, which XLA's CPU backend runs slowly.
    """
    bits = jax.lax.bitcast_convert_type(values, jnp.int32)
    flip = jnp.int32(0x7FFF_FFFF)  # negative floats order backwards by their magnitude bits
    keys = jnp.where(bits < 0, bits ^ flip, bits)
    found = jnp.full(values.shape[:1], jnp.iinfo(jnp.int32).min, jnp.int32)
    for bit in range(31, -1, -1):
        # From the sign bit down: keep the bit set when enough keys lie at or above.
        candidate = found ^ jnp.int32(-(1 << 31)) if bit == 31 else found + jnp.int32(1 << bit)
        enough = jnp.sum(keys >= candidate[:, None], axis=1) >= k
        found = jnp.where(enough, candidate, found)
    return jax.lax.bitcast_convert_type(jnp.where(found < 0, found ^ flip, found), jnp.float32)


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "chunk"))
def _knn(features, train_features, k, chunk):
    train = _normalize(train_features.astype(jnp.float32))
    n = features.shape[0]
    num_chunks = -(-n // chunk)
    queries = jnp.pad(_normalize(features.astype(jnp.float32)), ((0, num_chunks * chunk - n),
                                                                  (0, 0)))

    def kth_similarity(q):
        # The similarity matrix is built a chunk of queries at a time: [n, N_train] at once would
        # not fit in memory for CIFAR-sized splits.
        similarity = jnp.matmul(q, train.T, precision=_HIGHEST)
        return _kth_largest(similarity, k)

    kth = jax.lax.map(kth_similarity, queries.reshape(num_chunks, chunk, -1)).reshape(-1)[:n]
    return kth.astype(jnp.float64) - 1.0


def knn(features, train_features, k: int | None = None, *, chunk: int = 512) -> np.ndarray:
    """The knn score (module docstring) of each row of `features`, float64 [N]; k defaults to
    default_knn_k(number of train features)."""
    features, train_features = np.asarray(features), np.asarray(train_features)
    if features.ndim != 2 or train_features.ndim != 2 \
            or features.shape[1] != train_features.shape[1] or not len(train_features):
        raise ValueError(f"features: shapes {features.shape} and {train_features.shape} do not "
                         "share a feature dimension")
    if k is None:
        k = default_knn_k(train_features.shape[0])
    if k < 1:
        raise ValueError(f"k: must be at least 1, got {k}")
    k = min(k, train_features.shape[0])
    chunk = max(1, min(chunk, features.shape[0]))
    with float64.enabled():
        return np.asarray(jax.device_get(_knn(features, train_features, k, chunk)))
