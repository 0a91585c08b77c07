"""family_claims: F1-F3 of the soft-label family against ce, on hand-made metrics."""

from __future__ import annotations

import pytest

from softlabel_ood.analysis import claims, family_claims, metric_stats, results
from softlabel_ood.analysis.decision_statistics import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from softlabel_ood.configs import grid
from softlabel_ood.scoring import MetricRow
from tests.report_helpers import paper_runs

SEEDS = (0, 1, 2)
GROUPS = {"near": ("patches",), "far": ("noise",)}
STRONGER = {"mixup": {"mixup.alpha": 1.0}, "cutmix": {"cutmix.prob": 1.0}}


def family_runs(seeds=SEEDS, workdir=None) -> list[results.RunInfo]:
    """RunInfo of `grid.family_grid` (ls at 0.1 and 0.3, mixup and cutmix) for `seeds`."""
    g = grid.family_grid(seeds=seeds, stronger=STRONGER)
    strength = {"ce": None, "ls": "label_smoothing", "mixup": "mixup.alpha",
                "cutmix": "cutmix.alpha"}
    return [results.RunInfo(
        run=grid.run_dir_name(spec["name"], seed), entry=spec["name"], seed=seed,
        method=spec["method"],
        strength=float(spec["overrides"].get(strength[spec["method"]], 0.0)),
        directory=str(workdir / "runs" / grid.run_dir_name(spec["name"], seed))
        if workdir else "") for seed in seeds for spec in g.runs]


# entry -> msp AUROC on (noise, patches), pnorm AUROC on (noise, patches), msp AURC, pnorm
# AURC, accuracy. Every run of seed s adds 0.002·(s − 1) to each, so the paired differences of
# two entries are the differences of these numbers, the same at every seed (std 0).
CE = ((0.96, 0.94), (0.96, 0.94), 0.05, 0.05, 0.90)
VALUES = {
    "ce": CE,
    # Lower AUROC (5 points, both groups), higher AURC (3 points); pnorm back at ce's msp.
    "ls0.1": ((0.91, 0.89), (0.96, 0.94), 0.08, 0.05, 0.90),
    # AUROC lower on the near set only (6 points, so 3 on the mean), pnorm's too; accuracy 0.5
    # points lower.
    "ls0.3": ((0.96, 0.88), (0.96, 0.88), 0.05, 0.05, 0.895),
    # AUROC 5 points lower, but accuracy 3 points lower; pnorm still 4 points short.
    "mixup0.2": ((0.91, 0.89), (0.92, 0.90), 0.05, 0.05, 0.87),
    # Better than ce: higher AUROC, lower AURC.
    "mixup1": ((0.98, 0.96), (0.98, 0.96), 0.04, 0.04, 0.90),
    # Within noise everywhere (0.2 points).
    "cutmix1": ((0.958, 0.938), (0.958, 0.938), 0.051, 0.051, 0.90),
    # AURC 2 points higher; pnorm's AURC still 2 points above ce's msp.
    "cutmix1_prob1": (CE[0], CE[1], 0.07, 0.07, 0.90),
}


def family_rows(runs, values=None, shifts=None) -> list[MetricRow]:
    """The metrics of VALUES; `shifts` {(entry, seed): delta} moves one run's msp AUROC."""
    values = {**VALUES, **(values or {})}
    rows = []
    for r in runs:
        msp, pnorm, msp_aurc, pnorm_aurc, accuracy = values[r.entry]
        offset = 0.002 * (r.seed - 1)
        shift = (shifts or {}).get((r.entry, r.seed), 0.0)
        rows += [MetricRow(r.run, "", "", "accuracy", accuracy + offset),
                 MetricRow(r.run, "msp", "", "aurc", msp_aurc + offset),
                 MetricRow(r.run, "pnorm", "", "aurc", pnorm_aurc + offset)]
        for i, ood in enumerate(("noise", "patches")):
            rows += [MetricRow(r.run, "msp", ood, "auroc", msp[i] + offset + shift),
                     MetricRow(r.run, "pnorm", ood, "auroc", pnorm[i] + offset)]
    return rows


def _evaluate(runs=None, **options):
    runs = family_runs() if runs is None else runs
    table = metric_stats.MetricTable(family_rows(runs, **options))
    return {v.entry: v for v in family_claims.evaluate(table, runs, groups=GROUPS)}


