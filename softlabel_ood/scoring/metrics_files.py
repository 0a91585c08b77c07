"""metrics.csv (one metric value a row, read back exactly) and metrics.md (the same values as
tables in percent) of scored runs."""

from __future__ import annotations

import csv
import io
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from softlabel_ood.scoring import groups, metric_records, score_records
from softlabel_ood.scoring.metric_records import lower_is_better
from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.scoring.pipeline import MetricRow
from softlabel_ood.workdir import atomic_files, trained_steps

CSV_HEADER = ("run", "score", "ood", "metric", "value")
METRICS_FILES = ("metrics.csv", "metrics.md")


def _csv_text(rows: Iterable[MetricRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        # repr gives the shortest string that reads back as the same float.
        writer.writerow([row.run, row.score, row.ood, row.metric, repr(float(row.value))])
    return buffer.getvalue()


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100.0 * value:.2f}"


def _listed(names: Sequence[str]) -> str:
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1] if names else "")))


def _in_order(kind: str, present) -> list[str]:
    """The metrics of `kind` among `present`, in the records' order; unknown names last."""
    known = metric_records.names(kind)
    return [m for m in known if m in present] + sorted(set(present) - set(known))


def _unfinished_lines(run: str,
                      unfinished: Mapping[str, trained_steps.Checkpoint | None]) -> list[str]:
    if run not in unfinished:
        return []
    return [f"**Not the finished model's metrics**: {trained_steps.describe(unfinished[run])}.",
            ""]


def _markdown_text(rows: Sequence[MetricRow], skipped: Mapping[str, Mapping[str, str]],
                   notes: Mapping[str, Mapping[str, str]],
                   run_groups: Mapping[str, Mapping[str, Sequence[str]]],
                   unfinished: Mapping[str, trained_steps.Checkpoint | None]) -> str:
    lines = ["# OOD detection metrics", "",
             f"Values in percent. Lower is better for {_listed(lower_is_better('ood'))}, "
             "higher for the others; `mean` is the unweighted mean over the OOD splits, "
             "`mean (<group>)` the same over the OOD splits of a named group (config field "
             "`ood_groups`). Each score's selective-classification metrics on the ID test split "
             f"come first (lower is better for {_listed(lower_is_better('selective'))}). "
             "Definitions: docs/scores_and_metrics.md.", ""]
    runs = list(dict.fromkeys([r.run for r in rows] + list(skipped)))
    for run in runs:
        lines += [f"## {run}", "", *_unfinished_lines(run, unfinished)]
        run_rows = [r for r in rows if r.run == run]
        id_values = {r.metric: r.value for r in run_rows if not r.score}
        if id_values:
            lines += [", ".join(f"{m} {_percent(id_values[m])}" for m in _in_order("id", id_values)
                                ) + " (ID test split)", ""]
        computed = list(dict.fromkeys(r.score for r in run_rows if r.score))
        known = list(score_records.names())
        run_scores = [s for s in known if s in computed or s in skipped.get(run, {})]
        run_scores += [s for s in computed if s not in known]
        for score in run_scores:
            lines += [f"### {score}", ""]
            if score in skipped.get(run, {}):
                lines += [skipped[run][score], ""]
                continue
            if score in notes.get(run, {}):
                lines += [notes[run][score], ""]
            selective = {r.metric: r.value for r in run_rows if r.score == score and not r.ood}
            if selective:
                lines += [", ".join(f"{m} {_percent(selective[m])}"
                                    for m in _in_order("selective", selective))
                          + " (ID test split)", ""]
            table: dict[str, dict[str, float]] = {}
            for r in run_rows:
                if r.score == score and r.ood:
                    table.setdefault(r.ood, {})[r.metric] = r.value
            if not table:
                continue
            columns = _in_order("ood", {m for v in table.values() for m in v})
            lines.append("| ood | " + " | ".join(columns) + " |")
            lines.append("|:--|" + "--:|" * len(columns))
            for ood, values in table.items():
                lines.append(f"| {ood} | " + " | ".join(
                    _percent(values.get(m, float("nan"))) for m in columns) + " |")
            per_metric = {m: {ood: v[m] for ood, v in table.items() if m in v} for m in columns}
            for group, members in run_groups.get(run, {}).items():
                means = {m: groups.group_means(per_metric[m], {group: members}).get(group)
                         for m in columns}
                if any(v is not None for v in means.values()):
                    lines.append(f"| mean ({group}) | " + " | ".join(
                        _percent(float("nan") if v is None else v) for v in means.values())
                        + " |")
            if len(table) > 1:
                means = [float(np.mean(list(per_metric[m].values()))) for m in columns]
                lines.append("| mean | " + " | ".join(_percent(v) for v in means) + " |")
            lines.append("")
    return "\n".join(lines)


