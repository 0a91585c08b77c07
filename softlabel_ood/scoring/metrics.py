"""OOD detection metrics for many (ID, OOD) score pairs at once, with scikit-learn's tie semantics.

Definitions (DESIGN.md §6; ID test examples are the positives, label 1; OOD examples label 0;
a score is higher for "more in-distribution"):

    auroc               roc_auc_score(y, s)
    aupr_in             average_precision_score(y, s)
    aupr_out            average_precision_score(1 - y, -s)
    fpr95               fpr[argmax(tpr >= 0.95)], where
                        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    tnr95               1 - fpr95
    fpr95_ood_positive  the same rule with OOD as the positive class and -s as its score
    fpr95_oe            the Outlier Exposure code's fpr_and_fdr_at_recall(y_ood, -s, 0.95)
                        (OOD positive): among the ROC points up to full recall, scanned from
                        high recall down, the first whose recall is nearest 0.95; the fraction
                        of ID examples it accepts as OOD
    detection_acc       max over the ROC points of 0.5 * (tpr + 1 - fpr)
    accuracy            mean(argmax(logits) == label) on the ID test split
    ece                 sum over 15 equal-width bins (lo, hi] of (n_b / n) |acc_b - conf_b|, with
                        conf = max softmax probability and a confidence c in bin (lo, hi] when
                        lo < c <= hi

How they are computed without a loop over thresholds. Tied scores form one ROC point (a
threshold accepts all of a tie or none of it), so every metric is a function of counts at the
distinct score values. For P ID scores u and N OOD scores v:

    ID example i:   id_ge  = #{u >= u_i}, ood_lt = #{v < u_i}
    OOD example j:  ood_le_self = #{v <= v_j}, id_le = #{u <= v_j}, id_lt = #{u < v_j}

    auroc         = sum_j (2P - id_le - id_lt) / (2 P N)       (Mann-Whitney, ties count 1/2)
    aupr_in       = mean_i  id_ge / (id_ge + (N - ood_lt))     (each positive adds 1/P recall at
                                                                its threshold's precision)
    aupr_out      = mean_j  ood_le_self / (ood_le_self + id_le)
    fpr95         = min_i { (N - ood_lt) / N  :  id_ge / P >= 0.95 }
    fpr95_ood_pos = min_j { id_le / P  :  ood_le_self / N >= 0.95 }
    fpr95_oe      = #{u < v_(t+1)} / P (#{u <= max v} / P when t = N), where t is the value of
                    ood_le_self nearest 0.95 N (|t / N - 0.95| in float64, as the OE code
                    computes it; the larger t on an exact tie) and v_(t+1) the (t+1)-th smallest
                    OOD score: the lowest point of t's recall plateau in the OE code's scan.
                    The two candidates nearest in exact arithmetic (integers: 20 t against
                    19 N) are counted exactly; numpy's correctly rounded float64 division
                    chooses between them, as in the OE code
    detection_acc = max(0.5, max_i 0.5 * (id_ge / P + 1 - (N - ood_lt) / N))

Only ID scores need to be visited for fpr95 and detection_acc: moving a threshold up past a group
of OOD-only scores lowers fpr without changing tpr, so the first ROC point with tpr >= 0.95 and
the best detection accuracy sit at ID scores (or at the (0, 0) point, which gives 0.5).
The tpr >= 0.95 tests compare integers, 20 t >= 19 P: the same decision as scikit-learn's float64
t / P >= 0.95 (a boundary case such as 19 of 20 included), without relying on XLA's division,
which on CPU multiplies by the reciprocal and is not correctly rounded.

Each (run, score) group sorts its ID scores once and shares them across all its OOD splits; each
OOD split is sorted once and located in the ID order with one binary search: exact integer work,
done with numpy (`rank_counts`). One compiled program for the whole batch takes it from there:
counts for the ID examples from a histogram of those positions and a cumulative sum, then the
floating-point arithmetic, whose last bits depend on the program and the shapes XLA compiles it
for (the order of its sums), so both stay as they are: `padded_shape` rounds each axis up to a
bucket, and splits of different sizes share one array through padding, padded entries sorting
last and masked out of every count and sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softlabel_ood.cli_errors import UserError
from softlabel_ood.scoring import float64, metric_records, rank_counts, scores

# What this module computes: the records' OOD-pair and ID metrics (`metric_records`), in the
# order metrics.csv lists them.
METRICS = metric_records.names("ood")
ID_METRICS = metric_records.names("id")
ECE_BINS = 15

class ScoringError(UserError):
    """Scores or arrays that the metrics cannot be computed from."""


def _one_pair(id_sorted, id_first, id_size, ood_sorted, id_le, ood_size):
    """All metrics of one (ID, OOD) pair from sorted keys and id_le_j = #ID <= v_j."""
    num_id_slots, num_ood_slots = id_sorted.shape[0], ood_sorted.shape[0]
    f64 = jnp.float64
    p = id_size.astype(f64)
    n = ood_size.astype(f64)
    id_valid = jnp.arange(num_id_slots) < id_size
    ood_valid = jnp.arange(num_ood_slots) < ood_size

    # #OOD <= v_j: the index one past the end of v_j's tie group in the sorted OOD keys.
    ends = jnp.concatenate([ood_sorted[1:] != ood_sorted[:-1], jnp.array([True])])
    ood_le_self = jax.lax.cummin(
        jnp.where(ends, jnp.arange(1, num_ood_slots + 1), num_ood_slots), reverse=True)

    # #ID < v_j from #ID <= v_j, by stepping back over a tie with ID scores.
    before = jnp.maximum(id_le - 1, 0)
    tied = (id_le > 0) & (id_sorted[before] == ood_sorted)
    id_lt = jnp.where(tied, id_first[before], id_le)

    # v_j < u_i exactly when id_le_j <= i: a histogram of those positions, summed cumulatively,
    # counts the OOD scores below each ID score.
    histogram = jnp.zeros(num_id_slots + 1, jnp.int32).at[id_le].add(ood_valid.astype(jnp.int32))
    ood_lt = jnp.cumsum(histogram)[:num_id_slots]

    id_ge = id_size - id_first
    ood_ge = ood_size - ood_lt
    tpr = id_ge.astype(f64) / p
    fpr = ood_ge.astype(f64) / n

    # Mann-Whitney from the OOD side: #ID > v_j + #ID == v_j / 2 = P - (id_le_j + id_lt_j) / 2.
    auroc = jnp.sum(jnp.where(ood_valid, 2 * id_size - id_le.astype(jnp.int64) - id_lt, 0)) \
        / (2.0 * p * n)
    aupr_in = jnp.sum(jnp.where(id_valid, id_ge.astype(f64) / (id_ge + ood_ge), 0.0)) / p
    # Recall >= 0.95 as integers, 20 t >= 19 P: exactly scikit-learn's float64 t / P >= 0.95
    # (float64 rounding cannot cross 0.95 for fewer than 10^14 examples), while XLA's CPU
    # division, through the reciprocal, is not correctly rounded.
    fpr95 = jnp.min(jnp.where(id_valid & (20 * id_ge >= 19 * id_size), fpr, jnp.inf))
    detection_acc = jnp.maximum(
        0.5, jnp.max(jnp.where(id_valid, 0.5 * (tpr + 1.0 - fpr), -jnp.inf)))

    fpr95_ood = jnp.min(jnp.where(ood_valid & (20 * ood_le_self >= 19 * ood_size),
                                  id_le.astype(f64) / p, jnp.inf))
    aupr_out = jnp.sum(jnp.where(
        ood_valid, ood_le_self.astype(f64) / (ood_le_self + id_le), 0.0)) / n

    t_below, t_above, oe_fpr_below, oe_fpr_above = _oe_cut_candidates(
        ood_le_self, ood_valid, ood_size, id_lt, id_le, p)
    values = {"auroc": auroc, "aupr_in": aupr_in, "aupr_out": aupr_out, "fpr95": fpr95,
              "tnr95": 1.0 - fpr95, "fpr95_ood_positive": fpr95_ood,
              "detection_acc": detection_acc, "oe_fpr_below": oe_fpr_below,
              "oe_fpr_above": oe_fpr_above}
    exists = (id_size > 0) & (ood_size > 0)
    out = {k: jnp.where(exists, v, jnp.nan) for k, v in values.items()}
    return {**out, "oe_t_below": t_below, "oe_t_above": t_above}


