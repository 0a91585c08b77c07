"""OOD metrics against scikit-learn (the oracle), hand-worked cases, batching, and calibration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from softlabel_ood.scoring import metrics
from softlabel_ood.scoring.metrics import METRICS, ScoringError


def stable_cumsum(arr, rtol=1e-05, atol=1e-08):
    """Transcribed from the Outlier Exposure code (utils/display_results.py)."""
    out = np.cumsum(arr, dtype=np.float64)
    expected = np.sum(arr, dtype=np.float64)
    if not np.allclose(out[-1], expected, rtol=rtol, atol=atol):
        raise RuntimeError("cumsum was found to be unstable")
    return out


def oe_fpr_and_fdr_at_recall(y_true, y_score, recall_level=0.95, pos_label=1.0):
    """Transcribed line by line from the Outlier Exposure code (utils/display_results.py)."""
    y_true = (y_true == pos_label)
    desc_score_indices = np.argsort(y_score, kind="mergesort")[::-1]
    y_score = y_score[desc_score_indices]
    y_true = y_true[desc_score_indices]
    distinct_value_indices = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct_value_indices, y_true.size - 1]
    tps = stable_cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / (np.sum(np.logical_not(y_true)))


def oe_fpr95(id_scores, ood_scores) -> float:
    """As the OE code's get_measures(out_score, in_score) calls it: OOD positive, anomaly
    score = -s."""
    y = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return oe_fpr_and_fdr_at_recall(y, -np.r_[id_scores, ood_scores].astype(np.float64))


def sklearn_metrics(id_scores, ood_scores) -> dict[str, float]:
    """DESIGN.md §6, written with scikit-learn exactly as the definitions read."""
    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    s = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    fpr_o, tpr_o, _ = sk.roc_curve(1 - y, -s, drop_intermediate=False)
    fpr95 = fpr[np.argmax(tpr >= 0.95)]
    return {"auroc": sk.roc_auc_score(y, s), "aupr_in": sk.average_precision_score(y, s),
            "aupr_out": sk.average_precision_score(1 - y, -s), "fpr95": fpr95,
            "tnr95": 1 - fpr95, "fpr95_ood_positive": fpr_o[np.argmax(tpr_o >= 0.95)],
            "detection_acc": np.max(0.5 * (tpr + 1 - fpr)),
            "fpr95_oe": oe_fpr95(id_scores, ood_scores)}


def assert_matches_sklearn(ours: dict[str, float], id_scores, ood_scores, tol=1e-9):
    expected = sklearn_metrics(id_scores, ood_scores)
    for m in METRICS:
        assert ours[m] == pytest.approx(expected[m], abs=tol), (m, id_scores, ood_scores)


def quantized(rng, n, levels, shift=0.0):
    """Heavily tied scores: n draws from `levels` distinct values."""
    return np.round(rng.normal(shift, 1.0, n) * levels / 3) / levels


@pytest.mark.parametrize(("num_id", "num_ood", "levels"), [
    (200, 50, 3), (37, 400, 5), (1000, 1000, 20), (64, 65, 2), (500, 7, 1)])
def test_heavy_ties_and_unequal_sizes_match_sklearn(num_id, num_ood, levels):
    rng = np.random.default_rng(num_id * 7 + num_ood)
    id_scores = quantized(rng, num_id, levels, shift=0.5)
    ood_scores = quantized(rng, num_ood, levels)
    assert_matches_sklearn(metrics.pair_metrics(id_scores, ood_scores), id_scores, ood_scores)


def test_every_tiny_case_matches_sklearn():
    # All ID and OOD sets of 1 to 3 examples over 3 values, in one batched call with padding.
    cases = [(np.array(i, float), np.array(o, float))
             for p in range(1, 4) for n in range(1, 4)
             for i in itertools.product(range(3), repeat=p)
             for o in itertools.product(range(2), repeat=n)]
    id_scores = np.zeros((len(cases), 3))
    ood_scores = np.full((len(cases), 1, 3), 99.0)  # padding values must never be read
    for g, (i, o) in enumerate(cases):
        id_scores[g, :len(i)] = i
        ood_scores[g, 0, :len(o)] = o
    out = metrics.ood_metrics(id_scores, ood_scores,
                              id_sizes=np.array([len(i) for i, _ in cases]),
                              ood_sizes=np.array([[len(o)] for _, o in cases]))
    for g, (i, o) in enumerate(cases):
        assert_matches_sklearn({m: out[m][g, 0] for m in METRICS}, i, o)


@pytest.mark.parametrize("name", ["all equal", "separated", "reversed", "single", "signed zero"])
def test_edge_cases_match_sklearn(name):
    id_scores, ood_scores = {
        "all equal": (np.full(10, 0.3), np.full(4, 0.3)),
        "separated": (np.linspace(1, 2, 30), np.linspace(-2, 0, 11)),
        "reversed": (np.linspace(-2, 0, 11), np.linspace(1, 2, 30)),
        "single": (np.array([0.2]), np.array([0.1])),
        # -0.0 == 0.0: a tie, although the two floats' bits differ.
        "signed zero": (np.array([0.0, 1.0]), np.array([-0.0, -1.0])),
    }[name]
    ours = metrics.pair_metrics(id_scores, ood_scores)
    assert_matches_sklearn(ours, id_scores, ood_scores)
    if name == "all equal":
        assert ours == {"auroc": 0.5, "aupr_in": 10 / 14, "aupr_out": 4 / 14, "fpr95": 1.0,
                        "tnr95": 0.0, "fpr95_ood_positive": 1.0, "detection_acc": 0.5,
                        "fpr95_oe": 1.0}
    if name == "separated":
        assert ours == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0,
                        "tnr95": 1.0, "fpr95_ood_positive": 0.0, "detection_acc": 1.0,
                        "fpr95_oe": 0.0}
    if name == "reversed":
        assert ours["auroc"] == 0.0
        assert ours["fpr95"] == 1.0
        assert ours["detection_acc"] == 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40),
       st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_property_quantized_scores_match_sklearn(id_ints, ood_ints):
    id_scores, ood_scores = np.array(id_ints) / 2, np.array(ood_ints) / 2
    assert_matches_sklearn(metrics.pair_metrics(id_scores, ood_scores), id_scores, ood_scores)


def test_hand_worked_fpr95_and_fpr95_ood_positive_differ():
    id_scores = np.arange(1.0, 21.0)  # 1, 2, ..., 20: P = 20
    ood_scores = np.array([0.0, 1.5, 2.5, 30.0])  # N = 4
    ours = metrics.pair_metrics(id_scores, ood_scores)
    # fpr95: the highest threshold accepting >= 95% of ID is s >= 2 (19/20 = 0.95 accepted);
    # it accepts the OOD scores 2.5 and 30: 2/4.
    assert ours["fpr95"] == 0.5
    assert ours["tnr95"] == 0.5
    # fpr95_ood_positive: rejecting >= 95% of OOD (3.8 of 4, so all 4) needs s <= 30, which
    # rejects every ID example: 20/20.
    assert ours["fpr95_ood_positive"] == 1.0
    # auroc: ID scores above each OOD score: 20 + 19 + 18 + 0 = 57 of 20 * 4 pairs.
    assert ours["auroc"] == 57 / 80
    # detection_acc: s >= 3 accepts 18/20 ID and 1/4 OOD: 0.5 * (0.9 + 0.75) = 0.825; lower
    # thresholds add OOD faster than ID, higher ones lose ID.
    assert ours["detection_acc"] == pytest.approx(0.825, abs=1e-15)
    assert_matches_sklearn(ours, id_scores, ood_scores)


def test_hand_worked_ties_at_the_threshold():
    id_scores = np.array([3.0] * 19 + [1.0])  # P = 20
    ood_scores = np.array([3.0, 3.0, 0.0, 0.0])  # N = 4
    ours = metrics.pair_metrics(id_scores, ood_scores)
    # s >= 3 accepts 19/20 = 0.95 of ID and, through the tie, 2/4 of OOD.
    assert ours["fpr95"] == 0.5
    # Rejecting all 4 OOD examples (>= 3.8) needs s <= 3: every ID example is rejected too.
    assert ours["fpr95_ood_positive"] == 1.0
    # The other way round: a low ID outlier, OOD between it and the rest.
    id_scores = np.concatenate([[-10.0], np.arange(1.0, 20.0)])  # P = 20
    ood_scores = np.arange(1, 21) / 100  # 0.01 ... 0.20, N = 20
    ours = metrics.pair_metrics(id_scores, ood_scores)
    # s >= 1 accepts 19/20 ID and no OOD.
    assert ours["fpr95"] == 0.0
    # Rejecting 19/20 OOD needs s <= 0.19, which rejects the ID outlier: 1/20.
    assert ours["fpr95_ood_positive"] == 0.05
    assert_matches_sklearn(ours, id_scores, ood_scores)


def test_hand_worked_fpr95_oe_plateau_and_nearest_recall():
    # An exact 0.95 plateau: OOD scores 1..20 (N = 20), five ID scores in (19, 20). Calling
    # s <= c OOD for any c in [19, 20) has recall 19/20 = 0.95. The OE code scans thresholds
    # from high recall down and keeps the first nearest point: c just below 20, which calls the
    # five ID examples OOD. fpr95_ood_positive takes the highest threshold, c = 19: none.
    ood_scores = np.arange(1.0, 21.0)
    id_scores = np.r_[np.linspace(19.1, 19.9, 5), np.full(5, 50.0)]  # P = 10
    ours = metrics.pair_metrics(id_scores, ood_scores)
    assert ours["fpr95_oe"] == 0.5
    assert ours["fpr95_ood_positive"] == 0.0
    assert ours["fpr95_oe"] == oe_fpr95(id_scores, ood_scores)

    # A recall below 0.95: OOD 1..36 and four tied at 40 (N = 40), so recall jumps from 0.9
    # to 1.0. Both are 0.05 from 0.95 in exact arithmetic; in float64 0.9 is nearer, and the
    # OE code takes recall 0.9, with c just below 40: the ID example tied at 40 stays ID.
    assert abs(36 / 40 - 0.95) < abs(40 / 40 - 0.95)
    ood_scores = np.r_[np.arange(1.0, 37.0), [40.0] * 4]
    id_scores = np.r_[[36.5, 40.0], np.full(18, 50.0)]  # P = 20
    ours = metrics.pair_metrics(id_scores, ood_scores)
    assert ours["fpr95_oe"] == 1 / 20  # 36.5 only
    assert ours["fpr95_ood_positive"] == 2 / 20  # recall >= 0.95 needs c = 40: 36.5 and 40
    assert ours["fpr95_oe"] == oe_fpr95(id_scores, ood_scores)

    # Recall 1.0 nearest (OOD 1..8 and two tied at 9, N = 10: 0.8 or 1.0): the scan starts at
    # c = 9, the largest OOD score, never above it.
    ood_scores = np.r_[np.arange(1.0, 9.0), [9.0, 9.0]]
    id_scores = np.r_[[8.5], np.full(9, 20.0)]  # P = 10
    ours = metrics.pair_metrics(id_scores, ood_scores)
    assert ours["fpr95_oe"] == 0.1
    assert ours["fpr95_oe"] == oe_fpr95(id_scores, ood_scores)


@pytest.mark.parametrize(("num_id", "num_ood", "levels"), [
    (300, 40, 4), (50, 500, 9), (2000, 400, 200), (10, 10, 1), (1000, 20, 2)])
def test_fpr95_oe_matches_the_oe_code_on_tie_heavy_scores(num_id, num_ood, levels):
    rng = np.random.default_rng(num_id + 13 * num_ood)
    id_scores = quantized(rng, num_id, levels, shift=0.7)
    ood_scores = quantized(rng, num_ood, levels)
    assert metrics.pair_metrics(id_scores, ood_scores)["fpr95_oe"] == \
        oe_fpr95(id_scores, ood_scores)


def planted_cut(rng, n: int):
    """OOD scores 1..n with one tie group across recall 0.95, and 40 ID scores around it.

    Returns (ID scores, OOD scores, t1, t2): the recall jumps from t1 / n to t2 / n. For n a
    multiple of 10, t1 + t2 = 1.9 n: two recalls equally far from 0.95, where float64 rounding
    decides; otherwise a random span around 0.95.
    """
    if n % 10 == 0:
        t1 = max(19 * n // 20 - int(rng.integers(0 if n % 20 else 1, 4)), 0)
        t2 = min(19 * n // 10 - t1, n)
    else:
        t1 = max(19 * n // 20 - int(rng.integers(0, 3)), 0)
        t2 = min(-(-19 * n // 20) + int(rng.integers(0, 3)), n)
    ood = np.arange(1.0, n + 1)
    ood[t1:t2] = t1 + 1.0  # OOD examples t1 + 1 .. t2 tie
    near = ood[max(t1 - 2, 0):min(t2 + 2, n)]
    id_scores = np.r_[rng.choice(np.r_[near, near + 0.5], 30), rng.uniform(0, n + 2, 10)]
    return id_scores, ood, t1, t2


def test_fpr95_oe_matches_the_oe_code_for_every_ood_size_up_to_3000():
    # One batched call over N = 1..3000, each with ties planted at the cut. About a quarter of
    # XLA's CPU quotients t / N differ from numpy's in the last bit; the OE code's float64
    # argmin is decided by those bits wherever two recalls are equally far from 0.95.
    rng = np.random.default_rng(20)
    sizes = np.arange(1, 3001)
    cases = [planted_cut(rng, int(n)) for n in sizes]
    id_scores = np.stack([c[0] for c in cases])
    ood_scores = np.zeros((len(sizes), 1, sizes[-1]))
    for i, case in enumerate(cases):
        ood_scores[i, 0, :len(case[1])] = case[1]
    ours = metrics.ood_metrics(id_scores, ood_scores, ood_sizes=sizes[:, None])["fpr95_oe"]
    expected = np.array([oe_fpr95(id_s, ood) for id_s, ood, _, _ in cases])
    wrong = sizes[ours[:, 0] != expected]
    assert not wrong.size, f"fpr95_oe differs from the OE code for N = {wrong[:20].tolist()}"
    # The sweep holds exact ties that float64 breaks towards the lower recall (N = 10: 0.9
    # beats 1.0), where "ties to the larger t" in exact arithmetic would be wrong, and where
    # the two recalls' thresholds call different numbers of ID examples OOD.
    lower = [(id_s, ood, t1, t2) for id_s, ood, t1, t2 in cases
             if 20 * t1 + 20 * t2 == 38 * len(ood) and t1 < t2
             and abs(t1 / len(ood) - 0.95) < abs(t2 / len(ood) - 0.95)]
    def accepted_as_ood(id_s, ood, t):  # ID examples below the lowest threshold of recall t
        return np.sum(id_s < ood[t]) if t < len(ood) else np.sum(id_s <= ood[-1])

    differ = [c for c in lower if accepted_as_ood(c[0], c[1], c[2])
              != accepted_as_ood(c[0], c[1], c[3])]
    assert len(lower) > 50
    assert len(differ) > 20


def test_fpr95_oe_exceeds_fpr95_ood_positive_at_the_oe_sizes():
    # Continuous scores at the OE evaluation sizes (10k ID, 2k OOD): 1900/2000 is exactly the
    # float64 0.95, so the OE rule sits on that plateau's lowest threshold and adds the ID
    # examples between the 1900th and 1901st OOD scores.
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(5):
        id_scores, ood_scores = rng.normal(1.0, 1.0, 10_000), rng.normal(0.0, 1.0, 2_000)
        ours = metrics.pair_metrics(id_scores, ood_scores)
        assert ours["fpr95_oe"] == oe_fpr95(id_scores, ood_scores)
        v = np.sort(ood_scores)
        assert ours["fpr95_oe"] == pytest.approx(np.mean(id_scores < v[1900]), abs=1e-15)
        assert ours["fpr95_ood_positive"] == pytest.approx(np.mean(id_scores <= v[1899]),
                                                           abs=1e-15)
        gaps.append(ours["fpr95_oe"] - ours["fpr95_ood_positive"])
    assert min(gaps) >= 0
    assert np.mean(gaps) > 0


def test_subnormal_scores_are_not_ties_with_zero():
    # XLA on CPU flushes subnormals in float comparisons; keys come from the bits instead.
    tiny = np.nextafter(0.0, 1.0)  # 5e-324
    ours = metrics.pair_metrics(np.array([tiny]), np.array([0.0]))
    assert ours["auroc"] == 1.0
    assert_matches_sklearn(ours, np.array([tiny]), np.array([0.0]))
    ours = metrics.pair_metrics(np.array([-0.0, tiny]), np.array([0.0, -tiny]))
    assert_matches_sklearn(ours, np.array([-0.0, tiny]), np.array([0.0, -tiny]))


def test_fpr95_keeps_collinear_roc_points():
    # ROC points (fpr, tpr) = (0, 0.9), (0.05, 0.95), (0.1, 1.0) lie on one line; roc_curve's
    # default drop_intermediate=True drops the middle one, and argmax(tpr >= 0.95) then lands
    # on fpr 0.1 instead of the correct 0.05.
    id_scores = np.concatenate([np.arange(10.0, 28.0), [2.5, 1.5]])  # 18 high, then 2 tied
    ood_scores = np.concatenate([[2.5, 1.5], np.linspace(-20, -3, 18)])
    assert metrics.pair_metrics(id_scores, ood_scores)["fpr95"] == 0.05
    y = np.r_[np.ones(20), np.zeros(20)]
    fpr, tpr, _ = sk.roc_curve(y, np.r_[id_scores, ood_scores])
    assert fpr[np.argmax(tpr >= 0.95)] == 0.1  # the common, wrong pattern


def test_batched_equals_per_pair_with_padding_and_absent_splits():
    rng = np.random.default_rng(3)
    id_sizes = np.array([50, 7, 120])
    ood_sizes = np.array([[30, 200, 0], [5, 1, 64], [90, 0, 0]])  # 0: no such split
    id_scores = np.full((3, 120), np.nan)  # padding may hold anything, even NaN
    ood_scores = np.full((3, 3, 200), np.nan)
    for g in range(3):
        id_scores[g, :id_sizes[g]] = quantized(rng, id_sizes[g], 4, shift=0.3)
        for o in range(3):
            ood_scores[g, o, :ood_sizes[g, o]] = quantized(rng, ood_sizes[g, o], 4)
    out = metrics.ood_metrics(id_scores, ood_scores, id_sizes=id_sizes, ood_sizes=ood_sizes)
    for g, o in itertools.product(range(3), range(3)):
        if ood_sizes[g, o] == 0:
            assert all(np.isnan(out[m][g, o]) for m in METRICS)
            continue
        pair = metrics.pair_metrics(id_scores[g, :id_sizes[g]],
                                    ood_scores[g, o, :ood_sizes[g, o]])
        for m in METRICS:
            assert out[m][g, o] == pytest.approx(pair[m], abs=1e-12)


def test_leading_batch_axes_are_kept():
    rng = np.random.default_rng(4)
    out = metrics.ood_metrics(rng.normal(size=(2, 3, 10)), rng.normal(size=(2, 3, 4, 8)))
    assert out["auroc"].shape == (2, 3, 4)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: metrics.ood_metrics(np.zeros(5), np.zeros((2, 5, 3))), "does not match id_scores"),
    (lambda: metrics.ood_metrics(np.array([np.nan, 1.0]), np.zeros((1, 3))),
     "id_scores: 1 NaN or infinite scores"),
    (lambda: metrics.ood_metrics(np.zeros(2), np.array([[np.inf, 0.0]])),
     "ood_scores: 1 NaN or infinite scores"),
    (lambda: metrics.ood_metrics(np.zeros(2), np.zeros((1, 3)), id_sizes=np.array(0)),
     "id_sizes: sizes must lie in [1, 2]"),
    (lambda: metrics.ood_metrics(np.zeros(2), np.zeros((1, 3)), ood_sizes=np.array([4])),
     "ood_sizes: sizes must lie in [0, 3]"),
    (lambda: metrics.ood_metrics(np.zeros(2), np.zeros((1, 3)), ood_sizes=np.array([[1]])),
     "ood_sizes: expected integers of shape (1,)"),
    (lambda: metrics.pair_metrics([], [1.0]), "expected two non-empty 1-D score arrays"),
])
def test_invalid_inputs_are_rejected(call, message):
    with pytest.raises(ScoringError) as error:
        call()
    assert message in str(error.value)


def reference_ece(logits, labels, num_bins=15):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    confidence, correct = p.max(1), p.argmax(1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (lo < confidence) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return total


def test_accuracy_and_ece_match_a_reference():
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(500, 10)) * rng.uniform(0.1, 5, (500, 1))).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    logits[np.arange(500), labels] += 2.0
    values = metrics.id_metrics(logits, labels)
    assert values["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-15)
    assert values["ece"] == pytest.approx(reference_ece(logits.astype(np.float64), labels),
                                          abs=1e-12)


def test_ece_bins_are_closed_on_the_right():
    # Two bins, (0, 0.5] and (0.5, 1]. Confidences: 0.5 (equal logits), 0.75 (logits log 3, 0).
    log3 = np.log(3.0)
    logits = np.array([[0, 0], [log3, 0], [0, log3], [0, 0]], np.float32)
    labels = np.array([0, 1, 1, 0])
    # Bin (0, 0.5]: examples 1 and 4 (confidence 0.5, predicted class 0, both right):
    #   |accuracy 1 - confidence 0.5| * 2/4 = 0.25.
    # Bin (0.5, 1]: examples 2 (wrong) and 3 (right) at 0.75: |0.5 - 0.75| * 2/4 = 0.125.
    # Total 0.375; were 0.5 put in the upper bin it would be |0.75 - 0.625| = 0.125.
    values = metrics.id_metrics(logits, labels, num_bins=2)
    assert values["accuracy"] == 0.75
    assert values["ece"] == pytest.approx(0.375, abs=1e-7)
    # Argmax ties go to the first class, as np.argmax does.
    assert metrics.accuracy(np.zeros((1, 3), np.float32), np.array([0])) == 1.0
    # A confidence of exactly 1 falls in the last bin.
    assert metrics.ece(np.array([[50.0, -50.0]], np.float32), np.array([0])) == 0.0


def test_calibration_rejects_confidences_outside_the_unit_interval():
    with pytest.raises(ScoringError, match=r"confidence: values must lie in \(0, 1\]"):
        metrics.calibration_metrics(np.array([0.0, 0.5]), np.array([True, False]))
