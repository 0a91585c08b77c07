"""The reproduction report: metrics.csv, report.md with its tables and claims, and PNG figures.

    write_report(rows, "<workdir>/report", runs=runs)

Tables print percent (a metric's fraction times 100) as "mean ± std" over seeds; metrics.csv
keeps the fractions. How each number is computed is stated in report.md itself (see
`DEFINITIONS`), in `results` (aggregation over OOD sets and seeds) and in `claims` (the decision
rules), so that a reader of the report alone can tell what every number is.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Sequence

from etils import epath

from softlabel_ood import __version__, scoring
from softlabel_ood.analysis import claims, environment, figures, metric_stats, results
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import atomic_files, predictions

OOD_METRICS = ("auroc", "fpr95", "aupr_out")
_HEADERS = {"auroc": "AUROC ↑", "fpr95": "FPR95 ↓", "aupr_out": "AUPR-out ↑",
            "accuracy": "accuracy ↑", "ece": "ECE ↓"}

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
- **Scores** (exact formulas: `softlabel_ood/scoring/scores.py`): `msp` maximum
  softmax probability; `max_logit` largest logit; `energy` logsumexp of the logits (T = 1);
  `entropy` negative entropy of the softmax; `mahalanobis` negative smallest squared Mahalanobis
  distance to a class mean of the ID train features (shared covariance); `knn` cosine similarity
  to the k-th most similar ID train feature minus 1 (k = {knn_k}); `react` energy of the logits
  of the features clipped at the 90th percentile of the ID train activations; `vim` energy minus
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


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "*(This grid has no runs for this table.)*\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fmt(stat: metric_stats.Stat) -> str:
    return metric_stats.format_stat(stat)


def runs_markdown(runs: Sequence[RunInfo]) -> str:
    rows = []
    for name, group in results.group_by_name(runs).items():
        r = group[0]
        alpha = f"{r.alpha:g}" if r.method in ("ls", "kd_incorrect") else ""
        seeds = ", ".join(str(g.seed) for g in group)
        rows.append([f"`{name}`", r.method, alpha, r.teacher, r.init_from, seeds])
    return _md_table(["run", "method", "α", "teacher", "fine-tuned from", "seeds"], rows)


def _scores(table: MetricTable, scores: Sequence[str] | None) -> list[str]:
    return list(table.scores if scores is None else scores)


def table1_markdown(table: MetricTable, runs: Sequence[RunInfo], *,
                    scores: Sequence[str] | None = None) -> str:
    """Rows α of the LS sweep; accuracy, ECE and, per score, OOD metrics averaged over OOD sets."""
    scores = _scores(table, scores)
    header = ["α", _HEADERS["accuracy"], _HEADERS["ece"]]
    header += [f"{s} {_HEADERS[m]}" for s in scores for m in OOD_METRICS]
    rows = []
    for alpha, group in results.ls_sweep(runs):
        row = [f"{alpha:g}", _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        row += [_fmt(metric_stats.ood_mean_stat(table, group, s, m)) for s in scores
                for m in OOD_METRICS]
        rows.append(row)
    return _md_table(header, rows)


def sweep_by_score_markdown(table: MetricTable, runs: Sequence[RunInfo], score: str, *,
                            groups: dict[str, tuple[str, ...]] | None = None) -> str:
    """Rows α of the LS sweep; accuracy, ECE, then `score`'s OOD metrics averaged over all OOD
    sets and its AUROC averaged over each group's OOD sets."""
    groups = {g: m for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}
    header = ["α", _HEADERS["accuracy"], _HEADERS["ece"]]
    header += [_HEADERS[m] for m in OOD_METRICS] + [f"AUROC {g} ↑" for g in groups]
    rows = []
    for alpha, group in results.ls_sweep(runs):
        row = [f"{alpha:g}", _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        row += [_fmt(metric_stats.ood_mean_stat(table, group, score, m)) for m in OOD_METRICS]
        row += [_fmt(metric_stats.ood_group_mean_stat(table, group, score, "auroc", members))
                for members in groups.values()]
        rows.append(row)
    return _md_table(header, rows)


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
    return _md_table(["score", "claim 1 (paired by seed)", "claim 1 (seeds independent)",
                      "Spearman ρ(α, A)", "A(0) − A(α_max)"], rows)


def ood_table_markdown(table: MetricTable, runs: Sequence[RunInfo], ood: str, *,
                       scores: Sequence[str] | None = None) -> str:
    """Rows α of the LS sweep; per score, the OOD metrics on one OOD set."""
    scores = _scores(table, scores)
    header = ["α"] + [f"{s} {_HEADERS[m]}" for s in scores for m in OOD_METRICS]
    rows = [[f"{alpha:g}"] + [_fmt(metric_stats.ood_stat(table, group, s, m, ood))
                              for s in scores for m in OOD_METRICS]
            for alpha, group in results.ls_sweep(runs)]
    return _md_table(header, rows)


def _teacher_label(teacher: RunInfo) -> str:
    if teacher.method == "ls":
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
        header += [f"{who}: {_HEADERS[m]}" for m, _ in cols]
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
    return _md_table(header, rows)


def table3_markdown(table: MetricTable, runs: Sequence[RunInfo], *,
                    scores: Sequence[str] | None = None, metric: str = "auroc",
                    names: Sequence[str] | None = None, ood: str | None = None) -> str:
    """Rows: grid entries; columns: accuracy, ECE and `metric` per score.

    `metric` is averaged over the OOD sets, or taken on `ood` alone when it is given.
    """
    scores = _scores(table, scores)
    groups = results.group_by_name(runs)
    header = ["run", "method", _HEADERS["accuracy"], _HEADERS["ece"]]
    header += [f"{s} {_HEADERS.get(metric, metric)}" for s in scores]
    rows = []
    for name in (groups if names is None else names):
        group = groups[name]
        row = [f"`{name}`", group[0].method, _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        for s in scores:
            stat = (metric_stats.ood_mean_stat(table, group, s, metric) if ood is None
                    else metric_stats.ood_stat(table, group, s, metric, ood))
            row.append(_fmt(stat))
        rows.append(row)
    return _md_table(header, rows)


def claims_markdown(claim_results: Sequence[claims.ClaimResult], rules: claims.ClaimRules) -> str:
    out = [
        "Each claim of the paper is decided from the metrics above by the rule printed with it. "
        f"The rules compare {rules.score} "
        f"{metric_stats.METRIC_LABELS.get(rules.metric, rules.metric)} averaged over the OOD sets, "
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
        "means against max(min effect, sqrt(std_a² + std_b²))). Numbers are in percent; "
        "differences in percentage points.\n",
    ]
    out.append(_md_table(["claim", "verdict (paired by seed)", "verdict (seeds independent)"],
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
        directory = epath.Path(r.directory) / "predictions" if r.directory else None
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


def roc_groups(runs: Sequence[RunInfo]) -> list[tuple[str, list[tuple[str, list[RunInfo]]]]]:
    """Two panels: the LS sweep, and ce with every other entry of the grid."""
    sweep = results.ls_sweep(runs)
    in_sweep = {g[0].name for _, g in sweep}
    ls_panel = [(f"α = {a:g}", g) for a, g in sweep]
    others = [(name, g) for name, g in results.group_by_name(runs).items() if name not in in_sweep]
    ce = dict(sweep).get(0.0)
    others = ([("ce", ce)] if ce else []) + others
    return [(title, panel) for title, panel in (("LS sweep", ls_panel),
                                                ("teachers and students", others)) if panel]


def _write_figures(table: MetricTable, runs: Sequence[RunInfo], out_dir: epath.Path, *,
                   scores: Sequence[str], focus_ood: str) -> list[tuple[str, str]]:
    """Writes the PNG files; returns (file name, caption) in report order."""
    written = []
    sweep = results.ls_sweep(runs)
    if len(sweep) >= 2:  # one α is no sweep
        for metric in OOD_METRICS:
            name = f"alpha_sweep_{metric}.png"
            figures.save(figures.alpha_sweep(table, sweep, metric=metric, scores=scores),
                         out_dir / name)
            written.append((name, f"{metric_stats.METRIC_LABELS[metric]} (%) against α, mean over "
                                  f"OOD sets and per OOD set, one line per score; error bars: "
                                  f"std over seeds."))
        figures.save(figures.id_sweep(table, sweep), out_dir / "alpha_sweep_id.png")
        written.append(("alpha_sweep_id.png", "ID test accuracy and ECE (%) against α; error "
                                              "bars: std over seeds."))
    if not focus_ood:
        return written
    loaded = {}  # grid name -> predictions of its first seed, read once

    def preds(group):
        if group and group[0].name not in loaded:
            loaded[group[0].name] = first_predictions(group)
        return loaded.get(group[0].name) if group else None

    panels = [(f"{label} (seed {g[0].seed})", preds(g)) for label, g in histogram_panels(runs)]
    panels = [(label, p) for label, p in panels if p is not None and focus_ood in p.splits]
    if panels:
        figures.save(figures.msp_histograms(panels, focus_ood), out_dir / "msp_histograms.png")
        written.append(("msp_histograms.png", f"MSP on the ID test set and on {focus_ood} "
                                              f"(normalised histograms, 30 bins from 1/K to 1, log "
                                              f"density axis), "
                                              f"first seed of each run."))
    groups = []
    for title, members in roc_groups(runs):
        curves = [(label, preds(g)) for label, g in members]
        curves = [(label, p) for label, p in curves if p is not None and focus_ood in p.splits]
        if curves:
            groups.append((title, curves))
    if groups:
        figures.save(figures.roc_curves(groups, focus_ood), out_dir / "roc_curves.png")
        written.append(("roc_curves.png", f"ROC curves of MSP, ID test set positive and "
                                          f"{focus_ood} negative, first seed of each run; the "
                                          f"legend gives that seed's AUROC (%). The horizontal "
                                          f"line marks TPR = 95%, where FPR95 is read."))
    return written


def odin_pairs_markdown(runs: Sequence[RunInfo]) -> str:
    """Per run at hand: the (T, ε) pair the odin score used, chosen on ID train data only."""
    rows = []
    for r in runs:
        directory = epath.Path(r.directory) / "predictions" if r.directory else None
        if directory is None or not (directory / predictions.MANIFEST).exists():
            continue
        choice = scoring.odin_selection.choose_from_directory(results.local_copy(directory))
        if choice is not None:
            rows.append([f"`{r.run}`", f"{choice.temperature:g}", f"{choice.epsilon:g}",
                         ", ".join(f"{100 * m:.2f}" for m in choice.id_train_means)])
    if not rows:
        return ""
    return ("The `odin` score of each run uses one saved (T, ε) pair, chosen without OOD data: "
            f"{scoring.odin_selection.RULE}. Last column: the mean id_train ODIN score (%) of "
            "each ε at that T, smallest ε first.\n\n"
            + _md_table(["run", "T", "ε", "mean id_train score per ε"], rows))


def render(table: MetricTable, runs: Sequence[RunInfo], *, title: str,
           scores: Sequence[str], rules: claims.ClaimRules,
           figure_files: Sequence[tuple[str, str]],
           groups: dict[str, tuple[str, ...]] | None = None) -> str:
    """report.md as a string."""
    oods = ", ".join(f"`{o}`" for o in table.ood_sets) or "(none)"
    out = [f"# {title}\n",
           f"Written by softlabel_ood {__version__} from {len(runs)} runs "
           f"({len(results.group_by_name(runs))} grid entries). "
           "`metrics.csv` in this directory holds every metric of every run as fractions.\n",
           "## Definitions\n", DEFINITIONS.format(oods=oods, knn_k=scoring.KNN_K)]
    left_out = [o for o in table.all_ood_sets if o not in table.ood_sets]
    if left_out:
        out.append(f"OOD sets not scored for every run, left out of the means: "
                   f"{', '.join(left_out)}.\n")
    out += ["## Runs\n", runs_markdown(runs)]
    if "odin" in scores:
        odin_text = odin_pairs_markdown(runs)
        if odin_text:
            out += ["### ODIN pairs\n", odin_text]
    out += ["## Table 1. Label-smoothing sweep\n",
            "Rows: α (0 = the ce run). Columns: ID test accuracy and ECE, then for each score "
            "AUROC, FPR95 and AUPR-out, each averaged over the OOD sets.\n",
            table1_markdown(table, runs, scores=scores)]
    for ood in table.all_ood_sets:
        out += [f"### Table 1, OOD set `{ood}`\n", ood_table_markdown(table, runs, ood,
                                                                     scores=scores)]
    grouped = {g: m for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}
    group_text = ("; then AUROC averaged over the OOD sets of each group: " + "; ".join(
        f"{g} = {', '.join(f'`{o}`' for o in m if o in table.ood_sets)}"
        for g, m in grouped.items())) if grouped else ""
    for score in scores:
        out += [f"### Table 1, score `{score}`\n",
                f"Rows: α. Columns: ID test accuracy and ECE, {score} AUROC, FPR95 and AUPR-out "
                f"averaged over the OOD sets{group_text}.\n",
                sweep_by_score_markdown(table, runs, score, groups=grouped)]
    out += ["## Table 2. Teachers and students\n",
            f"Rows: the teacher of the kd and kd_incorrect students. Columns: ID test accuracy and "
            f"{rules.score} AUROC and FPR95 averaged over the OOD sets, for the teacher, its kd "
            f"student and its kd_incorrect student (– where the grid has no such student).\n",
            table2_markdown(table, runs, score=rules.score)]
    out += ["## Table 3. All runs\n",
            "Rows: grid entries. Columns: ID test accuracy and ECE, then AUROC averaged over the "
            "OOD sets for each score.\n",
            table3_markdown(table, runs, scores=scores)]
    if figure_files:
        out.append("## Figures\n")
        out += [f"![{name}]({name})\n\n*{caption}*\n" for name, caption in figure_files]
    out += ["## Claims\n", claims_markdown(claims.evaluate_claims(table, runs, rules), rules)]
    out += ["### Claim 1 for every score\n",
            f"Does label smoothing hurt detection for every score, or only for the softmax? "
            f"Claim 1's rule above, unchanged, applied with each score in place of "
            f"{rules.score} (A = that score's "
            f"{metric_stats.METRIC_LABELS.get(rules.metric, rules.metric)} averaged over the OOD "
            f"sets; ρ and the paired A(0) − A(α_max) in points, as in the rule).\n",
            claim1_by_score_markdown(table, runs, rules, scores)]
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
    replaces the directory as a whole, and would take them away with the old one."""
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
                        groups: dict[str, tuple[str, ...]] | None = None) -> None:
    """Writes metrics.csv (+ metrics.md), runs.json, the PNG figures and, last, report.md.

    `runs` says which run is which (`results.RunInfo`); histograms and ROC curves need each
    run's `directory` and are left out for runs without one. `focus_ood` picks the OOD set of
    those two figures (default: `default_focus_ood`). `groups` ({group: OOD sets}) adds group
    means to the tables (default: the `ood_groups` stored with the runs, `run_groups`).
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
    per_run_groups = dict.fromkeys(table.runs, groups) if groups else {}
    if "://" in str(out_dir):
        with tempfile.TemporaryDirectory() as tmp:
            scoring.write_metrics(rows, tmp, groups=per_run_groups)
            for name in ("metrics.csv", "metrics.md"):
                if (epath.Path(tmp) / name).exists():
                    (epath.Path(tmp) / name).copy(out_dir / name, overwrite=True)
    else:
        scoring.write_metrics(rows, str(out_dir), groups=per_run_groups)
    env = environment.describe()
    results.write_runs_json([dataclasses.replace(r, directory="") for r in runs],
                            out_dir / results.RUNS_FILE, environment=env)
    scores = _scores(table, scores)
    if focus_ood is None:
        focus_ood = default_focus_ood(table, runs, rules.score)
    figure_files = _write_figures(table, runs, out_dir, scores=scores, focus_ood=focus_ood)
    text = render(table, runs, title=title, scores=scores, rules=rules, figure_files=figure_files,
                  groups=groups)
    text += "\n" + environment.markdown(env)
    atomic_files.write_text_atomically(out_dir / "report.md", text)
