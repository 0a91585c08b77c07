"""The reproduction report: metrics.csv, report.md with its tables and claims, and PNG figures.

    write_report(rows, "<workdir>/report", runs=runs)

report.md opens with its answers and ends with its reference material, in this order (`SECTIONS`):
the Summary (one line per claim with the numbers that decided it, the claims figure and the α
sweep), the Claims with their rules and evidence (the paper's three; per group of OOD sets; and
S1, S2 on selective classification, `selective_claims`), the tables, the other figures, then the
Definitions, the Runs, the ODIN pairs and the Environment. No table is wider than
`tables.MAX_TABLE_COLUMNS`: wider ones are cut into several that repeat the row labels.

Tables print percent (a metric's fraction times 100) as "mean ± std" over seeds; metrics.csv
keeps the fractions. How each number is computed is stated in report.md itself (see
`DEFINITIONS`), in `results` (aggregation over OOD sets and seeds) and in `claims` (the decision
rules), so that a reader of the report alone can tell what every number is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Mapping, Sequence

from etils import epath

from softlabel_ood import __version__, methods, scoring
from softlabel_ood.analysis import (
    claims,
    environment,
    figures,
    metric_stats,
    results,
    selective_claims,
    selective_report,
)
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.analysis.tables import md_table
from softlabel_ood.cli_errors import UserError
from softlabel_ood.scoring import metric_records
from softlabel_ood.workdir import atomic_files, predictions, run_dir, trained_steps

OOD_METRICS = ("auroc", "fpr95", "aupr_out")  # the OOD metrics of the report's tables
ID_METRICS = ("accuracy", "ece")
# The `##` sections of report.md, in order (Claims and Figures only when there is something).
SECTIONS = ("Summary", "Claims", "Table 1. Label-smoothing sweep",
            "Table 1b. Selective classification", "Table 2. Teachers and students",
            "Table 3. All runs", "Figures", "Definitions", "Runs", "ODIN pairs", "Environment")
CLAIMS_FIGURE = "claims.png"

DEFINITIONS = """\
- **Units.** Every value in the tables is a percentage: the metric's fraction times 100.
  `metrics.csv` holds the fractions themselves.
- **Seeds.** A cell is `mean ± std` over the seeds of one grid entry: the arithmetic mean and the
  sample standard deviation (ddof = 1). With one seed only the value is printed. "–" means no
  value. The number of seeds per entry is in the Runs table.
- **Mean over OOD sets.** For one run, the unweighted mean of the metric over the OOD sets
  {oods}; then mean ± std of that per-run mean over seeds.
- **Metrics** (code: `softlabel_ood/scoring/metrics.py`; ID test set positive, label 1; OOD set
  negative, label 0; a score is higher for more in-distribution inputs):
  AUROC = area under the ROC curve (`roc_auc_score`);
  FPR95 = the fraction of OOD examples accepted at the highest threshold that accepts at least
  95% of the ID examples (`roc_curve(..., drop_intermediate=False)`, first point with TPR ≥ 0.95);
  AUPR-out = average precision with OOD as the positive class and −score as its score;
  accuracy = top-1 accuracy on the ID test set;
  ECE = expected calibration error of the top-label confidence with 15 equal-width bins over
  (0, 1], each bin weighted by its share of examples. ↑: higher is better; ↓: lower is better.
- **Selective classification** (code: `softlabel_ood/scoring/selective.py`; ID test set only,
  a score's ranking of the model's own predictions): AURC = the mean, over the coverages i/n,
  of the error rate among the i examples with the highest score (tied examples averaged over
  their orders); E-AURC = AURC minus r + (1 − r) ln(1 − r), a perfect ranking's AURC at the
  error rate r; error AUROC = AUROC of the score with the correct predictions as positives and
  the wrong ones as negatives.
