"""The paper's three claims (DESIGN.md §1), decided from metrics by rules stated in advance.

Every verdict is one of SUPPORTED, NOT_SUPPORTED or INCONCLUSIVE and comes with the numbers that
decided it. The rules compare one quantity, by default the MSP AUROC averaged over the OOD sets
(`metric_stats.MetricTable.ood_sets`), between two grid entries.

Runs are paired by seed. Within a seed every run of the grid shares its initialisation, data order
and augmentation (teachers and students included), so the two entries' runs with the same seed
differ only in the method; seed-to-seed variation common to both cancels in their difference.
The deciding rule is therefore paired (`decision_statistics.PairedComparison`): over the seeds
both entries have, the differences d_s = a_s - b_s; a difference counts when their mean exceeds
the noise threshold max(`ClaimRules.min_effect`, std(d)) (sample std, ddof = 1) and every d_s
has the same sign. With fewer than `ClaimRules.min_seeds` common seeds the spread is unknown and
a claim that needs it is INCONCLUSIVE.

The earlier rule, which treats the two entries' seeds as independent samples (the difference of
the seed means against max(min_effect, sqrt(std_a² + std_b²)),
`decision_statistics.Comparison`), is still computed and reported beside it for comparison
(`ClaimResult.independent_verdict`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from softlabel_ood.analysis import metric_stats, results
from softlabel_ood.analysis.decision_statistics import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Comparison,
    PairedComparison,
    combine_outcomes,
    compare,
    compare_paired,
    part_outcome,
    pct,
    spearman,
)
from softlabel_ood.analysis.metric_stats import MetricTable, Stat
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.scoring import metric_records

STATEMENTS = {
    1: "Label smoothing deteriorates softmax-based OOD detection as α grows, while accuracy "
       "stays equal or improves.",
    2: "A student distilled only on ID data inherits its teacher's OOD behaviour: an OE teacher "
       "makes the student better at OOD detection, a label-smoothed teacher makes it worse.",
    3: "What matters is how the soft label regularises the incorrect classes: with the same mass "
       "α on the incorrect classes, mass shaped like an OE teacher's outputs (kd_incorrect) "
       "detects OOD better than uniform mass (ls).",
}
# Each claim in a few words, for the report's summary and figure.
HEADLINES = {
    1: "label smoothing hurts softmax-based detection as α grows, accuracy kept",
    2: "a kd student inherits its teacher's OOD behaviour",
    3: "teacher-shaped incorrect-class mass beats uniform mass",
}


@dataclasses.dataclass(frozen=True)
class ClaimRules:
    """The thresholds of the decision rules; the report prints them with the verdicts."""

    score: str = "msp"  # the softmax-based score the claims are about
    metric: str = "auroc"  # higher is better
    spearman_max: float = -0.8  # claim 1: rank correlation of α and the metric must be at most this
    accuracy_margin: float = 0.01  # claim 1: largest allowed accuracy drop (fraction; 1 point)
    min_effect: float = 0.005  # smallest difference that counts (fraction; 0.5 points)
    min_seeds: int = 2  # seeds per grid entry needed to know the seed spread
    # The OOD sets the quantity averages over, and their group's name (config.ood_groups);
    # empty: every OOD set that all runs were scored on.
    oods: tuple[str, ...] = ()
    group: str = ""

    def for_group(self, group: str, members) -> ClaimRules:
        """The same rules, on the mean over one group's OOD sets."""
        return dataclasses.replace(self, oods=tuple(members), group=group)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    number: int | str  # 1-3: the paper's claims; "S1", "S2": selective_claims.py
    statement: str
    verdict: str  # SUPPORTED | NOT_SUPPORTED | INCONCLUSIVE, by the paired rule
    rule: str  # the decision rule, in words
    evidence: tuple[str, ...]  # the deciding numbers, one line each
    independent_verdict: str = ""  # the same rule with seeds treated as independent
    numbers: dict[str, float] = dataclasses.field(default_factory=dict)  # the key figures
    # The paired comparisons that decided it: (what, a − b paired by seed, the claimed sign).
    comparisons: tuple[tuple[str, PairedComparison, int], ...] = ()


