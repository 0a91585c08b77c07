"""The report's text on the claims: the Summary's verdict lines (and its line on unfinished
runs), the Claims section with each rule and its evidence, and claim 1 decided for every score.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from softlabel_ood.analysis import claims, metric_stats
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.analysis.tables import md_table
from softlabel_ood.scoring import metric_records
from softlabel_ood.workdir import trained_steps


def summary_markdown(claim_results: Sequence[claims.ClaimResult],
                     rules: claims.ClaimRules) -> str:
    """The verdicts, one line each, with the rule's quantity and noise threshold in one sentence."""
    label = metric_records.label(rules.metric)
    return (f"Verdicts of the paper's claims, paired by seed (A = {rules.score} {label} averaged "
            f"over the OOD sets, in points; a difference a − b counts when its mean is beyond "
            f"the noise threshold max({100 * rules.min_effect:g}, std of the per-seed "
            f"differences) on the claimed side with every seed agreeing; rules and evidence in "
            f"Claims below):\n\n" + "\n".join(summary_line(c, rules) for c in claim_results) + "\n")


def summary_line(c: claims.ClaimResult, rules: claims.ClaimRules) -> str:
    """One line: the claim, its verdict (paired by seed) and the numbers that decided it."""
    head = f"- **Claim {c.number}** ({claims.HEADLINES[c.number]}): **{c.verdict}**"
    if not c.comparisons:  # runs or metrics missing: the last evidence line says which
        return f"{head}; {c.evidence[-1] if c.evidence else 'no runs for it'}."
    parts = [f"{label} = {p.brief()}" for label, p, _ in c.comparisons]
    n = c.numbers
    if c.number == 1:
        rho = n.get("spearman", math.nan)
        parts.append("Spearman ρ(α, A) = " + ("–" if math.isnan(rho) else f"{rho:.2f}")
                     + f" (supported needs ≤ {rules.spearman_max:g})")
        drop = n.get("accuracy_drop", math.nan)
        if drop > 0:
            parts.append(f"accuracy at α = {n['worst_alpha']:g} is {100 * drop:.2f} points below "
                         f"α = 0 (more than {100 * rules.accuracy_margin:g} goes against the "
                         f"claim)")
        elif not math.isnan(drop):
            parts.append(f"no α > 0 has a lower accuracy than α = 0 (the lowest, at "
                         f"α = {n['worst_alpha']:g}, is {-100 * drop:.2f} points above)")
    return f"{head}: " + "; ".join(parts) + "."


def unfinished_markdown(unfinished: Mapping[str, trained_steps.Checkpoint | None]) -> str:
    """The Summary's line on runs whose metrics are not their finished models' ("" if none)."""
    if not unfinished:
        return ""
    named = ", ".join(f"`{run}` ({c.describe() if c else 'step unknown'})"
                      for run, c in unfinished.items())
    return (f"**Unfinished runs**: {named}. Their predictions are not, or not known to be, "
            "of the finished models, and the verdicts and tables below use them as they "
            "are.\n\n")


def claims_markdown(claim_results: Sequence[claims.ClaimResult], rules: claims.ClaimRules) -> str:
    out = [
        "Each claim of the paper is decided from the metrics of the tables below by the rule "
        "printed with it. "
        f"The rules compare {rules.score} "
        f"{metric_records.label(rules.metric)} averaged over the OOD sets, "
        "**paired by seed**: within a seed every run of the grid shares its initialisation, "
        "data order and augmentation (teachers and students included), so two grid entries are "
        "compared through the per-seed differences d_s = a_s − b_s over the seeds both have. A "
        "difference counts only when the mean of the d_s exceeds the **noise threshold** "
        f"max({100 * rules.min_effect:g} points, std of the d_s) (sample std, ddof = 1) and "
        f"every d_s has the same sign; below {rules.min_seeds} paired seeds that threshold is "
        "unknown. Verdicts: **supported** (the rule's conditions hold), **not supported** (the "
        "numbers go against the claim), **inconclusive** (neither, or the runs or seeds needed "
        "are missing). For comparison, each claim also shows the verdict of the earlier rule, "
        "which treats the two entries' seeds as independent samples (difference of the seed "
        "means against max(min effect, sqrt(std_a² + std_b²))). S1 and S2 ask the same of the "
        "ID side, selective classification (AURC, lower is better) and its post-hoc fix "
        "(pnorm), by the rules printed with them. Numbers are in percent; differences in "
        "percentage points.\n",
    ]
    out.append(md_table(["claim", "verdict (paired by seed)", "verdict (seeds independent)"],
                         [[str(c.number), c.verdict, c.independent_verdict or "–"]
                          for c in claim_results]))
    for c in claim_results:
        out.append(f"### Claim {c.number}: {c.verdict}\n")
        out.append(f"*{c.statement}*\n")
        out.append(f"Rule: {c.rule}\n")
        if c.independent_verdict:
            out.append(f"With seeds treated as independent samples the verdict is "
                       f"*{c.independent_verdict}*.\n")
        out.append("\n".join(f"- {line}" for line in c.evidence) + "\n")
    return "\n".join(out)


def claim1_by_score_markdown(table: MetricTable, runs: Sequence[RunInfo],
                             rules: claims.ClaimRules, scores: Sequence[str]) -> str:
    """Claim 1's rule applied to each score in turn: for which scores does LS hurt detection?"""
    rows = []
    for score in scores:
        c = claims.claim1(table, runs, dataclasses.replace(rules, score=score))
        n = c.numbers
        rho = "–" if math.isnan(n.get("spearman", math.nan)) else f"{n['spearman']:.3f}"
        drop = metric_stats.format_stat(metric_stats.Stat(())) if "difference" not in n else (
            f"{100 * n['difference']:.2f}" + ("" if math.isnan(n["difference_std"])
                                              else f" ± {100 * n['difference_std']:.2f}"))
        rows.append([f"`{score}`", c.verdict, c.independent_verdict or "–", rho, drop])
    return md_table(["score", "claim 1 (paired by seed)", "claim 1 (seeds independent)",
                      "Spearman ρ(α, A)", "A(0) − A(α_max)"], rows)
