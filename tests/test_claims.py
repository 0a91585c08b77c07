"""The claims' decision rules on hand-made metrics that support and that contradict each claim."""

from __future__ import annotations

import dataclasses

from softlabel_ood.analysis import claims, metric_stats
from tests.report_helpers import metric_rows, paper_runs

# Seed means of the MSP AUROC (mean over OOD sets) shaped like the paper's findings.
PAPER_LIKE = {"ce": 0.95, "ls0.1": 0.93, "ls0.2": 0.90, "ls0.3": 0.86, "oe": 0.99,
              "kd_ce": 0.94, "kd_ls0.3": 0.88, "kd_oe": 0.97, "kdi_ce": 0.93, "kdi_oe": 0.96}


def _evaluate(auroc=None, accuracy=None, runs=None, rules=None, spread=0.002, shifts=None):
    """Claims on PAPER_LIKE metrics; `shifts` {(name, seed): delta} moves one run's AUROC."""
    runs = paper_runs() if runs is None else runs
    rows = metric_rows(runs, {**PAPER_LIKE, **(auroc or {})}, accuracy, spread=spread)
    seeds = {r.run: (r.entry, r.seed) for r in runs}
    rows = [dataclasses.replace(row, value=row.value + (shifts or {}).get(seeds[row.run], 0.0))
            if row.metric == "auroc" else row for row in rows]
    return claims.evaluate_claims(metric_stats.MetricTable(rows), runs, rules)


def _verdicts(claim_results):
    return [c.verdict for c in claim_results]


def test_paper_like_metrics_support_every_claim():
    c1, c2, c3 = _evaluate()
    assert _verdicts([c1, c2, c3]) == [claims.SUPPORTED] * 3
    # The deciding numbers are printed, in percent: A(0) - A(0.3) = 9 points.
    assert any("Spearman ρ(α, A) = -1.000" in line for line in c1.evidence)
    # Paired by seed: metric_rows moves every entry by the same per-seed offset, so each seed's
    # difference is the difference of the means and their std is 0.
    assert any("A(0) − A(0.3): paired over 3 seed(s) (seed 0: 9.00, seed 1: 9.00, seed 2: 9.00)"
               ": mean difference 9.00 ± 0.00, signs +++, noise threshold 0.50" in line
               for line in c1.evidence)
    assert any("seeds as independent samples: difference 9.00, noise threshold 0.50" in line
               for line in c1.evidence)
    assert any("kd-from-oe − kd-from-ce: paired over 3 seed(s)" in line
               and "mean difference 3.00" in line for line in c2.evidence)
    assert any("kd-from-oe − kd-from-ce, seeds as independent samples: difference 3.00" in line
               for line in c2.evidence)
    assert any("kd_incorrect-from-oe − ls: paired" in line and "mean difference 10.00" in line
               for line in c3.evidence)
    assert [c.independent_verdict for c in (c1, c2, c3)] == [claims.SUPPORTED] * 3
    assert any("95.00 ± 0.20 (n = 3)" in line for line in c1.evidence)


def test_claim1_not_supported_when_auroc_rises_with_alpha():
    c1 = _evaluate({"ls0.1": 0.96, "ls0.2": 0.97, "ls0.3": 0.98})[0]
    assert c1.verdict == claims.NOT_SUPPORTED


def test_claim1_not_supported_when_accuracy_drops_beyond_the_margin():
    c1 = _evaluate(accuracy={"ls0.3": 0.87})[0]
    assert c1.verdict == claims.NOT_SUPPORTED
    assert any("87.00 at α = 0.3, -3.00 points from α = 0" in line for line in c1.evidence)


def test_claim1_inconclusive_within_noise_or_with_one_seed():
    flat = {"ls0.1": 0.951, "ls0.2": 0.949, "ls0.3": 0.948}
    assert _evaluate(flat)[0].verdict == claims.INCONCLUSIVE
    assert _evaluate(runs=paper_runs(seeds=(0,)))[0].verdict == claims.INCONCLUSIVE
    # Allowing single-seed decisions makes the same metrics decide it.
    one_seed_ok = claims.ClaimRules(min_seeds=1)
    assert _evaluate(runs=paper_runs(seeds=(0,)), rules=one_seed_ok)[0].verdict == \
        claims.SUPPORTED


def test_claim1_spearman_threshold_is_applied():
    # Non-monotone but falling overall: ρ = -0.8 passes a threshold of -0.7, not one of -0.9.
    bumpy = {"ls0.1": 0.91, "ls0.2": 0.92, "ls0.3": 0.86}
    lenient, strict = claims.ClaimRules(spearman_max=-0.7), claims.ClaimRules(spearman_max=-0.9)
    assert _evaluate(bumpy, rules=lenient)[0].verdict == claims.SUPPORTED
    assert _evaluate(bumpy, rules=strict)[0].verdict == claims.INCONCLUSIVE


def test_claim2_contradicted_within_noise_and_missing():
    assert _evaluate({"kd_oe": 0.90})[1].verdict == claims.NOT_SUPPORTED
    assert _evaluate({"kd_ls0.3": 0.97})[1].verdict == claims.NOT_SUPPORTED
    assert _evaluate({"kd_oe": 0.942, "kd_ls0.3": 0.938})[1].verdict == claims.INCONCLUSIVE
    # One part holding is not enough.
    assert _evaluate({"kd_ls0.3": 0.941})[1].verdict == claims.INCONCLUSIVE
    no_kd_oe = [r for r in paper_runs() if r.entry != "kd_oe"]
    assert _evaluate(runs=no_kd_oe)[1].verdict == claims.INCONCLUSIVE


def test_claim3_contradicted_within_noise_and_missing():
    assert _evaluate({"kdi_oe": 0.80})[2].verdict == claims.NOT_SUPPORTED
    assert _evaluate({"kdi_oe": 0.862})[2].verdict == claims.INCONCLUSIVE
    no_ls = [r for r in paper_runs() if r.entry not in ("ls0.3", "kd_ls0.3")]
    c3 = _evaluate(runs=no_ls)[2]
    assert c3.verdict == claims.INCONCLUSIVE
    assert any("needs an ls run with α = 0.3" in line for line in c3.evidence)


def test_pairing_by_seed_removes_the_seed_to_seed_spread():
    # Every entry moves by ±3 points with the seed. Independent samples: kd-from-oe minus
    # kd-from-ce is 3 points against a threshold of sqrt(2) * 3 = 4.24, within noise. Paired,
    # each seed's difference is 3 points and the differences' std is 0: it holds.
    c2 = _evaluate(spread=0.03)[1]
    assert c2.verdict == claims.SUPPORTED
    assert c2.independent_verdict == claims.INCONCLUSIVE
    assert any("seeds as independent samples: difference 3.00, noise threshold 4.24 → within "
               "noise" in line for line in c2.evidence)


def test_paired_difference_needs_every_seed_to_agree_in_sign():
    # kd_incorrect-from-oe − ls0.3 is 10 points for seeds 0 and 1 and -0.3 for seed 2: the mean
    # (6.57) exceeds the differences' std (5.95), but one seed goes the other way.
    c3 = _evaluate(shifts={("kdi_oe", 2): -0.103})[2]
    assert c3.verdict == claims.INCONCLUSIVE
    assert any("signs ++−" in line and "→ within noise" in line for line in c3.evidence)
    # The same mean with every seed positive holds.
    c3 = _evaluate(shifts={("kdi_oe", 2): -0.09})[2]
    assert c3.verdict == claims.SUPPORTED