def _oe_cut_candidates(ood_le_self, ood_valid, ood_size, id_lt, id_le, p):
    """The OE code's cut: the recall t / N nearest 0.95. In exact arithmetic the nearest are the
    largest t with 20 t <= 19 N and the smallest with 20 t >= 19 N (integers); which of the two
    the OE code takes is decided by float64 rounding, on the host (_oe_cut). Returns both t and
    the FPR at each: at t, the plateau's lowest threshold, just below the next OOD score,
    accepts the most ID examples as OOD."""
    num_ood_slots = ood_le_self.shape[0]
    recalls = jnp.where(ood_valid, ood_le_self, 0)
    t_below = jnp.max(jnp.where(20 * recalls <= 19 * ood_size, recalls, 0))
    t_above = jnp.min(jnp.where(ood_valid & (20 * recalls >= 19 * ood_size), recalls, ood_size))
    last = jnp.maximum(ood_size - 1, 0)

    def oe_fpr(t):
        return jnp.where(t < ood_size, id_lt[jnp.minimum(t, num_ood_slots - 1)], id_le[last]) / p

    return t_below, t_above, oe_fpr(t_below), oe_fpr(t_above)


def _one_group(id_sorted, id_size, ood_sorted, id_le, ood_sizes):
    """One (run, score): its sorted ID keys are shared by all of its OOD splits."""
    starts = jnp.concatenate([jnp.array([True]), id_sorted[1:] != id_sorted[:-1]])
    # Index of the first element of each tie group, so #ID >= u_i = P - id_first_i.
    id_first = jax.lax.cummax(jnp.where(starts, jnp.arange(id_sorted.shape[0]), 0))
    return jax.vmap(_one_pair, in_axes=(None, None, None, 0, 0, 0))(
        id_sorted, id_first, id_size, ood_sorted, id_le, ood_sizes)


