"""Selective classification: how well a score ranks a model's own ID test predictions, right
before wrong (DESIGN.md §6; sources in docs/scores_and_metrics.md).

For the n examples of the ID test split, with top-1 correctness from the logits and a score
(higher = more confident):

    aurc         area under the risk-coverage curve (Geifman et al. 2019): the examples sorted by
                 decreasing score, the selective risk at coverage i/n is the error rate among the
                 first i; AURC is the mean of the n risks. Tied scores are exact and order-free:
                 within a block of m tied examples holding e errors, after c examples with E
                 errors, the risk at the block's j-th position is (E + j e / m) / (c + j)
    eaurc        aurc minus the AURC of a perfect score at the same error rate r,
                 r + (1 - r) ln(1 - r)
    error_auroc  roc_auc_score(correct, s): correct predictions are the positives
    error_fpr95  the fraction of wrong predictions accepted at the highest threshold that accepts
                 at least 95% of the correct ones (the `fpr95` rule, correct as "ID")

error_auroc and error_fpr95 are the OOD metrics with the correct predictions in the ID role and
the wrong ones in the OOD role, computed by `metrics.ood_metrics`; they are undefined, and left
out, when every prediction is right or every one is wrong.

The sorting and counting behind the AURC are exact integer work, done with numpy (`rank_counts`);
the risks are computed and summed in one compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softlabel_ood.scoring import float64, metric_records, metrics, rank_counts
from softlabel_ood.scoring.metrics import ScoringError

SELECTIVE_METRICS = metric_records.names("selective")  # what this module computes
# The OOD metric that gives each error metric, with the correct predictions as positives.
_FROM_OOD_METRIC = {"error_auroc": "auroc", "error_fpr95": "fpr95"}


@jax.jit
def _aurc_from_counts(keys, errors_through, errors_before, sizes):
    """AURC of each row from its sorted keys and, at each position, the errors at or above its
    score and strictly above it. Within a tie block the order is irrelevant: the block's risks
    depend only on its start c, size m, the errors E above it and e within it."""
    n_slots = keys.shape[-1]
    position = jnp.arange(n_slots)

    def row(keys, through, before, size):
        starts = jnp.concatenate([jnp.array([True]), keys[1:] != keys[:-1]])
        ends = jnp.concatenate([keys[1:] != keys[:-1], jnp.array([True])])
        c = jax.lax.cummax(jnp.where(starts, position, 0))
        m = jax.lax.cummin(jnp.where(ends, position + 1, n_slots), reverse=True) - c
        e = (through - before).astype(jnp.float64)
        j = (position - c + 1).astype(jnp.float64)
        risk = (before + j * e / m) / (c + j)
        return jnp.sum(jnp.where(position < size, risk, 0.0)) / size

    return jax.vmap(row)(keys, errors_through, errors_before, sizes)


def _aurc(scores, errors, sizes):
    # Keys of the negated scores sort by decreasing score; padding last.
    keys = rank_counts.sorted_keys(-scores, sizes)
    error_keys = np.where(errors, rank_counts.order_keys(-scores), rank_counts.PAD_KEY)
    error_keys.sort(axis=-1)
    # Errors with a key <= k and < k.
    through = rank_counts.count_at_most(error_keys, keys)
    before = rank_counts.count_at_most(error_keys, keys, strictly=True)
    return _aurc_from_counts(keys, through, before, sizes)


def _optimal_aurc(error_rate: np.ndarray) -> np.ndarray:
    """r + (1 - r) ln(1 - r), the AURC of a score that ranks every error last (0 ln 0 = 0)."""
    kept = 1.0 - error_rate
    return error_rate + np.where(kept > 0, kept * np.log(np.where(kept > 0, kept, 1.0)), 0.0)


def selective_metrics(scores, correct, *, sizes=None) -> dict[str, np.ndarray]:
    """SELECTIVE_METRICS of G rows at once.

    Args:
      scores: [G, n] ID test scores, one row per (run, score).
      correct: [G, n] whether each example's top-1 prediction is right.
      sizes: [G] number of valid leading entries of each row (default: all n); the rest is
        padding and never read.
    Returns {metric: float64 [G]}; error_auroc and error_fpr95 are NaN for a row whose
    predictions are all right or all wrong.
    """
    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    if scores.ndim != 2 or correct.shape != scores.shape or not scores.shape[1]:
        raise ScoringError(f"selective_metrics: expected scores and correct of one shape [G, n] "
                           f"with n > 0, got {scores.shape} and {correct.shape}")
    groups, n = scores.shape
    sizes = np.full(groups, n, np.int64) if sizes is None else np.asarray(sizes, np.int64)
    if sizes.shape != (groups,) or (groups and (sizes.min() < 1 or sizes.max() > n)):
        raise ScoringError(f"sizes: expected {groups} integers in [1, {n}]")
    valid = np.arange(n) < sizes[:, None]
    if (valid & ~np.isfinite(scores)).any():
        raise ScoringError(f"scores: {int((valid & ~np.isfinite(scores)).sum())} NaN or "
                           "infinite scores")
    if not groups:
        return {m: np.zeros(0) for m in SELECTIVE_METRICS}
    errors = valid & ~correct
    with float64.enabled():
        aurc = np.asarray(jax.device_get(_aurc(scores, errors, sizes)), np.float64)
    out = {"aurc": aurc, "eaurc": aurc - _optimal_aurc(errors.sum(1) / sizes)}
    out.update(_error_detection(scores, valid & correct, errors))
    return out


def _error_detection(scores, right, wrong) -> dict[str, np.ndarray]:
    """error_auroc and error_fpr95: each row's correct scores against its wrong ones."""
    num_right, num_wrong = right.sum(1), wrong.sum(1)
    defined = (num_right > 0) & (num_wrong > 0)
    out = {m: np.full(scores.shape[0], np.nan) for m in _FROM_OOD_METRIC}
    if not defined.any():
        return out
    rows = np.flatnonzero(defined)
    # Each row's correct and wrong scores packed to the front of their own arrays.
    right_scores = np.zeros((len(rows), max(1, num_right[rows].max())))
    wrong_scores = np.zeros((len(rows), 1, max(1, num_wrong[rows].max())))
    for i, g in enumerate(rows):
        right_scores[i, :num_right[g]] = scores[g][right[g]]
        wrong_scores[i, 0, :num_wrong[g]] = scores[g][wrong[g]]
    ood = metrics.ood_metrics(right_scores, wrong_scores, id_sizes=num_right[rows],
                              ood_sizes=num_wrong[rows][:, None])
    for metric, source in _FROM_OOD_METRIC.items():
        out[metric][rows] = ood[source][:, 0]
    return out


def risk_coverage(scores, correct) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve of one score, for plotting: (coverage, selective risk) at the end
    of each block of tied scores, examples by decreasing score (a tie is accepted as a whole)."""
    scores = np.asarray(scores, np.float64)
    errors = ~np.asarray(correct, bool)
    if scores.ndim != 1 or errors.shape != scores.shape or not scores.size:
        raise ScoringError(f"risk_coverage: expected two non-empty [n] arrays, got "
                           f"{scores.shape} and {errors.shape}")
    order = np.argsort(-scores, kind="stable")
    ends = np.append(np.diff(scores[order]) != 0, True)
    accepted = np.arange(1, scores.size + 1)[ends]
    return accepted / scores.size, np.cumsum(errors[order])[ends] / accepted