- **Scores** (exact formulas: `softlabel_ood/scoring/scores.py`): `msp` maximum
  softmax probability; `max_logit` largest logit; `energy` logsumexp of the logits (T = 1);
  `entropy` negative entropy of the softmax; `pnorm` (MaxLogit-pNorm) the largest centred
  logit divided by the p-norm of the centred logits (p = 2 unless a run's `pnorm_p` says
  otherwise); `mahalanobis` negative smallest squared Mahalanobis
  distance to a class mean of the ID train features (shared covariance; the vanilla last-layer
  variant, OpenOOD's MDS); `knn` cosine similarity to the k-th most similar ID train feature
  minus 1 ({knn_k}: Sun et al.'s k = 50 for 50,000 training images, scaled to the ID train
  split's size, one neighbour per 1,000 examples, at least 1); `react` energy of the logits
  of the features clipped at the 90th percentile of the ID train activations (the original
  code takes it on ID validation data, which the project does not hold out); `vim` energy minus
  the scaled norm of the features' residual outside the principal subspace of the ID train
  features (`softlabel_ood/scoring/head_scores.py`); `odin` max softmax at temperature T of the
  input perturbed by ε, at the pair chosen on ID train data only (see "ODIN pairs" below).
  Feature scores are missing for runs saved without features, `react` and `vim` for runs saved
  without the classifier head, `odin` for runs saved without ODIN scores.
- **Runs.** α is `config.label_smoothing`: the label-smoothing factor of an ls run, and the mass
  on the incorrect classes of a kd_incorrect run. The LS sweep's α = 0 row is the ce run (label
  smoothing with α = 0 is cross-entropy with one-hot targets). A kd student minimises
  (1 − w)·CE(one-hot) + w·T²·KL(teacher_T ‖ student_T) with w = `kd.weight` and temperature
  T = `kd.temperature` (`softlabel_ood/training/soft_labels.py`); a kd_incorrect student's target
  keeps mass 1 − α on the true class and spreads α like softmax(teacher logits / T) over the
  incorrect classes. A student's teacher (and a fine-tuned run's starting point) is that grid
  entry's run with the same seed.