_metrics_from_counts = jax.jit(jax.vmap(_one_group))


def _batched(id_scores, id_sizes, ood_scores, ood_sizes) -> dict[str, np.ndarray]:
    """METRICS but fpr95_oe, and fpr95_oe's two candidates, for G groups: ID rows [G, P]
    against OOD rows [G, O, N] (float64 scores)."""
    id_sorted = rank_counts.sorted_keys(id_scores, id_sizes)
    ood_sorted = rank_counts.sorted_keys(ood_scores, ood_sizes)
    id_le = rank_counts.count_at_most(id_sorted, ood_sorted)
    with float64.enabled():
        return jax.device_get(
            _metrics_from_counts(id_sorted, id_sizes, ood_sorted, id_le, ood_sizes))


def _oe_cut(out: dict[str, np.ndarray], ood_sizes: np.ndarray) -> np.ndarray:
    """fpr95_oe from its two candidates: the recall nearest 0.95 from below and from above.

    Which one the OE code takes is decided by float64 rounding: it computes |t / N - 0.95|
    with numpy, so 36/40 = 0.9 is nearer than 40/40 = 1.0 though both are 0.05 away. The same
    numpy expression decides here, on the host: XLA on CPU divides by a scalar through its
    reciprocal, which is not correctly rounded and so can break such a tie the other way. The
    OE code's scan meets the larger t first, so it wins an equal distance.
    """
    n = np.maximum(ood_sizes, 1).astype(np.float64)  # 0 marks an absent split: NaN either way
    below = np.abs(out.pop("oe_t_below") / n - 0.95)
    above = np.abs(out.pop("oe_t_above") / n - 0.95)
    return np.where(below < above, out.pop("oe_fpr_below"), out.pop("oe_fpr_above"))


