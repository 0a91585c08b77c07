"""The report's tables, as markdown: the LS sweep (Table 1, per score and per OOD set), the
teachers and their students (Table 2), every grid entry (Table 3), the Runs and the ODIN pairs.

Cells print percent (a metric's fraction times 100) as "mean ± std" over seeds
(`metric_stats.format_stat`); the column labels and arrows come from the metric records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from softlabel_ood import methods, scoring
from softlabel_ood.analysis import metric_stats, results
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.analysis.tables import md_table
from softlabel_ood.scoring import metric_records

OOD_METRICS = ("auroc", "fpr95", "aupr_out")  # the OOD metrics of the report's tables
ID_METRICS = ("accuracy", "ece")


def _fmt(stat: metric_stats.Stat) -> str:
    return metric_stats.format_stat(stat)


def runs_markdown(runs: Sequence[RunInfo]) -> str:
    rows = []
    for name, group in results.group_by_name(runs).items():
        r = group[0]
        strength = methods.strength(r.method)
        seeds = ", ".join(str(g.seed) for g in group)
        rows.append([f"`{name}`", r.method, (strength, r.strength), r.teacher, r.init_from, seeds])
    # The strength column is named by the records (α) when the methods with one share it.
    labels = {s.label for _, _, (s, _), *_ in rows if s is not None} or {"α"}
    header = labels.pop() if len(labels) == 1 else "strength"
    for row in rows:
        strength, value = row[2]
        row[2] = "" if strength is None else \
            f"{value:g}" if strength.label == header else f"{strength.label} = {value:g}"
    return md_table(["run", "method", header, "teacher", "fine-tuned from", "seeds"], rows)


def scores_of(table: MetricTable, scores: Sequence[str] | None) -> list[str]:
    return list(table.scores if scores is None else scores)


def _metric_label(metric: str) -> str:
    return metric_records.header(metric)


def sweep_metric_markdown(table: MetricTable, runs: Sequence[RunInfo], metric: str, *,
                          scores: Sequence[str] | None = None, ood: str | None = None,
                          with_id: bool = False) -> str:
    """Rows α of the LS sweep; a column per score: `metric` averaged over the OOD sets, or on
    `ood` alone. `with_id` puts ID test accuracy and ECE first."""
    scores = scores_of(table, scores)
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
        return f"ls (α = {teacher.strength:g}; `{teacher.entry}`)"
    return f"{teacher.method} (`{teacher.entry}`)"


def table2_markdown(table: MetricTable, runs: Sequence[RunInfo], *, score: str = "msp") -> str:
    """Rows: teachers; columns: accuracy and `score` OOD metrics of the teacher and its students."""
    student_methods = ("kd", "kd_incorrect")
    # teacher entry -> student method -> the first student entry of that method
    students: dict[str, dict[str, list[RunInfo]]] = {}
    teachers: dict[str, list[RunInfo]] = {}
    for student, teacher in results.students(runs, student_methods):
        teachers[teacher[0].entry] = teacher
        students.setdefault(teacher[0].entry, {}).setdefault(student[0].method, student)
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
    scores = scores_of(table, scores)
    groups = results.group_by_name(runs)
    header = ["run (method)", *map(metric_records.header, ID_METRICS)]
    header += [f"{s} {_metric_label(metric)}" for s in scores]
    rows = []
    for name in (groups if names is None else names):
        group = groups[name]
        # Imported runs (import_outputs) record no method.
        row = [f"`{name}` ({group[0].method})" if group[0].method else f"`{name}`",
               _fmt(metric_stats.id_stat(table, group, "accuracy")),
               _fmt(metric_stats.id_stat(table, group, "ece"))]
        for s in scores:
            stat = (metric_stats.ood_mean_stat(table, group, s, metric) if ood is None
                    else metric_stats.ood_stat(table, group, s, metric, ood))
            row.append(_fmt(stat))
        rows.append(row)
    return md_table(header, rows)


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
