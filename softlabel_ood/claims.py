"""The paper's three claims (DESIGN.md §1), decided from metrics by rules stated in advance.

Every verdict is one of SUPPORTED, NOT_SUPPORTED or INCONCLUSIVE and comes with the numbers that
decided it. The rules compare means over seeds of one quantity, by default the MSP AUROC averaged
over the OOD sets (`results.MetricTable.ood_sets`); a difference between two grid entries counts
only when it exceeds both `ClaimRules.min_effect` and their combined seed spread
sqrt(std_a² + std_b²) (sample stds, ddof = 1). With fewer than `ClaimRules.min_seeds` seeds the
spread is unknown and a claim that needs it is INCONCLUSIVE.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from softlabel_ood import results
from softlabel_ood.results import MetricTable, RunInfo, Stat

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

STATEMENTS = {
    1: "Label smoothing deteriorates softmax-based OOD detection as α grows, while accuracy "
       "stays equal or improves.",
    2: "A student distilled only on ID data inherits its teacher's OOD behaviour: an OE teacher "
       "makes the student better at OOD detection, a label-smoothed teacher makes it worse.",
    3: "What matters is how the soft label regularises the incorrect classes: with the same mass "
       "α on the incorrect classes, mass shaped like an OE teacher's outputs (kd_incorrect) "
       "detects OOD better than uniform mass (ls).",
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


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    number: int
    statement: str
    verdict: str  # SUPPORTED | NOT_SUPPORTED | INCONCLUSIVE
    rule: str  # the decision rule, in words
    evidence: tuple[str, ...]  # the deciding numbers, one line each


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _stat_text(s: Stat) -> str:
    return f"{results.format_stat(s)} (n = {s.n})"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """a - b against the noise threshold max(min_effect, sqrt(std_a² + std_b²))."""

    difference: float
    threshold: float  # NaN when a seed spread is unknown

    @property
    def direction(self) -> int:
        """+1: a > b beyond noise; -1: a < b beyond noise; 0: within noise or unknown."""
        if math.isnan(self.threshold) or math.isnan(self.difference):
            return 0
        if self.difference > self.threshold:
            return 1
        if self.difference < -self.threshold:
            return -1
        return 0

    def text(self) -> str:
        if math.isnan(self.threshold):
            return f"difference {_pct(self.difference)}, noise threshold unknown"
        return f"difference {_pct(self.difference)}, noise threshold {_pct(self.threshold)}"


def compare(a: Stat, b: Stat, rules: ClaimRules) -> Comparison:
    if min(a.n, b.n) < max(rules.min_seeds, 1):
        return Comparison(a.mean - b.mean, math.nan)
    spread = math.sqrt(a.std**2 + b.std**2) if min(a.n, b.n) >= 2 else 0.0
    return Comparison(a.mean - b.mean, max(rules.min_effect, spread))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN if either is constant."""

    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _quantity(rules: ClaimRules) -> str:
    label = results.METRIC_LABELS.get(rules.metric, rules.metric)
    return f"{rules.score} {label} (mean over OOD sets)"


def claim1(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Over the LS sweep (α = 0 is the ce run), let A(α) be the seed mean of {q} and "
        f"ρ its Spearman rank correlation with α. SUPPORTED iff ρ ≤ {rules.spearman_max}, "
        f"A(0) − A(α_max) exceeds the noise threshold, and no α > 0 has a mean accuracy more "
        f"than {_pct(rules.accuracy_margin)} points below α = 0. NOT SUPPORTED iff ρ ≥ 0, or "
        f"A(α_max) − A(0) exceeds the noise threshold, or such an accuracy drop occurs. "
        f"Otherwise INCONCLUSIVE, and always INCONCLUSIVE with fewer than 3 sweep points or "
        f"fewer than {rules.min_seeds} seeds per point.")
    sweep = results.ls_sweep(runs)
    ood = [(a, results.ood_mean_stat(table, g, rules.score, rules.metric)) for a, g in sweep]
    acc = [(a, results.id_stat(table, g, "accuracy")) for a, g in sweep]
    ood = [(a, s) for a, s in ood if s.n]
    acc = [(a, s) for a, s in acc if s.n]
    evidence = [f"α = {a:g}: {q} {_stat_text(s)}" for a, s in ood]
    evidence += [f"α = {a:g}: accuracy {_stat_text(s)}" for a, s in acc]
    if len(ood) < 3 or ood[0][0] != 0.0 or not acc or acc[0][0] != 0.0:
        evidence.append("needs the ce run (α = 0) and at least two ls runs with metrics")
        return ClaimResult(1, STATEMENTS[1], INCONCLUSIVE, rule, tuple(evidence))

    rho = spearman([a for a, _ in ood], [s.mean for _, s in ood])
    drop = compare(ood[0][1], ood[-1][1], rules)  # A(0) - A(α_max)
    acc0 = acc[0][1].mean
    worst_alpha, worst = min(acc[1:], key=lambda p: p[1].mean, default=(math.nan, Stat(())))
    acc_drop = acc0 - worst.mean
    evidence += [
        f"Spearman ρ(α, A) = {rho:.3f} (threshold ≤ {rules.spearman_max})",
        f"A(0) − A({ood[-1][0]:g}): {drop.text()}",
        f"lowest mean accuracy for α > 0: {_pct(worst.mean)} at α = {worst_alpha:g}, "
        f"{_pct(-acc_drop)} points from α = 0 (a drop of more than "
        f"{_pct(rules.accuracy_margin)} points goes against the claim)",
    ]
    accuracy_ok = not acc_drop > rules.accuracy_margin
    fewest = min(s.n for _, s in ood + acc)
    if fewest < rules.min_seeds:
        evidence.append(f"only {fewest} seed(s) for some sweep point; {rules.min_seeds} needed")
        verdict = INCONCLUSIVE
    elif (not math.isnan(rho) and rho >= 0) or drop.direction < 0 or not accuracy_ok:
        verdict = NOT_SUPPORTED
    elif not math.isnan(rho) and rho <= rules.spearman_max and drop.direction > 0:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return ClaimResult(1, STATEMENTS[1], verdict, rule, tuple(evidence))