def _verdicts(v):
    return (v.f1.verdict, v.f1_groups["near"].verdict, v.f1_groups["far"].verdict,
            v.f2.verdict, v.f3.verdict)


def test_each_entry_is_decided_against_ce_by_the_paired_rule():
    found = _evaluate()
    assert list(found) == ["ls0.1", "ls0.3", "mixup0.2", "mixup1", "cutmix1", "cutmix1_prob1"]
    s, n, i = SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE
    assert _verdicts(found["ls0.1"]) == (s, s, s, s, s)
    # 3 points on the mean, 6 near, 0 far; accuracy 0.5 points lower is held (margin 1 point);
    # pnorm as low as msp: it recovers nothing.
    assert _verdicts(found["ls0.3"]) == (s, s, i, i, n)
    assert _verdicts(found["mixup0.2"]) == (n, n, n, i, n)
    assert _verdicts(found["mixup1"]) == (n, n, n, n, i)
    assert _verdicts(found["cutmix1"]) == (i, i, i, i, i)
    assert _verdicts(found["cutmix1_prob1"]) == (i, i, i, s, n)


def test_the_deciding_numbers_are_the_hand_worked_differences():
    found = _evaluate()
    drop = found["ls0.1"].f1.comparisons[0][1]
    assert [round(100 * d, 6) for _, d in drop.differences] == [5.0, 5.0, 5.0]
    assert drop.brief() == "+5.00 ± 0.00 points (noise threshold 0.50, seeds +++)"
    near = found["ls0.3"].f1_groups["near"].comparisons[0][1]
    assert near.mean == pytest.approx(0.06)
    assert found["ls0.3"].f1.comparisons[0][1].mean == pytest.approx(0.03)
    assert "mean accuracy: ce 90.00, m 87.00 (-3.00 points; held: no)" in \
        found["mixup0.2"].f1.evidence
    rise = found["cutmix1_prob1"].f2.comparisons[0][1]
    assert rise.mean == pytest.approx(0.02)
    # F3 of mixup0.2: pnorm's mean AUROC 91 against ce's msp 95, 4 points short.
    f3 = found["mixup0.2"].f3
    assert f3.comparisons[0][1].mean == pytest.approx(0.04)
    assert any(line.endswith("→ contradicted") for line in f3.evidence)
    assert any("lost nothing" in line for line in f3.evidence)  # its AURC did not rise
    assert all("lost nothing" in line for line in found["mixup1"].f3.evidence)


def test_one_seed_against_the_others_or_too_few_seeds_decide_nothing():
    # Seed 2 of ls0.1 has its msp AUROC 6 points higher: its difference is −1, the signs differ.
    found = _evaluate(shifts={("ls0.1", 2): 0.06})
    assert found["ls0.1"].f1.verdict == INCONCLUSIVE
    assert found["ls0.1"].f1.comparisons[0][1].signs == "++−"
    one_seed = _evaluate(runs=family_runs(seeds=(0,)))
    assert {v.f1.verdict for v in one_seed.values()} == {INCONCLUSIVE}
    assert {v.f2.verdict for v in one_seed.values()} == {INCONCLUSIVE}
    assert {v.f3.verdict for v in one_seed.values()} == {INCONCLUSIVE}


def test_the_family_questions_apply_only_to_runs_with_a_family_method_beyond_ls():
    assert not family_claims.applies(paper_runs())
    assert family_claims.applies(family_runs())
    runs = [r for r in family_runs() if r.method in ("ce", "ls")]
    assert not family_claims.applies(runs)
    # Without a ce run nothing is compared.
    table = metric_stats.MetricTable(family_rows(family_runs()))
    assert family_claims.evaluate(table, [r for r in family_runs() if r.method != "ce"]) == []


def test_the_accuracy_margin_is_claim_1_s():
    rules = claims.ClaimRules(accuracy_margin=0.04)
    runs = family_runs()
    table = metric_stats.MetricTable(family_rows(runs))
    found = {v.entry: v for v in family_claims.evaluate(table, runs, rules)}
    assert found["mixup0.2"].f1.verdict == SUPPORTED  # 3 points lower is held within 4