def _bucket(n: int, minimum: int) -> int:
    """n rounded up to at most 1/8 more, so repeated calls reuse a few compiled shapes."""
    n = max(n, minimum)
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def padded_shape(groups: int, num_ood: int, id_len: int, ood_len: int) -> tuple[int, ...]:
    """The (G, O, P, N) that ood_metrics pads its inputs to before compiling."""
    return _bucket(groups, 1), _bucket(num_ood, 1), _bucket(id_len, 64), _bucket(ood_len, 64)


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape == shape:
        return array
    padded = np.zeros(shape, array.dtype)
    padded[tuple(slice(0, d) for d in array.shape)] = array
    return padded


def _sizes(sizes, shape: tuple[int, ...], full: int, name: str, smallest: int) -> np.ndarray:
    if sizes is None:
        return np.full(shape, full, np.int64)
    sizes = np.asarray(sizes)
    if sizes.shape != shape or not np.issubdtype(sizes.dtype, np.integer):
        raise ScoringError(f"{name}: expected integers of shape {shape}, got {sizes.dtype} "
                           f"{sizes.shape}")
    if sizes.size and (sizes.min() < smallest or sizes.max() > full):
        raise ScoringError(f"{name}: sizes must lie in [{smallest}, {full}]")
    return sizes.astype(np.int64)


def _check_finite(name: str, scores: np.ndarray, sizes: np.ndarray) -> None:
    valid = np.arange(scores.shape[-1]) < sizes[..., None]
    bad = valid & ~np.isfinite(scores)
    if bad.any():
        raise ScoringError(f"{name}: {int(bad.sum())} NaN or infinite scores")


def ood_metrics(id_scores, ood_scores, *, id_sizes=None, ood_sizes=None) -> dict[str, np.ndarray]:
    """Every metric in METRICS for a batch of (ID, OOD) pairs.

    Args:
      id_scores: [..., P] ID test scores, one row per (run, score) group.
      ood_scores: [..., O, N] OOD scores: O OOD splits per group.
      id_sizes: [...] number of valid leading entries of each ID row (default: all P).
      ood_sizes: [..., O] number of valid leading entries of each OOD row (default: all N);
        0 marks an absent split, whose metrics are NaN.

    Entries past a row's size are padding and never read. Returns {metric: float64 [..., O]}.
    """
    id_scores = np.asarray(id_scores, dtype=np.float64)
    ood_scores = np.asarray(ood_scores, dtype=np.float64)
    if id_scores.ndim < 1 or ood_scores.ndim != id_scores.ndim + 1 \
            or ood_scores.shape[:-2] != id_scores.shape[:-1]:
        raise ScoringError(f"ood_scores: shape {ood_scores.shape} does not match id_scores "
                           f"{id_scores.shape} (expected [..., O, N] for [..., P])")
    batch = id_scores.shape[:-1]
    num_ood = ood_scores.shape[-2]
    id_sizes = _sizes(id_sizes, batch, id_scores.shape[-1], "id_sizes", 1)
    ood_sizes = _sizes(ood_sizes, (*batch, num_ood), ood_scores.shape[-1], "ood_sizes", 0)
    _check_finite("id_scores", id_scores, id_sizes)
    _check_finite("ood_scores", ood_scores, ood_sizes)

    groups = int(np.prod(batch, dtype=np.int64))
    if groups == 0 or num_ood == 0:
        return {m: np.zeros((*batch, num_ood)) for m in METRICS}
    id_flat = id_scores.reshape(groups, -1)
    ood_flat = ood_scores.reshape(groups, num_ood, -1)
    # Pad every axis up to a bucketed length (padded groups and splits have size 0).
    g, o, p, n = padded_shape(groups, num_ood, id_flat.shape[1], ood_flat.shape[2])
    id_pad = _pad_to(id_flat, (g, p))
    ood_pad = _pad_to(ood_flat, (g, o, n))
    id_size_pad = _pad_to(id_sizes.reshape(groups), (g,))
    ood_size_pad = _pad_to(ood_sizes.reshape(groups, num_ood), (g, o))

    out = _batched(id_pad, id_size_pad, ood_pad, ood_size_pad)
    out["fpr95_oe"] = _oe_cut(out, ood_size_pad)
    return {m: np.asarray(out[m][:groups, :num_ood], np.float64).reshape(*batch, num_ood)
            for m in METRICS}