"""


def _fmt(stat: metric_stats.Stat) -> str:
    return metric_stats.format_stat(stat)


def runs_markdown(runs: Sequence[RunInfo]) -> str:
    rows = []
    for name, group in results.group_by_name(runs).items():
        r = group[0]
        strength = methods.strength(r.method)
        seeds = ", ".join(str(g.seed) for g in group)
        rows.append([f"`{name}`", r.method, (strength, r.alpha), r.teacher, r.init_from, seeds])
    # The strength column is named by the records (α) when the methods with one share it.
    labels = {s.label for _, _, (s, _), *_ in rows if s is not None} or {"α"}
    header = labels.pop() if len(labels) == 1 else "strength"
    for row in rows:
        strength, value = row[2]
        row[2] = "" if strength is None else \
            f"{value:g}" if strength.label == header else f"{strength.label} = {value:g}"
    return md_table(["run", "method", header, "teacher", "fine-tuned from", "seeds"], rows)


def _scores(table: MetricTable, scores: Sequence[str] | None) -> list[str]:
    return list(table.scores if scores is None else scores)


def _metric_label(metric: str) -> str:
    return metric_records.header(metric)


def sweep_metric_markdown(table: MetricTable, runs: Sequence[RunInfo], metric: str, *,
                          scores: Sequence[str] | None = None, ood: str | None = None,
                          with_id: bool = False) -> str:
    """Rows α of the LS sweep; a column per score: `metric` averaged over the OOD sets, or on
    `ood` alone. `with_id` puts ID test accuracy and ECE first."""
    scores = _scores(table, scores)
    id_metrics = ID_METRICS if with_id else ()
    header = ["α", *map(metric_records.header, id_metrics), *(f"`{s}`" for s in scores)]
    rows = []
    for alpha, group in results.ls_sweep(runs):
        row = [f"{alpha:g}"] + [_fmt(metric_stats.id_stat(table, group, m)) for m in id_metrics]
        row += [_fmt(metric_stats.ood_mean_stat(table, group, s, metric) if ood is None
                     else metric_stats.ood_stat(table, group, s, metric, ood)) for s in scores]
        rows.append(row)
    return md_table(header, rows)


def table1_markdown(table: MetricTable, runs: Sequence[RunInfo], *,
                    scores: Sequence[str] | None = None) -> str:
    """Rows α of the LS sweep; one table per OOD metric (averaged over the OOD sets) with a
    column per score, the first also with ID test accuracy and ECE."""
    return "\n".join(
        f"**{_metric_label(m)}**, averaged over the OOD sets\n\n"
        + sweep_metric_markdown(table, runs, m, scores=scores, with_id=i == 0)
        for i, m in enumerate(OOD_METRICS))


def sweep_by_score_markdown(table: MetricTable, runs: Sequence[RunInfo], score: str, *,
                            groups: dict[str, tuple[str, ...]] | None = None) -> str:
    """Rows α of the LS sweep; accuracy, ECE, then `score`'s OOD metrics averaged over all OOD
    sets and its AUROC averaged over each group's OOD sets."""
    groups = {g: m for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}
    header = ["α", *map(metric_records.header, (*ID_METRICS, *OOD_METRICS))]
    auroc = metric_records.BY_NAME["auroc"]
    header += [f"{auroc.label} {g} {auroc.arrow}" for g in groups]
    rows = []
    for alpha, group in results.ls_sweep(runs):
        row = [f"{alpha:g}", _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        row += [_fmt(metric_stats.ood_mean_stat(table, group, score, m)) for m in OOD_METRICS]
        row += [_fmt(metric_stats.ood_group_mean_stat(table, group, score, "auroc", members))
                for members in groups.values()]
        rows.append(row)
    return md_table(header, rows)


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


def ood_table_markdown(table: MetricTable, runs: Sequence[RunInfo], ood: str, *,
                       scores: Sequence[str] | None = None) -> str:
    """Rows α of the LS sweep; one table per OOD metric on one OOD set, a column per score."""
    return "\n".join(f"**{_metric_label(m)}** on `{ood}`\n\n"
                     + sweep_metric_markdown(table, runs, m, scores=scores, ood=ood)
                     for m in OOD_METRICS)


def _reads_alpha(method: str) -> bool:
    # A method of another version (a run directory read back) may be unknown here: no α then.
    strength = methods.strength(method)
    return strength is not None and strength.field == "label_smoothing"


def _teacher_label(teacher: RunInfo) -> str:
    if _reads_alpha(teacher.method):
        return f"ls (α = {teacher.alpha:g}; `{teacher.name}`)"
    return f"{teacher.method} (`{teacher.name}`)"


def table2_markdown(table: MetricTable, runs: Sequence[RunInfo], *, score: str = "msp") -> str:
    """Rows: teachers; columns: accuracy and `score` OOD metrics of the teacher and its students."""
    student_methods = ("kd", "kd_incorrect")
    # teacher entry -> student method -> the first student entry of that method
    students: dict[str, dict[str, list[RunInfo]]] = {}
    teachers: dict[str, list[RunInfo]] = {}
    for student, teacher in results.students(runs, student_methods):
        teachers[teacher[0].name] = teacher
        students.setdefault(teacher[0].name, {}).setdefault(student[0].method, student)
    cols = [("accuracy", ""), ("auroc", score), ("fpr95", score)]
    header = ["teacher"]
    for who in ("teacher", *student_methods):
        header += [f"{who}: {metric_records.header(m)}" for m, _ in cols]
    rows = []
    for teacher_name, by_method in students.items():
        row = [_teacher_label(teachers[teacher_name][0])]
        for group in (teachers[teacher_name], *(by_method.get(m) for m in student_methods)):
            for metric, s in cols:
                if group is None:
                    row.append("–")
                elif metric == "accuracy":
                    row.append(_fmt(metric_stats.id_stat(table, group, metric)))
                else:
                    row.append(_fmt(metric_stats.ood_mean_stat(table, group, s, metric)))
        rows.append(row)
    return md_table(header, rows)


def table3_markdown(table: MetricTable, runs: Sequence[RunInfo], *,
                    scores: Sequence[str] | None = None, metric: str = "auroc",
                    names: Sequence[str] | None = None, ood: str | None = None) -> str:
    """Rows: grid entries (with their method); columns: accuracy, ECE and `metric` per score.

    `metric` is averaged over the OOD sets, or taken on `ood` alone when it is given.
    """
    scores = _scores(table, scores)
    groups = results.group_by_name(runs)
    header = ["run (method)", *map(metric_records.header, ID_METRICS)]
    header += [f"{s} {_metric_label(metric)}" for s in scores]
    rows = []
    for name in (groups if names is None else names):
        group = groups[name]
        row = [f"`{name}` ({group[0].method})",
               _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        for s in scores:
            stat = (metric_stats.ood_mean_stat(table, group, s, metric) if ood is None
                    else metric_stats.ood_stat(table, group, s, metric, ood))
            row.append(_fmt(stat))
        rows.append(row)
    return md_table(header, rows)


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


def summary_markdown(claim_results: Sequence[claims.ClaimResult],
                     rules: claims.ClaimRules) -> str:
    """The verdicts, one line each, with the rule's quantity and noise threshold in one sentence."""
    label = metric_records.label(rules.metric)
    return (f"Verdicts of the paper's claims, paired by seed (A = {rules.score} {label} averaged "
            f"over the OOD sets, in points; a difference a − b counts when its mean is beyond "
            f"the noise threshold max({100 * rules.min_effect:g}, std of the per-seed "
            f"differences) on the claimed side with every seed agreeing; rules and evidence in "
            f"Claims below):\n\n" + "\n".join(summary_line(c, rules) for c in claim_results) + "\n")


def default_focus_ood(table: MetricTable, runs: Sequence[RunInfo], score: str = "msp") -> str:
    """The OOD set on which the ce run (α = 0) has the lowest mean `score` AUROC: the hardest."""
    if not table.ood_sets:
        return ""
    sweep = dict(results.ls_sweep(runs))
    if 0.0 not in sweep:
        return table.ood_sets[0]
    means = {o: metric_stats.ood_stat(table, sweep[0.0], score, "auroc", o).mean
             for o in table.ood_sets}
    known = {o: m for o, m in means.items() if not math.isnan(m)}
    return min(known, key=known.get) if known else table.ood_sets[0]


def first_predictions(group: Sequence[RunInfo] | None) -> predictions.Predictions | None:
    """Predictions of the first seed of a grid entry that has them at hand."""
    for r in group or ():
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is not None and (directory / predictions.MANIFEST).exists():
            return predictions.read(results.local_copy(directory), features=False)
    return None


def _kd_pair(runs: Sequence[RunInfo], teacher_method: str):
    """(student, teacher) entries of the first kd student of a `teacher_method` teacher, or
    (None, None)."""
    return next(((student, teacher) for student, teacher in results.students(runs, ("kd",))
                 if teacher[0].method == teacher_method), (None, None))


def _first_of(runs: Sequence[RunInfo], method: str):
    return next((g for g in results.group_by_name(runs).values() if g[0].method == method), None)


def histogram_panels(runs: Sequence[RunInfo]) -> list[tuple[str, list[RunInfo]]]:
    """ce, an ls run, oe and kd-from-oe: the ls run is the kd teacher's, else the largest α."""
    sweep = results.ls_sweep(runs)
    _, ls = _kd_pair(runs, "ls")
    ls = ls or (sweep[-1][1] if sweep and sweep[-1][0] else None)
    ce = dict(sweep).get(0.0)
    panels = [("ce", ce), (f"ls α = {ls[0].alpha:g}" if ls else "ls", ls),
              ("oe", _first_of(runs, "oe")), ("kd from oe", _kd_pair(runs, "oe")[0])]
    return [(label, group) for label, group in panels if group]


ROC_SWEEP_PANEL = "LS sweep"  # the ROC panel of the α sweep, coloured in α's order


def roc_groups(runs: Sequence[RunInfo]) -> list[tuple[str, list[tuple[str, list[RunInfo]]]]]:
    """Two panels: the LS sweep, and ce with every other entry of the grid."""
    sweep = results.ls_sweep(runs)
    in_sweep = {g[0].name for _, g in sweep}
    ls_panel = [(f"α = {a:g}", g) for a, g in sweep]
    others = [(name, g) for name, g in results.group_by_name(runs).items() if name not in in_sweep]
    ce = dict(sweep).get(0.0)
    others = ([("ce", ce)] if ce else []) + others
    return [(title, panel) for title, panel in ((ROC_SWEEP_PANEL, ls_panel),
                                                ("teachers and students", others)) if panel]


# Figures drawn from the runs' predictions: a report rebuilt without them keeps the earlier files.
PREDICTION_FIGURES = ("msp_histograms.png", "roc_curves.png", "risk_coverage.png")


def _write_figures(table: MetricTable, runs: Sequence[RunInfo], out_dir: epath.Path, *,
                   scores: Sequence[str], focus_ood: str, rules: claims.ClaimRules,
                   claim_results: Sequence[claims.ClaimResult], dataset: str,
                   figures_from: epath.Path | None = None) -> list[tuple[str, str]]:
    """Writes the PNG files; returns (file name, caption) in report order."""
    written = []
    if any(c.comparisons for c in claim_results):
        quantity = (f"{rules.score} {metric_records.label(rules.metric)}"
                    f" (mean over OOD sets)")
        figures.save(figures.claim_differences(claim_results, quantity=quantity),
                     out_dir / CLAIMS_FIGURE)
        written.append((CLAIMS_FIGURE, f"The comparisons that decide the claims: for each, the "
                                       f"per-seed differences a − b of {quantity} (dots, points), "
                                       f"their mean (diamond) and the noise threshold (grey "
                                       f"band around 0). Claim 1 also needs the rank correlation "
                                       f"and the accuracy rule of the Summary."))
    sweep = results.ls_sweep(runs)
    if len(sweep) >= 2:  # one α is no sweep
        for metric in OOD_METRICS:
            name = f"alpha_sweep_{metric}.png"
            figures.save(figures.alpha_sweep(table, sweep, metric=metric, scores=scores,
                                             dataset=dataset), out_dir / name)
            written.append((name, f"{metric_records.label(metric)} (%) against α, mean over "
                                  f"OOD sets and per OOD set, one line per score; error bars: "
                                  f"std over seeds."))
        figures.save(figures.id_sweep(table, sweep, dataset=dataset),
                     out_dir / "alpha_sweep_id.png")
        written.append(("alpha_sweep_id.png", "ID test accuracy and ECE (%) against α; error "
                                              "bars: std over seeds."))
    captions = {
        "msp_histograms.png": f"MSP on the ID test set and on {focus_ood} (normalised histograms, "
                              f"30 bins from 1/K to 1, log density axis), first seed of each run.",
        "roc_curves.png": f"ROC curves of MSP, ID test set positive and {focus_ood} negative, "
                          f"first seed of each run; the legend gives that seed's AUROC (%). The "
                          f"horizontal line marks TPR = 95%, where FPR95 is read.",
        "risk_coverage.png": "Risk-coverage curves on the ID test set over the LS sweep (α = 0 is "
                             "the ce run), msp and pnorm, first seed of each α; the legend gives "
                             "that seed's AURC (%).",
    }
    loaded = {}  # grid name -> predictions of its first seed, read once

    def preds(group):
        if group and group[0].name not in loaded:
            loaded[group[0].name] = first_predictions(group)
        return loaded.get(group[0].name) if group else None

    drawn = {}
    if focus_ood:
        panels = [(f"{label} (seed {g[0].seed})", preds(g))
                  for label, g in histogram_panels(runs)]
        panels = [(label, p) for label, p in panels if p is not None and focus_ood in p.splits]
        if panels:
            drawn["msp_histograms.png"] = figures.msp_histograms(panels, focus_ood)
        groups = []
        for title, members in roc_groups(runs):
            curves = [(label, preds(g)) for label, g in members]
            curves = [(label, p) for label, p in curves
                      if p is not None and focus_ood in p.splits]
            if curves:
                groups.append((title, curves))
        if groups:
            drawn["roc_curves.png"] = figures.roc_curves(groups, focus_ood,
                                                         sweeps=(ROC_SWEEP_PANEL,))
    curves = [(f"α = {a:g} (seed {g[0].seed})", preds(g), pnorm_p(g[0])) for a, g in sweep]
    curves = [(label, p, q) for label, p, q in curves if p is not None]
    if len(curves) >= 2:
        drawn["risk_coverage.png"] = figures.risk_coverage(curves)
    for name in PREDICTION_FIGURES:
        if name != "risk_coverage.png" and not focus_ood:
            continue
        if name in drawn:
            figures.save(drawn[name], out_dir / name)
        elif figures_from is not None and (figures_from / name).exists():
            if figures_from / name != out_dir / name:
                atomic_files.write_atomically(out_dir / name,
                                              lambda f, n=name: f.write((figures_from / n)
                                                                        .read_bytes()))
        else:
            continue
        written.append((name, captions[name]))
    return written


def pnorm_p(run: RunInfo) -> float:
    """The p of the run's pnorm score, as `score` takes it: from its config.json, else 2."""
    if not run.directory or "://" in run.directory:
        return scoring.scores.DEFAULT_PNORM_P
    return scoring.runs.pnorm_p_of(run_dir.read_config(run.directory, missing_ok=True),
                                   str(run_dir.config_path(run.directory)))


def knn_k_text(runs: Sequence[RunInfo]) -> str:
    """The knn score's k in these runs (`score`'s default, from each id_train split's size)."""
    ks = set()
    for r in runs:
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is None or not (directory / predictions.MANIFEST).exists():
            continue
        # The manifest alone (read in place, local or in a bucket): the splits' sizes.
        splits = json.loads((directory / predictions.MANIFEST).read_text())["splits"]
        train = [entry for entry in splits.values() if entry["role"] == "id_train"][:1]
        ks.update(scoring.default_knn_k(entry["num_examples"]) for entry in train)
    if not ks:
        return "k per run"
    return f"k = {min(ks)}" if len(ks) == 1 else f"k = {min(ks)} to {max(ks)} by run"


def unfinished_runs(runs: Sequence[RunInfo]) -> dict[str, trained_steps.Checkpoint | None]:
    """Run -> the checkpoint of each run whose predictions are not of its finished model (None:
    of an unknown step), among the runs whose predictions are at hand."""
    found = {}
    for r in runs:
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is None or not (directory / predictions.MANIFEST).exists():
            continue
        manifest = json.loads((directory / predictions.MANIFEST).read_text())
        unfinished, checkpoint = trained_steps.unfinished(
            manifest, done=(epath.Path(r.directory) / run_dir.DONE).exists())
        if unfinished:
            found[r.run] = checkpoint
    return found


def unfinished_markdown(unfinished: Mapping[str, trained_steps.Checkpoint | None]) -> str:
    """The Summary's line on runs whose metrics are not their finished models' ("" if none)."""
    if not unfinished:
        return ""
    named = ", ".join(f"`{run}` ({c.describe() if c else 'step unknown'})"
                      for run, c in unfinished.items())
    return (f"**Unfinished runs**: {named}. Their predictions are not, or not known to be, "
            "of the finished models, and the verdicts and tables below use them as they "
            "are.\n\n")


def odin_choices(runs: Sequence[RunInfo]) -> dict[str, scoring.odin_selection.OdinChoice]:
    """Run -> the (T, ε) pair its odin score used (by its config's `odin_selection`), for the
    runs whose predictions are at hand."""
    choices = {}
    for r in runs:
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is None or not (directory / predictions.MANIFEST).exists():
            continue
        run = epath.Path(r.directory)
        selection = scoring.odin_selection.selection_from_config(
            run_dir.read_config(run, missing_ok=True), str(run_dir.config_path(run)))
        choice = scoring.odin_selection.choose_from_directory(results.local_copy(directory),
                                                              selection)
        if choice is not None:
            choices[r.run] = choice
    return choices


def odin_pairs_markdown(choices: Mapping[str, scoring.odin_selection.OdinChoice]) -> str:
    """The (T, ε) pair each run's odin score used, chosen without OOD data; one line when every
    run chose the same pair, and one more when the rule chose the largest ε for every run."""
    if not choices:
        return ""
    text = ("The `odin` score of each run uses one saved (T, ε) pair, chosen without OOD data: "
            f"{scoring.odin_selection.RULE}, or OpenOOD's fixed default (T = 1000, ε = 0.0014) "
            "for runs with `odin_selection = \"fixed\"`.")
    if all(c.took_the_largest_epsilon for c in choices.values()):
        largest = ", ".join(sorted({f"{c.epsilon:g}" for c in choices.values()}))
        text += (f" Every run's rule chose the largest ε offered ({largest}): the mean id_train "
                 "score was highest there, so the rule sits at the edge of its grid; OpenOOD's "
                 "fixed pair (`odin_selection = \"fixed\"`) is the comparison point.")
    pairs = {(c.temperature, c.epsilon) for c in choices.values()}
    if len(pairs) == 1:
        (temperature, epsilon), = pairs
        return (f"{text} Every one of the {len(choices)} runs chose T = {temperature:g}, "
                f"ε = {epsilon:g}; each run's mean id_train score per ε is in runs.json.\n")
    rows = [[f"`{run}`", f"{c.temperature:g}", f"{c.epsilon:g}",
             ", ".join(f"{100 * m:.2f}" for m in c.id_train_means)]
            for run, c in choices.items()]
    return (f"{text} Last column: the mean id_train ODIN score (%) of each ε at that T, smallest "
            "ε first.\n\n" + md_table(["run", "T", "ε", "mean id_train score per ε"], rows))


def render(table: MetricTable, runs: Sequence[RunInfo], *, title: str,
           scores: Sequence[str], rules: claims.ClaimRules,
           figure_files: Sequence[tuple[str, str]],
           groups: dict[str, tuple[str, ...]] | None = None,
           odin: Mapping[str, scoring.odin_selection.OdinChoice] | None = None,
           claim_results: Sequence[claims.ClaimResult] | None = None,
           knn_k: str | None = None,
           unfinished: Mapping[str, trained_steps.Checkpoint | None] | None = None) -> str:
    """report.md as a string, without its Environment section. `knn_k` says which k the knn
    score used (default: from the runs' predictions, `knn_k_text`); `unfinished` the runs whose
    predictions are not of their finished models (`unfinished_runs`), named in the Summary."""
    if knn_k is None:
        knn_k = knn_k_text(runs)
    if claim_results is None:
        claim_results = claims.evaluate_claims(table, runs, rules)
    id_results = selective_claims.evaluate(table, runs, rules)
    by_group = selective_report.group_claims(table, runs, rules, groups)
    oods = ", ".join(f"`{o}`" for o in table.ood_sets) or "(none)"
    figure_md = {name: f"![{name}]({name})\n\n*{caption}*\n" for name, caption in figure_files}
    first = [name for name in (CLAIMS_FIGURE, "alpha_sweep_auroc.png") if name in figure_md]
    out = [f"# {title}\n",
           f"Written by softlabel_ood {__version__} from {len(runs)} runs "
           f"({len(results.group_by_name(runs))} grid entries). "
           "`metrics.csv` in this directory holds every metric of every run as fractions; the "
           "tables print percent, mean ± std over seeds (Definitions, at the end).\n",
           "## Summary\n", unfinished_markdown(unfinished or {})
           + summary_markdown(claim_results, rules)
           + (selective_report.group_summary_line(by_group) + "\n" if by_group else "")
           + "".join(selective_report.selective_summary_line(c) + "\n" for c in id_results)]
    out += [figure_md[name] for name in first]
    out += ["## Claims\n", claims_markdown([*claim_results, *id_results], rules),
            "### Claim 1 for every score\n",
            f"Does label smoothing hurt detection for every score, or only for the softmax? "
            f"Claim 1's rule above, unchanged, applied with each score in place of "
            f"{rules.score} (A = that score's "
            f"{metric_records.label(rules.metric)} averaged over the OOD "
            f"sets; ρ and the paired A(0) − A(α_max) in points, as in the rule).\n",
            claim1_by_score_markdown(table, runs, rules, scores)]
    if by_group:
        out += ["### The claims on each group of OOD sets\n",
                "The three rules above, unchanged, with A averaged over the OOD sets of one group "
                "(config.ood_groups) instead of all of them.\n",
                selective_report.group_claims_markdown(by_group)]
    out += ["### S1 for every score\n",
            "S1's rule with each score's AURC in place of msp's (R = that score's AURC on the ID "
            "test set, in points).\n",
            selective_report.aurc_trend_by_score_markdown(table, runs, rules, scores)]
    out += ["## Table 1. Label-smoothing sweep\n",
            "Rows: α (0 = the ce run). One table per OOD metric, averaged over the OOD sets, with "
            "a column per score; the first also gives ID test accuracy and ECE.\n",
            table1_markdown(table, runs, scores=scores)]
    grouped = {g: m for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}
    group_text = ("; then AUROC averaged over the OOD sets of each group: " + "; ".join(
        f"{g} = {', '.join(f'`{o}`' for o in m if o in table.ood_sets)}"
        for g, m in grouped.items())) if grouped else ""
    for score in scores:
        out += [f"### Table 1, score `{score}`\n",
                f"Rows: α. Columns: ID test accuracy and ECE, {score} AUROC, FPR95 and AUPR-out "
                f"averaged over the OOD sets{group_text}.\n",
                sweep_by_score_markdown(table, runs, score, groups=grouped)]
    for ood in table.all_ood_sets:
        out += [f"### Table 1, OOD set `{ood}`\n", ood_table_markdown(table, runs, ood,
                                                                     scores=scores)]
    out += ["## Table 1b. Selective classification\n",
            "Rows: α (0 = the ce run). Columns: ID test accuracy, then for msp and for pnorm "
            "(MaxLogit-pNorm) the area under the risk-coverage curve (AURC), its excess over a "
            "perfect ranking (E-AURC) and the AUROC of telling right from wrong predictions "
            "(error AUROC), all on the ID test set.\n",
            selective_report.selective_table_markdown(table, runs)]
    out += ["## Table 2. Teachers and students\n",
            f"Rows: the teacher of the kd and kd_incorrect students. Columns: ID test accuracy and "
            f"{rules.score} AUROC and FPR95 averaged over the OOD sets, for the teacher, its kd "
            f"student and its kd_incorrect student (– where the grid has no such student).\n",
            table2_markdown(table, runs, score=rules.score)]
    out += ["## Table 3. All runs\n",
            "Rows: grid entries, with their method. Columns: ID test accuracy and ECE, then AUROC "
            "averaged over the OOD sets for each score.\n",
            table3_markdown(table, runs, scores=scores)]
    rest = [name for name in figure_md if name not in first]
    if rest:
        out.append("## Figures\n")
        out += [figure_md[name] for name in rest]
    out += ["## Definitions\n", DEFINITIONS.format(oods=oods, knn_k=knn_k)]
    left_out = [o for o in table.all_ood_sets if o not in table.ood_sets]
    if left_out:
        out.append(f"OOD sets not scored for every run, left out of the means: "
                   f"{', '.join(left_out)}.\n")
    out += ["## Runs\n", runs_markdown(runs)]
    odin_text = odin_pairs_markdown(odin or {}) if "odin" in scores else ""
    if odin_text:
        out += ["## ODIN pairs\n", odin_text]
    return "\n".join(out)


def run_groups(runs: Sequence[RunInfo]) -> dict[str, tuple[str, ...]]:
    """The OOD groups (`config.ood_groups`) stored with the first run at hand that names any."""
    for r in runs:
        if r.directory and "://" not in r.directory:
            found = scoring.groups.read_groups(r.directory)
            if found:
                return found
    return {}


class ReportDirectoryError(UserError):
    """The report directory holds files that the report does not write."""


def _report_writes(name: str) -> bool:
    return name in ("report.md", results.RUNS_FILE, *scoring.metrics_files.METRICS_FILES) \
        or name.endswith(".png")


def check_out_dir(out_dir: epath.PathLike) -> None:
    """ReportDirectoryError if `out_dir` holds files that `write_report` does not write: it
    replaces the directory as a whole, and would take them away with the old one; so is a file
    at `out_dir`."""
    if "://" not in str(out_dir):
        atomic_files.refuse_file(out_dir, "a report directory")
    entry = None if "://" in str(out_dir) else atomic_files.foreign_entry(out_dir, _report_writes)
    if entry is not None:
        raise ReportDirectoryError(f"{out_dir} holds {entry!r}, which the report does not write "
                                   "(it replaces the directory as a whole); move it elsewhere")


def write_report(rows: Sequence[scoring.MetricRow], out_dir: epath.PathLike, **options) -> None:
    """Writes the report's files (`_write_report_files`, which says what `options` are) into a
    new directory that replaces `out_dir` in one rename (`atomic_files.replacing_directory`):
    a reader, a kill or a full disk sees the whole old report or the whole new one, never a
    new metrics.csv beside an old report.md. On a bucket, which has no rename, the files are
    uploaded one by one."""
    if "://" in str(out_dir):
        _write_report_files(rows, out_dir, **options)
        return
    check_out_dir(out_dir)
    with atomic_files.replacing_directory(out_dir) as new:
        _write_report_files(rows, new, **options)


def _write_report_files(rows: Sequence[scoring.MetricRow], out_dir: epath.PathLike, *,
                        runs: Sequence[RunInfo], title: str = "Soft labels and OOD detection: "
                        "reproduction report", scores: Sequence[str] | None = None,
                        focus_ood: str | None = None,
                        rules: claims.ClaimRules | None = None,
                        groups: dict[str, tuple[str, ...]] | None = None,
                        dataset: str | None = None,
                        odin: Mapping[str, scoring.odin_selection.OdinChoice] | None = None,
                        environment_of_runs: dict[str, str] | None = None,
                        figures_from: epath.PathLike | None = None,
                        training: dict[str, str] | None = None,
                        knn_k: str | None = None,
                        unfinished: Mapping[str, trained_steps.Checkpoint | None] | None = None
                        ) -> None:
    """Writes metrics.csv (+ metrics.md), runs.json, the PNG figures and, last, report.md.

    `runs` says which run is which (`results.RunInfo`); histograms and ROC curves need each
    run's `directory` and are left out for runs without one (or copied from `figures_from`, the
    directory of an earlier report of the same runs). `focus_ood` picks the OOD set of those two
    figures (default: `default_focus_ood`). `groups` ({group: OOD sets}) adds group means to the
    tables (default: the `ood_groups` stored with the runs, `run_groups`); `dataset` names the
    ID dataset in the figures' titles (default: the one in the runs' predictions); `odin` the
    pair each run's odin score used (default: chosen from the runs' predictions). runs.json
    records these beside the runs, so that `rebuild.rebuild_report` can write the report again
    from this directory alone. `environment_of_runs` is the environment recorded by the report
    that first scored these runs (a rebuilt report keeps it); default: this process's, with
    `training` ({what: how}, e.g. how the grid chose its population size) added. `unfinished`
    names the runs whose predictions are not of their finished models, marked in the Summary
    and metrics.md (default: from the runs' predictions, `unfinished_runs`).
    """
    rules = rules or claims.ClaimRules()
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = MetricTable(rows)
    known = {r.run for r in runs}
    unknown = sorted(set(table.runs) - known)
    if unknown:
        raise ValueError(f"metrics name runs that `runs` does not describe: {', '.join(unknown)}")
    if groups is None:
        groups = run_groups(runs)
    if dataset is None:
        dataset = figures.dataset_of(runs)
    if odin is None:
        odin = odin_choices(runs)
    if unfinished is None:
        unfinished = unfinished_runs(runs)
    per_run_groups = dict.fromkeys(table.runs, groups) if groups else {}
    if "://" in str(out_dir):
        with tempfile.TemporaryDirectory() as tmp:
            scoring.write_metrics(rows, tmp, groups=per_run_groups, unfinished=unfinished)
            for name in ("metrics.csv", "metrics.md"):
                if (epath.Path(tmp) / name).exists():
                    (epath.Path(tmp) / name).copy(out_dir / name, overwrite=True)
    else:
        scoring.write_metrics(rows, str(out_dir), groups=per_run_groups, unfinished=unfinished)
    env = environment_of_runs or {**environment.describe(), **(training or {})}
    if knn_k is None:
        knn_k = knn_k_text(runs)
    record = results.ReportRecord(title=title, dataset=dataset, ood_groups=dict(groups),
                                  odin_pairs=dict(odin), knn_k=knn_k, unfinished=dict(unfinished))
    results.write_runs_json([dataclasses.replace(r, directory="") for r in runs],
                            out_dir / results.RUNS_FILE, environment=env, report=record)
    scores = _scores(table, scores)
    if focus_ood is None:
        focus_ood = default_focus_ood(table, runs, rules.score)
    claim_results = claims.evaluate_claims(table, runs, rules)
    figure_files = _write_figures(
        table, runs, out_dir, scores=scores, focus_ood=focus_ood, rules=rules,
        claim_results=claim_results, dataset=dataset,
        figures_from=None if figures_from is None else epath.Path(figures_from))
    text = render(table, runs, title=title, scores=scores, rules=rules, figure_files=figure_files,
                  groups=groups, odin=odin, claim_results=claim_results, knn_k=knn_k,
                  unfinished=unfinished)
    text += "\n" + environment.markdown(
        env, rebuilt_by=None if environment_of_runs is None else __version__)
    atomic_files.write_text_atomically(out_dir / "report.md", text)