def check_out_dir(out_dir) -> None:
    """ScoringError if `out_dir` holds anything but metrics files: `write_metrics` replaces the
    directory as a whole, and would take the other files away with the old one."""
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.commonpath([out, os.getcwd()]) == out:
        raise ScoringError(f"{out_dir} is the current directory or holds it, which score would "
                           "replace as a whole; give a directory of its own")
    entry = atomic_files.foreign_entry(out_dir, METRICS_FILES.__contains__)
    if entry is not None:
        raise ScoringError(f"{out_dir} holds {entry!r}, which score does not write (it replaces "
                           "the directory as a whole); give a directory of its own")


def write_metrics(rows: Sequence[MetricRow], out_dir, *,
                  skipped: Mapping[str, Mapping[str, str]] | None = None,
                  notes: Mapping[str, Mapping[str, str]] | None = None,
                  groups: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                  unfinished: Mapping[str, trained_steps.Checkpoint | None] | None = None
                  ) -> None:
    """Writes `<out_dir>/metrics.csv` and `<out_dir>/metrics.md`, switched in together.

    The two are written into a new directory that replaces `out_dir` in one rename
    (`atomic_files.replacing_directory`): a reader, a kill or a full disk sees both old files
    or both new ones. So `out_dir` may hold nothing else (`check_out_dir`), unless it is itself
    a directory being filled for such a switch (a report's).
    `groups` ({run: {group: OOD sets}}) adds each group's mean to the run's tables in metrics.md,
    and `unfinished` ({run: checkpoint or None}, `ScoreReport.unfinished`) a line under each
    run it names; metrics.csv is the same either way.
    """
    rows = list(rows)
    texts = {"metrics.csv": _csv_text(rows),
             "metrics.md": _markdown_text(rows, skipped or {}, notes or {}, groups or {},
                                          unfinished or {})}
    out_dir = pathlib.Path(os.path.abspath(os.fspath(out_dir)))
    if atomic_files.is_own_temporary(out_dir):
        for name, text in texts.items():
            (out_dir / name).write_text(text)
        return
    check_out_dir(out_dir)
    with atomic_files.replacing_directory(out_dir) as new:
        for name, text in texts.items():
            (new / name).write_text(text)


def read_metrics_csv(path) -> list[MetricRow]:
    """Reads a metrics.csv written by `write_metrics`, each row checked (`_row`): a file edited
    by hand is refused in one line naming the row and field, never read into wrong tables."""
    try:
        with open(os.fspath(path), newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ScoringError(f"{path}: not a metrics.csv ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    header = lines[0] if lines else None
    if header is None or tuple(header) != CSV_HEADER:
        raise ScoringError(f"{path}: header is {header}, expected {','.join(CSV_HEADER)}")
    rows, seen = [], {}
    for line, fields in enumerate(lines[1:], start=2):
        row = _row(f"{path}:{line}", fields)
        key = (row.run, row.score, row.ood, row.metric)
        if key in seen:
            raise ScoringError(f"{path}:{line}: repeats row {seen[key]} ({','.join(key)})")
        seen[key] = line
        rows.append(row)
    return rows


def _row(where: str, fields: list[str]) -> MetricRow:
    """One row of metrics.csv: a known metric with the score and OOD split its kind names
    (DESIGN.md §6), and a finite fraction in [0, 1]."""
    if len(fields) != len(CSV_HEADER):
        raise ScoringError(f"{where}: expected {len(CSV_HEADER)} fields, got {len(fields)}")
    run, score, ood, metric, text = fields
    known = tuple(name for kind in ("id", "selective", "ood")
                  for name in metric_records.names(kind))
    if metric not in known:
        raise ScoringError(f"{where}: field 'metric' is {metric!r}, expected one of "
                           f"{', '.join(known)}")
    if not run:
        raise ScoringError(f"{where}: field 'run' is empty")
    kind = metric_records.BY_NAME[metric].kind
    if kind == "id" and (score or ood):
        raise ScoringError(f"{where}: {metric} is a metric of the ID test split; fields 'score' "
                           f"and 'ood' must be empty, got {score!r} and {ood!r}")
    if kind != "id" and score not in score_records.BY_NAME:
        raise ScoringError(f"{where}: field 'score' is {score!r}, expected one of "
                           f"{', '.join(score_records.names())}")
    if kind == "selective" and ood:
        raise ScoringError(f"{where}: {metric} is a metric of the ID test split; field 'ood' "
                           f"must be empty, got {ood!r}")
    if kind == "ood" and not ood:
        raise ScoringError(f"{where}: field 'ood' is empty; {metric} needs an OOD split")
    try:
        value = float(text)
    except ValueError:
        raise ScoringError(f"{where}: field 'value' is {text!r}, not a number") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ScoringError(f"{where}: field 'value' is {text!r}, expected a fraction in [0, 1]")
    return MetricRow(run, score, ood, metric, value=value)