def _stat_text(s: Stat) -> str:
    return f"{metric_stats.format_stat(s)} (n = {s.n})"


def _run_value(table: MetricTable, rules: ClaimRules):
    """run -> the claims' quantity for that run: the metric averaged over the rules' OOD sets."""
    if rules.oods:
        return lambda run: metric_stats.ood_group_mean(table, run, rules.score, rules.metric,
                                                       rules.oods)
    return lambda run: table.ood_mean(run, rules.score, rules.metric)


def ood_mean_by_seed(table: MetricTable, group: Sequence[RunInfo],
                      rules: ClaimRules) -> dict[int, float]:
    return metric_stats.by_seed(group, _run_value(table, rules))


def _ood_mean_stat(table: MetricTable, group: Sequence[RunInfo], rules: ClaimRules) -> Stat:
    return metric_stats.stat(group, _run_value(table, rules))


def _quantity(rules: ClaimRules) -> str:
    label = metric_records.label(rules.metric)
    where = f"the {rules.group} OOD sets" if rules.group else "OOD sets"
    return f"{rules.score} {label} (mean over {where})"


def claim1(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Over the LS sweep (α = 0 is the ce run), let A(α) be the seed mean of {q} and "
        f"ρ its Spearman rank correlation with α. SUPPORTED iff ρ ≤ {rules.spearman_max}, "
        f"A(0) − A(α_max) paired by seed exceeds the noise threshold with every seed's "
        f"difference positive, and no α > 0 has a mean accuracy more than "
        f"{pct(rules.accuracy_margin)} points below α = 0. NOT SUPPORTED iff ρ ≥ 0, or "
        f"A(α_max) − A(0) exceeds the noise threshold in the same way, or such an accuracy drop "
        f"occurs. Otherwise INCONCLUSIVE, and always INCONCLUSIVE with fewer than 3 sweep points "
        f"or fewer than {rules.min_seeds} seeds per point.")
    sweep = results.ls_sweep(runs)
    ood = [(a, _ood_mean_stat(table, g, rules)) for a, g in sweep]
    acc = [(a, metric_stats.id_stat(table, g, "accuracy")) for a, g in sweep]
    groups = dict(sweep)
    ood = [(a, s) for a, s in ood if s.n]
    acc = [(a, s) for a, s in acc if s.n]
    evidence = [f"α = {a:g}: {q} {_stat_text(s)}" for a, s in ood]
    evidence += [f"α = {a:g}: accuracy {_stat_text(s)}" for a, s in acc]
    if len(ood) < 3 or ood[0][0] != 0.0 or not acc or acc[0][0] != 0.0:
        evidence.append("needs the ce run (α = 0) and at least two ls runs with metrics")
        return ClaimResult(1, STATEMENTS[1], INCONCLUSIVE, rule, tuple(evidence), INCONCLUSIVE)

    rho = spearman([a for a, _ in ood], [s.mean for _, s in ood])
    alpha_max = ood[-1][0]
    drop = compare_paired(ood_mean_by_seed(table, groups[0.0], rules),
                          ood_mean_by_seed(table, groups[alpha_max], rules), rules)
    drop_independent = compare(ood[0][1], ood[-1][1], rules)  # A(0) - A(α_max)
    acc0 = acc[0][1].mean
    worst_alpha, worst = min(acc[1:], key=lambda p: p[1].mean, default=(math.nan, Stat(())))
    acc_drop = acc0 - worst.mean
    evidence += [
        f"Spearman ρ(α, A) = {rho:.3f} (threshold ≤ {rules.spearman_max})",
        f"A(0) − A({alpha_max:g}): {drop.text()}",
        f"A(0) − A({alpha_max:g}), seeds as independent samples: {drop_independent.text()}",
        f"lowest mean accuracy for α > 0: {pct(worst.mean)} at α = {worst_alpha:g}, "
        f"{pct(-acc_drop)} points from α = 0 (a drop of more than "
        f"{pct(rules.accuracy_margin)} points goes against the claim)",
    ]
    accuracy_ok = not acc_drop > rules.accuracy_margin
    fewest = min(s.n for _, s in ood + acc)

    def verdict(direction: int) -> str:
        if fewest < rules.min_seeds:
            return INCONCLUSIVE
        if (not math.isnan(rho) and rho >= 0) or direction < 0 or not accuracy_ok:
            return NOT_SUPPORTED
        if not math.isnan(rho) and rho <= rules.spearman_max and direction > 0:
            return SUPPORTED
        return INCONCLUSIVE

    if fewest < rules.min_seeds:
        evidence.append(f"only {fewest} seed(s) for some sweep point; {rules.min_seeds} needed")
    return ClaimResult(1, STATEMENTS[1], verdict(drop.direction), rule, tuple(evidence),
                       verdict(drop_independent.direction),
                       {"spearman": rho, "difference": drop.mean, "difference_std": drop.std,
                        "alpha_max": alpha_max, "accuracy_drop": acc_drop,
                        "worst_alpha": worst_alpha},
                       ((f"ce (α = 0) − ls (α = {alpha_max:g})", drop, +1),))