def pair_metrics(id_scores, ood_scores) -> dict[str, float]:
    """METRICS for one ID score vector against one OOD score vector."""
    id_scores = np.asarray(id_scores, dtype=np.float64)
    ood_scores = np.asarray(ood_scores, dtype=np.float64)
    if id_scores.ndim != 1 or ood_scores.ndim != 1 or not id_scores.size or not ood_scores.size:
        raise ScoringError("pair_metrics: expected two non-empty 1-D score arrays, got shapes "
                           f"{id_scores.shape} and {ood_scores.shape}")
    out = ood_metrics(id_scores[None], ood_scores[None, None])
    return {m: float(v[0, 0]) for m, v in out.items()}


@jax.jit
def calibration_jax(confidence, correct, edges) -> dict[str, jax.Array]:
    """The computation behind `calibration_metrics`, traceable inside a caller's jit: `edges`
    are the ECE bin edges, float64 must be enabled by the caller."""
    correct = correct.astype(jnp.float64)
    # Bin b holds edges[b] < c <= edges[b+1]: the number of edges below c, minus one.
    num_bins = edges.shape[0] - 1
    bins = jnp.clip(jnp.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    gap = (jax.ops.segment_sum(correct, bins, num_bins)
           - jax.ops.segment_sum(confidence, bins, num_bins))
    return {"accuracy": jnp.mean(correct), "ece": jnp.sum(jnp.abs(gap)) / confidence.shape[0]}


def calibration_metrics(confidence, correct, *, num_bins: int = ECE_BINS) -> dict[str, float]:
    """accuracy and ece from top-label confidences in (0, 1] and per-example correctness."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if confidence.ndim != 1 or correct.shape != confidence.shape or not confidence.size:
        raise ScoringError(f"calibration_metrics: expected two non-empty [N] arrays, got "
                           f"{confidence.shape} and {correct.shape}")
    if not ((confidence > 0) & (confidence <= 1)).all():
        raise ScoringError("confidence: values must lie in (0, 1]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    with float64.enabled():
        out = jax.device_get(calibration_jax(confidence, correct, edges))
    return {k: float(v) for k, v in out.items()}


def id_metrics(logits, labels, *, num_bins: int = ECE_BINS) -> dict[str, float]:
    """accuracy and ece (top-label, `num_bins` equal-width bins over (0, 1]) of an ID split."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or not len(labels):
        raise ScoringError(f"id_metrics: expected logits [N, K] and labels [N] with N > 0, got "
                           f"{logits.shape} and {labels.shape}")
    confidence = scores.logit_scores(logits)["msp"]
    return calibration_metrics(confidence, scores.predicted_class(logits) == labels,
                               num_bins=num_bins)


def accuracy(logits, labels) -> float:
    return id_metrics(logits, labels)["accuracy"]


def ece(logits, labels, *, num_bins: int = ECE_BINS) -> float:
    return id_metrics(logits, labels, num_bins=num_bins)["ece"]
