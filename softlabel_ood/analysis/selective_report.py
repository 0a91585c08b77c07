"""The report's pieces on the ID side and on OOD groups: the selective-classification table, S1
for every score, and the paper's claims decided on each group of OOD sets (config.ood_groups).

Each function returns markdown; `report.py` places them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from softlabel_ood.analysis import claims, metric_stats, results, selective_claims
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.analysis.tables import md_table
from softlabel_ood.scoring import metric_records

SELECTIVE_COLUMNS = tuple((m, metric_records.header(m)) for m in ("aurc", "eaurc", "error_auroc"))
SELECTIVE_SCORES = ("msp", selective_claims.FIX_SCORE)


def _fmt(stat: metric_stats.Stat) -> str:
    return metric_stats.format_stat(stat)


def selective_table_markdown(table: MetricTable, runs: Sequence[RunInfo]) -> str:
    """Rows α of the LS sweep; ID test accuracy, then AURC, E-AURC and error AUROC of msp and
    of pnorm."""
    header = ["α", metric_records.header("accuracy")] + [f"`{s}` {label}" for s in SELECTIVE_SCORES
                                    for _, label in SELECTIVE_COLUMNS]
    rows = []
    for alpha, group in results.ls_sweep(runs):
        row = [f"{alpha:g}", _fmt(metric_stats.id_stat(table, group, "accuracy"))]
        row += [_fmt(metric_stats.stat(group, lambda run, m=m, s=s: table.value(run, m, s)))
                for s in SELECTIVE_SCORES for m, _ in SELECTIVE_COLUMNS]
        rows.append(row)
    return md_table(header, rows)


def aurc_trend_by_score_markdown(table: MetricTable, runs: Sequence[RunInfo],
                                 rules: claims.ClaimRules, scores: Sequence[str]) -> str:
    """S1's rule applied to each score's AURC in turn."""
    rows = []
    for score in scores:
        c = selective_claims.aurc_trend(table, runs, rules, score)
        n = c.numbers
        if "spearman" not in n:
            continue
        rho = "–" if math.isnan(n["spearman"]) else f"{n['spearman']:.3f}"
        rise = f"{100 * n['difference']:.2f}" + (
            "" if math.isnan(n["difference_std"]) else f" ± {100 * n['difference_std']:.2f}")
        rows.append([f"`{score}`", c.verdict, rho, rise])
    return md_table(["score", "S1 (AURC rises with α)", "Spearman ρ(α, R)",
                     "R(α_max) − R(0)"], rows)


def usable_groups(table: MetricTable,
                  groups: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """The groups with at least one OOD set that every run was scored on."""
    return {g: tuple(m) for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}


def group_claims(table: MetricTable, runs: Sequence[RunInfo], rules: claims.ClaimRules,
                 groups: Mapping[str, Sequence[str]]) -> dict[str, list[claims.ClaimResult]]:
    """{group: the paper's claims decided on the mean over that group's OOD sets}."""
    return {g: claims.evaluate_claims(table, runs, rules.for_group(g, members))
            for g, members in usable_groups(table, groups).items()}


def group_claims_markdown(by_group: Mapping[str, Sequence[claims.ClaimResult]]) -> str:
    """Rows: the claims; per group, the verdict and its deciding paired differences."""
    header = ["claim"]
    for group in by_group:
        header += [f"verdict ({group})", f"paired differences ({group})"]
    rows = []
    for i, number in enumerate(claims.STATEMENTS):
        row = [str(number)]
        for results_ in by_group.values():
            c = results_[i]
            row += [c.verdict, "; ".join(f"{label}: {p.brief()}" for label, p, _ in
                                         c.comparisons) or "–"]
        rows.append(row)
    return md_table(header, rows)


def group_summary_line(by_group: Mapping[str, Sequence[claims.ClaimResult]]) -> str:
    """One Summary line: each group's verdicts of claims 1-3."""
    parts = [f"{group}: " + ", ".join(f"claim {c.number} {c.verdict}" for c in results_)
             for group, results_ in by_group.items()]
    return "- **By OOD group** (the same rules on each group's mean): " + "; ".join(parts) + "."


def selective_summary_line(c: claims.ClaimResult) -> str:
    """One Summary line for S1 or S2 with the numbers that decided it."""
    head = f"- **{c.number}** ({selective_claims.HEADLINES[c.number]}): **{c.verdict}**"
    n = c.numbers
    if c.number == "S1" and "spearman" in n:
        rho = "–" if math.isnan(n["spearman"]) else f"{n['spearman']:.2f}"
        label, paired, _ = c.comparisons[0]
        return f"{head}: {label} = {paired.brief()}; Spearman ρ(α, AURC) = {rho}."
    if c.number == "S2" and "alphas" in n:
        trend = {1: "its AURC does not rise beyond noise", -1: "its AURC still rises",
                 0: "the trend part is undecided"}[n["flat"]]
        return (f"{head}: pnorm's AURC is lower than msp's beyond noise at {n['aurc_held']} of "
                f"{n['alphas']} α, its OOD AUROC higher at {n['auroc_held']} of {n['alphas']}; "
                f"{trend}.")
    return f"{head}; {c.evidence[-1] if c.evidence else 'no runs for it'}."