def _students(runs: Sequence[RunInfo], method: str) -> dict[str, list[RunInfo]]:
    """Teacher method ('ce', 'ls', 'oe') -> the first grid entry of `method` with such a teacher.

    A teacher counts as 'ce' only when it is a plain ce run, as in `results.ls_sweep`.
    """
    out: dict[str, list[RunInfo]] = {}
    for student, teacher in results.students(runs, (method,)):
        kind = teacher[0].method
        if kind == "ce" and not results.is_plain_ce(teacher[0]):
            continue
        out.setdefault(kind, student)
    return out


def _part(name: str, paired: PairedComparison, independent: Comparison,
          want: int) -> tuple[int, int, list[str]]:
    """(paired outcome, independent outcome, evidence lines) for a part that wants a − b to
    have the sign of `want`; an outcome is +1 holds, -1 contradicted, 0 neither."""
    words = {1: "holds", -1: "contradicted", 0: "within noise"}
    lines = []
    outcomes = []
    for label, c in (("", paired), (", seeds as independent samples", independent)):
        outcome = part_outcome(c.direction, want)
        word = words[outcome]
        if math.isnan(c.threshold):
            word = "undecided (fewer than the required seeds)"
        outcomes.append(outcome)
        lines.append(f"{name}{label}: {c.text()} → {word}")
    return outcomes[0], outcomes[1], lines


def _both(table: MetricTable, a: Sequence[RunInfo], b: Sequence[RunInfo],
          rules: ClaimRules) -> tuple[PairedComparison, Comparison]:
    """a − b of the claims' quantity, paired by seed and with seeds as independent samples."""
    paired = compare_paired(ood_mean_by_seed(table, a, rules),
                            ood_mean_by_seed(table, b, rules), rules)
    independent = compare(_ood_mean_stat(table, a, rules),
                          _ood_mean_stat(table, b, rules), rules)
    return paired, independent