def _students(runs: Sequence[RunInfo], method: str) -> dict[str, list[RunInfo]]:
    """Teacher method ('ce', 'ls', 'oe') -> the first grid entry of `method` with such a teacher.

    A teacher counts as 'ce' only when it is a plain ce run, as in `results.ls_sweep`.
    """
    groups = results.group_by_name(runs)
    out: dict[str, list[RunInfo]] = {}
    for group in groups.values():
        student = group[0]
        if student.method != method or student.teacher not in groups:
            continue
        teacher = groups[student.teacher][0]
        kind = teacher.method
        if kind == "ce" and (teacher.teacher or teacher.init_from):
            continue
        out.setdefault(kind, group)
    return out


def _part(name: str, c: Comparison, want: int) -> tuple[int, str]:
    """(+1 holds, -1 contradicted, 0 neither) for a part that wants `c.direction == want`."""
    outcome = 0 if c.direction == 0 else (1 if c.direction == want else -1)
    word = {1: "holds", -1: "contradicted", 0: "within noise"}[outcome]
    if math.isnan(c.threshold):
        word = "undecided (fewer than the required seeds)"
    return outcome, f"{name}: {c.text()} → {word}"


def _combine(outcomes: Sequence[int]) -> str:
    if any(o < 0 for o in outcomes):
        return NOT_SUPPORTED
    if outcomes and all(o > 0 for o in outcomes):
        return SUPPORTED
    return INCONCLUSIVE


def claim2(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Compare kd students by {q}. Part OE: kd-from-oe minus kd-from-ce; part LS: kd-from-ls "
        f"minus kd-from-ce. A part holds when its difference is beyond the noise threshold in the "
        f"claimed direction (OE above, LS below) and is contradicted when beyond it in the other. "
        f"SUPPORTED iff both parts hold; NOT SUPPORTED iff one is contradicted; else INCONCLUSIVE.")
    students = _students(runs, "kd")
    stats = {k: results.ood_mean_stat(table, g, rules.score, rules.metric)
             for k, g in students.items()}
    evidence = [f"kd student of the {k} teacher ({students[k][0].name}): {q} {_stat_text(s)}"
                for k, s in stats.items()]
    if any(k not in stats or not stats[k].n for k in ("ce", "ls", "oe")):
        evidence.append("needs kd students of a ce, an ls and an oe teacher, with metrics")
        return ClaimResult(2, STATEMENTS[2], INCONCLUSIVE, rule, tuple(evidence))
    oe_part, oe_text = _part("kd-from-oe − kd-from-ce", compare(stats["oe"], stats["ce"], rules),
                             +1)
    ls_part, ls_text = _part("kd-from-ls − kd-from-ce", compare(stats["ls"], stats["ce"], rules),
                             -1)
    evidence += [oe_text, ls_text]
    return ClaimResult(2, STATEMENTS[2], _combine([oe_part, ls_part]), rule, tuple(evidence))


def claim3(table: MetricTable, runs: Sequence[RunInfo], rules: ClaimRules) -> ClaimResult:
    q = _quantity(rules)
    rule = (
        f"Compare by {q} the kd_incorrect student of the oe teacher (mass α on the incorrect "
        f"classes, shaped like the teacher's outputs) with the ls run of the same α (uniform "
        f"mass α). SUPPORTED iff kd_incorrect-from-oe minus ls is above the noise threshold; NOT "
        f"SUPPORTED iff it is below minus the threshold; else INCONCLUSIVE. The kd_incorrect "
        f"student of the ce teacher is shown for context and does not decide.")
    students = _students(runs, "kd_incorrect")
    if "oe" not in students:
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule,
                           ("needs a kd_incorrect student of an oe teacher",))
    alpha = students["oe"][0].alpha
    ls = dict(results.ls_sweep(runs)).get(alpha) if alpha > 0 else None
    kdi = results.ood_mean_stat(table, students["oe"], rules.score, rules.metric)
    evidence = [f"kd_incorrect from oe ({students['oe'][0].name}, α = {alpha:g}): {q} "
                f"{_stat_text(kdi)}"]
    if "ce" in students:
        ctx = results.ood_mean_stat(table, students["ce"], rules.score, rules.metric)
        evidence.append(f"kd_incorrect from ce ({students['ce'][0].name}), context: {q} "
                        f"{_stat_text(ctx)}")
    if ls is None:
        evidence.append(f"needs an ls run with α = {alpha:g}")
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule, tuple(evidence))
    ls_stat = results.ood_mean_stat(table, ls, rules.score, rules.metric)
    evidence.append(f"ls with α = {alpha:g} ({ls[0].name}): {q} {_stat_text(ls_stat)}")
    if not kdi.n or not ls_stat.n:
        evidence.append("missing metrics")
        return ClaimResult(3, STATEMENTS[3], INCONCLUSIVE, rule, tuple(evidence))
    outcome, text = _part("kd_incorrect-from-oe − ls", compare(kdi, ls_stat, rules), +1)
    evidence.append(text)
    return ClaimResult(3, STATEMENTS[3], _combine([outcome]), rule, tuple(evidence))


def evaluate_claims(table: MetricTable, runs: Sequence[RunInfo],
                    rules: ClaimRules | None = None) -> list[ClaimResult]:
    rules = rules or ClaimRules()
    return [claim1(table, runs, rules), claim2(table, runs, rules), claim3(table, runs, rules)]
