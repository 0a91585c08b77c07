"""Two questions about the ID side, decided like the paper's claims (`claims.py`) by the same
statistics (`decision_statistics`): paired by seed, a difference counting when its mean is beyond
the noise threshold with every seed agreeing.

S1  Label smoothing worsens selective classification as α grows: over the LS sweep, the AURC of
    a score (msp unless said) rises with α (Zhu et al. 2022; Xia et al. 2025).
S2  The post-hoc fix: at every α of the sweep, pnorm (MaxLogit-pNorm) has a lower AURC and a
    higher OOD AUROC (mean over the OOD sets) than msp, and its AURC no longer rises with α.

AURC is lower-is-better, so a rise is a deterioration; the metrics are the `selective` rows of
metrics.csv (an empty `ood`), missing from files scored before they existed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from softlabel_ood.analysis import claims, decision_statistics, metric_stats, results
from softlabel_ood.analysis.claims import ClaimResult, ClaimRules
from softlabel_ood.analysis.decision_statistics import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo

STATEMENTS = {
    "S1": "Label smoothing worsens selective classification as α grows: the msp AURC (area "
          "under the risk-coverage curve on the ID test set) rises with α.",
    "S2": "Post-hoc logit normalisation fixes it: at every α, pnorm (MaxLogit-pNorm) has a lower "
          "AURC and a higher OOD AUROC than msp, and its AURC no longer rises with α.",
}
HEADLINES = {
    "S1": "label smoothing worsens selective classification (AURC) as α grows",
    "S2": "pnorm beats msp at every α and removes the AURC trend",
}
FIX_SCORE = "pnorm"


def _aurc_by_seed(table: MetricTable, group: Sequence[RunInfo], score: str) -> dict[int, float]:
    return metric_stats.by_seed(group, lambda run: table.value(run, "aurc", score))


def aurc_trend(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules,
               score: str = "msp") -> ClaimResult:
    """S1 for one score: does its AURC rise with α over the LS sweep?"""
    rule = (
        f"Over the LS sweep (α = 0 is the ce run), let R(α) be the seed mean of {score} AURC "
        f"and ρ its Spearman rank correlation with α. SUPPORTED iff ρ ≥ {-rules.spearman_max} "
        f"and R(α_max) − R(0) paired by seed exceeds the noise threshold with every seed's "
        f"difference positive. NOT SUPPORTED iff ρ ≤ 0, or R(0) − R(α_max) exceeds it in the "
        f"same way. Otherwise INCONCLUSIVE, and always with fewer than 3 sweep points or "
        f"fewer than {rules.min_seeds} seeds per point.")
    sweep = results.ls_sweep(runs)
    stats = [(a, metric_stats.stat(g, lambda run: table.value(run, "aurc", score)))
             for a, g in sweep]
    stats = [(a, s) for a, s in stats if s.n]
    evidence = [f"α = {a:g}: {score} AURC {metric_stats.format_stat(s)} (n = {s.n})"
                for a, s in stats]
    if len(stats) < 3 or stats[0][0] != 0.0:
        evidence.append(f"needs {score} AURC rows (metrics.csv scored with selective "
                        f"classification) for the ce run and at least two ls runs")
        return ClaimResult("S1", STATEMENTS["S1"], INCONCLUSIVE, rule, tuple(evidence))
    groups = dict(sweep)
    rho = decision_statistics.spearman([a for a, _ in stats], [s.mean for _, s in stats])
    alpha_max = stats[-1][0]
    rise = decision_statistics.compare_paired(_aurc_by_seed(table, groups[alpha_max], score),
                                              _aurc_by_seed(table, groups[0.0], score), rules)
    evidence += [f"Spearman ρ(α, R) = {rho:.3f} (SUPPORTED needs ≥ {-rules.spearman_max})",
                 f"R({alpha_max:g}) − R(0): {rise.text()}"]
    fewest = min(s.n for _, s in stats)
    if fewest < rules.min_seeds:
        verdict = INCONCLUSIVE
        evidence.append(f"only {fewest} seed(s) for some sweep point; {rules.min_seeds} needed")
    elif (not math.isnan(rho) and rho <= 0) or rise.direction < 0:
        verdict = NOT_SUPPORTED
    elif not math.isnan(rho) and rho >= -rules.spearman_max and rise.direction > 0:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return ClaimResult("S1", STATEMENTS["S1"], verdict, rule, tuple(evidence),
                       numbers={"spearman": rho, "difference": rise.mean,
                                "difference_std": rise.std, "alpha_max": alpha_max},
                       comparisons=((f"{score} AURC (α = {alpha_max:g}) − (α = 0)", rise, +1),))


def _at_every_alpha(name: str, sweep, a_minus_b) -> tuple[int, list[str], int]:
    """(outcome, evidence, how many α hold) of `a_minus_b(group)` > 0 at every α of the sweep:
    +1 when it holds at every α, -1 when it is contradicted at one, else 0."""
    words = {1: "holds", -1: "contradicted", 0: "within noise"}
    outcomes, lines = [], []
    for alpha, group in sweep:
        paired = a_minus_b(group)
        outcome = decision_statistics.part_outcome(paired.direction, +1)
        if math.isnan(paired.threshold):
            outcome = 0
        outcomes.append(outcome)
        lines.append(f"α = {alpha:g}: {name}: {paired.brief()} → {words[outcome]}")
    combined = -1 if min(outcomes) < 0 else 1 if min(outcomes) > 0 else 0
    return combined, lines, sum(o > 0 for o in outcomes)


def pnorm_fix(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules,
              trend: ClaimResult | None = None) -> ClaimResult:
    """S2: is pnorm better than msp at every α, on AURC and on OOD AUROC, and does its AURC
    lose msp's rise with α? `trend` is S1 for msp when already computed."""
    rule = (
        "Three parts, each paired by seed at every α of the LS sweep. AURC: msp AURC − pnorm "
        "AURC; AUROC: pnorm − msp OOD AUROC (mean over the OOD sets). A part holds when its "
        "difference is beyond the noise threshold and positive for every seed at every α, and "
        "is contradicted when it is beyond it and negative at some α. Trend: pnorm's AURC "
        "R(α_max) − R(0) is not beyond the noise threshold upwards (contradicted when it is); "
        "it is undecided when msp's AURC shows no rise (S1 not supported). SUPPORTED iff all "
        "three hold; NOT SUPPORTED iff one is contradicted; else INCONCLUSIVE.")
    sweep = results.ls_sweep(runs)
    has_rows = sweep and all(table.value(g[0].run, "aurc", s) is not None
                             for _, g in sweep for s in ("msp", FIX_SCORE))
    if len(sweep) < 2 or sweep[0][0] != 0.0 or not has_rows:
        return ClaimResult("S2", STATEMENTS["S2"], INCONCLUSIVE, rule, (
            "needs msp and pnorm AURC rows for the ce run and the ls runs",))
    trend = trend or aurc_trend(table, runs, rules, "msp")

    def aurc_gain(group):
        return decision_statistics.compare_paired(_aurc_by_seed(table, group, "msp"),
                                                  _aurc_by_seed(table, group, FIX_SCORE), rules)

    def auroc_gain(group):
        fix = dataclasses.replace(rules, score=FIX_SCORE)
        msp = dataclasses.replace(rules, score="msp")
        return decision_statistics.compare_paired(claims.ood_mean_by_seed(table, group, fix),
                                                  claims.ood_mean_by_seed(table, group, msp),
                                                  rules)

    aurc, aurc_lines, aurc_held = _at_every_alpha("msp AURC − pnorm AURC", sweep, aurc_gain)
    auroc, auroc_lines, auroc_held = _at_every_alpha("pnorm − msp OOD AUROC", sweep, auroc_gain)
    fixed = aurc_trend(table, runs, rules, FIX_SCORE)
    rise = fixed.comparisons[0][1] if fixed.comparisons else None
    if trend.verdict != SUPPORTED or rise is None or math.isnan(rise.threshold):
        flat, flat_word = 0, "undecided (msp's AURC shows no rise to remove)" \
            if trend.verdict != SUPPORTED else "undecided (too few seeds)"
    else:
        flat = -1 if rise.direction > 0 else 1
        flat_word = "contradicted (pnorm's AURC still rises)" if flat < 0 else "holds"
    evidence = (aurc_lines + auroc_lines
                + [f"pnorm AURC R(α_max) − R(0): {rise.text() if rise else '–'} → {flat_word}"])
    verdict = decision_statistics.combine_outcomes([aurc, auroc, flat])
    n = len(sweep)
    return ClaimResult("S2", STATEMENTS["S2"], verdict, rule, tuple(evidence),
                       numbers={"aurc_held": aurc_held, "auroc_held": auroc_held, "alphas": n,
                                "flat": flat},
                       comparisons=(() if rise is None else
                                    (("pnorm AURC (α_max) − (α = 0)", rise, -1),)))


def evaluate(table: MetricTable, runs: Sequence[RunInfo],
             rules: ClaimRules | None = None) -> list[ClaimResult]:
    """S1 (for msp) and S2."""
    rules = rules or ClaimRules()
    trend = aurc_trend(table, runs, rules, "msp")
    return [trend, pnorm_fix(table, runs, rules, trend)]
