"""The soft-label family's questions (DESIGN.md §6), decided per grid entry of each family
method m against the plain ce run, paired by seed by the paper's rule (`decision_statistics`,
as `claims.py` and `selective_claims.py` decide theirs):

F1  m lowers msp AUROC (mean over the OOD sets; and over each group's) with accuracy held: the
    accuracy rule of claim 1, m's mean accuracy at most `ClaimRules.accuracy_margin` below ce's.
F2  m raises msp AURC (ID test set; lower is better).
F3  pnorm on m recovers what msp lost: m's pnorm AUROC is not below ce's msp AUROC, and m's pnorm
    AURC not above ce's msp AURC, beyond the noise threshold; only what m lost counts (the
    AUROC part when ce − m msp AUROC is beyond noise, the AURC part when m − ce msp AURC is).

Every entry of a family method is decided, the default and the stronger setting alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from softlabel_ood.analysis import claims, metric_stats, results, selective_claims
from softlabel_ood.analysis.claims import ClaimResult, ClaimRules
from softlabel_ood.analysis.decision_statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    PairedComparison,
    combine_outcomes,
    compare_paired,
    part_outcome,
    pct,
)
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.configs import grid

HEADLINES = {"F1": "lowers msp AUROC, accuracy held", "F2": "raises msp AURC",
             "F3": "pnorm on it recovers ce's msp AUROC and AURC"}
FIX_SCORE = selective_claims.FIX_SCORE


@dataclasses.dataclass(frozen=True)
class EntryVerdicts:
    """F1 (on all OOD sets, then per group), F2 and F3 of one grid entry of a family method."""

    runs: list[RunInfo]  # the entry's runs, one per seed
    f1: ClaimResult
    f1_groups: dict[str, ClaimResult]
    f2: ClaimResult
    f3: ClaimResult

    @property
    def entry(self) -> str:
        return self.runs[0].entry

    @property
    def method(self) -> str:
        return self.runs[0].method


def entries(runs: Sequence[RunInfo]) -> list[list[RunInfo]]:
    """The grid entries of the family's methods (`grid.FAMILY_METHODS`) without a teacher or a
    starting point, in grid order."""
    return [g for g in results.group_by_name(runs).values()
            if g[0].method in grid.FAMILY_METHODS and not g[0].teacher and not g[0].init_from]


def applies(runs: Sequence[RunInfo]) -> bool:
    """The family's questions are asked when the runs hold a family method beyond ls."""
    return any(g[0].method != "ls" for g in entries(runs))


def _ce(runs: Sequence[RunInfo]) -> list[RunInfo] | None:
    return dict(results.ls_sweep(runs)).get(0.0)


def _aurc(table: MetricTable, group: Sequence[RunInfo], score: str) -> dict[int, float]:
    return metric_stats.by_seed(group, lambda run: table.value(run, "aurc", score))


def _auroc(table: MetricTable, group: Sequence[RunInfo], rules: ClaimRules,
           score: str) -> dict[int, float]:
    return claims.ood_mean_by_seed(table, group, dataclasses.replace(rules, score=score))


def _where(rules: ClaimRules) -> str:
    return f"the {rules.group} OOD sets" if rules.group else "the OOD sets"


def lowers_auroc(table: MetricTable, ce: Sequence[RunInfo], m: Sequence[RunInfo],
                 rules: ClaimRules) -> ClaimResult:
    """F1: ce − m msp AUROC (mean over the rules' OOD sets) paired by seed, accuracy held."""
    rule = (f"A = msp AUROC (mean over {_where(rules)}). SUPPORTED iff A(ce) − A(m) paired by "
            f"seed exceeds the noise threshold with every seed's difference positive and m's "
            f"mean accuracy is at most {pct(rules.accuracy_margin)} points below ce's. NOT "
            f"SUPPORTED iff A(m) − A(ce) exceeds it in the same way, or m's accuracy is lower "
            f"by more. Otherwise INCONCLUSIVE, and always with fewer than {rules.min_seeds} "
            f"seeds.")
    drop = compare_paired(_auroc(table, ce, rules, "msp"), _auroc(table, m, rules, "msp"), rules)
    acc_ce, acc_m = (metric_stats.id_stat(table, g, "accuracy") for g in (ce, m))
    evidence = [f"A(ce) − A(m): {drop.text()}"]
    if not drop.n or not acc_ce.n or not acc_m.n:
        evidence.append("needs msp AUROC and accuracy rows of ce and m for common seeds")
        return ClaimResult("F1", HEADLINES["F1"], INCONCLUSIVE, rule, tuple(evidence))
    acc_drop = acc_ce.mean - acc_m.mean
    held = not acc_drop > rules.accuracy_margin
    evidence.append(f"mean accuracy: ce {pct(acc_ce.mean)}, m {pct(acc_m.mean)} "
                    f"({pct(-acc_drop)} points; held: {'yes' if held else 'no'})")
    fewest = min(drop.n, acc_ce.n, acc_m.n)
    if fewest < rules.min_seeds:  # as claim 1: the accuracy rule waits for the seeds too
        evidence.append(f"only {fewest} seed(s); {rules.min_seeds} needed")
        verdict = INCONCLUSIVE
    elif drop.direction < 0 or not held:
        verdict = NOT_SUPPORTED
    else:
        verdict = SUPPORTED if drop.direction > 0 else INCONCLUSIVE
    return ClaimResult("F1", HEADLINES["F1"], verdict, rule, tuple(evidence),
                       numbers={"accuracy_drop": acc_drop},
                       comparisons=(("msp AUROC ce − m", drop, +1),))