def claim2(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Compare kd students by {q}, paired by seed. Part OE: kd-from-oe minus kd-from-ce; "
        f"part LS: kd-from-ls minus kd-from-ce. A part holds when its mean difference is beyond "
        f"the noise threshold in the claimed direction (OE above, LS below) with every seed's "
        f"difference of that sign, and is contradicted when the same holds in the other "
        f"direction. SUPPORTED iff both parts hold; NOT SUPPORTED iff one is contradicted; else "
        f"INCONCLUSIVE.")
    students = _students(runs, "kd")
    stats = {k: _ood_mean_stat(table, g, rules)
             for k, g in students.items()}
    evidence = [f"kd student of the {k} teacher ({students[k][0].entry}): {q} {_stat_text(s)}"
                for k, s in stats.items()]
    if any(k not in stats or not stats[k].n for k in ("ce", "ls", "oe")):
        evidence.append("needs kd students of a ce, an ls and an oe teacher, with metrics")
        return ClaimResult(2, STATEMENTS[2], INCONCLUSIVE, rule, tuple(evidence), INCONCLUSIVE)
    oe_pair = _both(table, students["oe"], students["ce"], rules)
    ls_pair = _both(table, students["ls"], students["ce"], rules)
    oe, oe_independent, oe_text = _part("kd-from-oe − kd-from-ce", *oe_pair, +1)
    ls, ls_independent, ls_text = _part("kd-from-ls − kd-from-ce", *ls_pair, -1)
    evidence += oe_text + ls_text
    return ClaimResult(2, STATEMENTS[2], combine_outcomes([oe, ls]), rule, tuple(evidence),
                       combine_outcomes([oe_independent, ls_independent]),
                       comparisons=(("kd-from-oe − kd-from-ce", oe_pair[0], +1),
                                    ("kd-from-ls − kd-from-ce", ls_pair[0], -1)))


def claim3(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Compare by {q}, paired by seed, the kd_incorrect student of the oe teacher (mass α on "
        f"the incorrect classes, shaped like the teacher's outputs) with the ls run of the same "
        f"α (uniform mass α). SUPPORTED iff kd_incorrect-from-oe minus ls is above the noise "
        f"threshold with every seed's difference positive; NOT SUPPORTED iff it is below minus "
        f"the threshold with every difference negative; else INCONCLUSIVE. The kd_incorrect "
        f"student of the ce teacher is shown for context and does not decide.")
    students = _students(runs, "kd_incorrect")
    if "oe" not in students:
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule,
                           ("needs a kd_incorrect student of an oe teacher",), INCONCLUSIVE)
    alpha = students["oe"][0].strength
    ls = dict(results.ls_sweep(runs)).get(alpha) if alpha > 0 else None
    kdi = _ood_mean_stat(table, students["oe"], rules)
    evidence = [f"kd_incorrect from oe ({students['oe'][0].entry}, α = {alpha:g}): {q} "
                f"{_stat_text(kdi)}"]
    if "ce" in students:
        ctx = _ood_mean_stat(table, students["ce"], rules)
        evidence.append(f"kd_incorrect from ce ({students['ce'][0].entry}), context: {q} "
                        f"{_stat_text(ctx)}")
    if ls is None:
        evidence.append(f"needs an ls run with α = {alpha:g}")
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule, tuple(evidence), INCONCLUSIVE)
    ls_stat = _ood_mean_stat(table, ls, rules)
    evidence.append(f"ls with α = {alpha:g} ({ls[0].entry}): {q} {_stat_text(ls_stat)}")
    if not kdi.n or not ls_stat.n:
        evidence.append("missing metrics")
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule, tuple(evidence), INCONCLUSIVE)
    pair = _both(table, students["oe"], ls, rules)
    outcome, independent, text = _part("kd_incorrect-from-oe − ls", *pair, +1)
    evidence += text
    return ClaimResult(3, STATEMENTS[3], combine_outcomes([outcome]), rule, tuple(evidence),
                       combine_outcomes([independent]),
                       comparisons=((f"kd_incorrect-from-oe − ls (α = {alpha:g})", pair[0], +1),))


def evaluate_claims(table: MetricTable, runs: Sequence[RunInfo],
                    rules: ClaimRules | None = None) -> list[ClaimResult]:
    rules = rules or ClaimRules()
    return [claim1(table, runs, rules), claim2(table, runs, rules), claim3(table, runs, rules)]