def raises_aurc(table: MetricTable, ce: Sequence[RunInfo], m: Sequence[RunInfo],
                rules: ClaimRules) -> ClaimResult:
    """F2: m − ce msp AURC paired by seed."""
    rule = ("R = msp AURC. SUPPORTED iff R(m) − R(ce) paired by seed exceeds the noise "
            "threshold with every seed's difference positive; NOT SUPPORTED iff R(ce) − R(m) "
            "does; else INCONCLUSIVE.")
    rise = compare_paired(_aurc(table, m, "msp"), _aurc(table, ce, "msp"), rules)
    evidence = (f"R(m) − R(ce): {rise.text()}",)
    if not rise.n:
        return ClaimResult("F2", HEADLINES["F2"], INCONCLUSIVE, rule,
                           (*evidence, "needs msp AURC rows of ce and m"))
    verdict = combine_outcomes([part_outcome(rise.direction, +1)])
    return ClaimResult("F2", HEADLINES["F2"], verdict, rule, evidence,
                       comparisons=(("msp AURC m − ce", rise, +1),))


def _recovery_part(name: str, gap: PairedComparison, lost: bool) -> tuple[int | None, str]:
    """(outcome, evidence line) of one F3 part; `gap` is what pnorm on m still lacks (ce's msp
    minus m's pnorm, signed so that positive is worse): None when m lost nothing there."""
    if not lost:
        return None, f"{name}: m lost nothing beyond noise here; not counted"
    if math.isnan(gap.threshold):
        return 0, f"{name}: {gap.text()} → undecided (fewer than the required seeds)"
    outcome = -1 if gap.direction > 0 else 1
    return outcome, f"{name}: {gap.text()} → {'contradicted' if outcome < 0 else 'holds'}"


def pnorm_recovers(table: MetricTable, ce: Sequence[RunInfo], m: Sequence[RunInfo],
                   rules: ClaimRules, f1: ClaimResult, f2: ClaimResult) -> ClaimResult:
    """F3: does pnorm on m recover ce's msp AUROC (if F1's drop counted) and AURC (if F2's
    rise counted)?"""
    rule = ("Parts, paired by seed, each counted only where m lost beyond noise (F1's A(ce) − "
            "A(m) or F2's R(m) − R(ce) beyond the threshold with every seed agreeing): AUROC, "
            "msp AUROC of ce − pnorm AUROC of m (mean over the OOD sets); AURC, pnorm AURC of m "
            "− msp AURC of ce. A part holds when that gap is not beyond the noise threshold "
            "upwards, and is contradicted when it is. SUPPORTED iff every counted part holds; "
            "NOT SUPPORTED iff one is contradicted; INCONCLUSIVE when m lost nothing or the "
            "seeds are too few.")
    auroc_gap = compare_paired(_auroc(table, ce, rules, "msp"),
                               _auroc(table, m, rules, FIX_SCORE), rules)
    aurc_gap = compare_paired(_aurc(table, m, FIX_SCORE), _aurc(table, ce, "msp"), rules)
    lost = [bool(c.comparisons) and c.comparisons[0][1].direction > 0 for c in (f1, f2)]
    parts = [_recovery_part("msp AUROC of ce − pnorm AUROC of m", auroc_gap, lost[0]),
             _recovery_part("pnorm AURC of m − msp AURC of ce", aurc_gap, lost[1])]
    evidence = tuple(line for _, line in parts)
    counted = [outcome for outcome, _ in parts if outcome is not None]
    verdict = combine_outcomes(counted)
    comparisons = tuple((label, gap, -1) for (outcome, _), (label, gap) in zip(
        parts, (("AUROC ce msp − m pnorm", auroc_gap), ("AURC m pnorm − ce msp", aurc_gap)),
        strict=True) if outcome is not None)
    return ClaimResult("F3", HEADLINES["F3"], verdict, rule, evidence, comparisons=comparisons)


def evaluate(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules | None = None,
             groups: Mapping[str, Sequence[str]] | None = None) -> list[EntryVerdicts]:
    """F1-F3 of every family entry against the plain ce run; [] without a ce run. `groups`
    (config.ood_groups) adds F1 on each group's mean."""
    rules = rules or ClaimRules()
    ce = _ce(runs)
    if ce is None:
        return []
    out = []
    for m in entries(runs):
        f1 = lowers_auroc(table, ce, m, rules)
        f2 = raises_aurc(table, ce, m, rules)
        by_group = {g: lowers_auroc(table, ce, m, rules.for_group(g, members))
                    for g, members in (groups or {}).items()}
        out.append(EntryVerdicts(m, f1, by_group, f2, pnorm_recovers(table, ce, m, rules, f1, f2)))
    return out
