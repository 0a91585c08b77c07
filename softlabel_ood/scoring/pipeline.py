"""From run directories to metric rows (`metrics_files` writes them to metrics.csv and metrics.md).

Each run is read and scored in turn (scores need the logits, which are dropped afterwards); then
the OOD metrics of every (run, score, OOD split), and the selective-classification metrics of
every (run, score), are computed in one batched call each, so a grid of runs costs a few
compiled computations rather than a loop of small ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from softlabel_ood.scoring import (
    directory_reading,
    float64,
    metrics,
    score_functions,
    score_records,
    scores,
    selective,
)
from softlabel_ood.scoring.metrics import ID_METRICS, METRICS, ScoringError
from softlabel_ood.scoring.selective import SELECTIVE_METRICS
from softlabel_ood.workdir import predictions as predictions_lib
from softlabel_ood.workdir import trained_steps


@dataclasses.dataclass(frozen=True)
class MetricRow:
    run: str
    score: str  # "" for accuracy and ece
    ood: str  # "" for ID-only metrics (accuracy, ece and the selective-classification metrics)
    metric: str
    value: float  # a fraction in [0, 1]


@dataclasses.dataclass(frozen=True)
class ScoreReport:
    rows: list[MetricRow]
    # run -> {score: why it was not computed}, for scores whose inputs a run lacks.
    skipped: dict[str, dict[str, str]]
    # run -> {score: what was chosen for it}, e.g. the ODIN pair.
    notes: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # run -> {group: OOD sets}, the groups whose means metrics.md shows.
    groups: dict[str, dict[str, tuple[str, ...]]] = dataclasses.field(default_factory=dict)
    # run -> the checkpoint of the runs whose predictions are not of the finished model (None:
    # of an unknown step; `trained_steps.unfinished`).
    unfinished: dict[str, trained_steps.Checkpoint | None] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass
class _RunScores:
    name: str
    id_test: str
    ood: list[str]
    values: dict[str, dict[str, Any]]  # score -> split -> float64 [N]
    id_metrics: dict[str, Any]
    correct: Any  # bool [N]: the ID test split's top-1 predictions that are right
    skipped: dict[str, str]
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


@jax.jit
def _id_calibration(msp, logits, labels, edges):
    """accuracy and ece of the ID test split, given its msp scores (the top-label confidence)."""
    return metrics.calibration_jax(msp, scores.predicted_class_jax(logits) == labels, edges)


def _score(record: score_records.Score, run: score_functions.RunInputs,
           parameters: Mapping[str, Any]) -> tuple[dict | None, str]:
    """(values, note) of one record's function, or (None, why it was skipped)."""
    problem = score_functions.missing_input(record, run)
    if problem is not None:
        return None, f"skipped: {problem}"
    given = {p.name: parameters.get(p.name, p.default) for p in record.parameters}
    try:
        return score_functions.FUNCTIONS[record.function](run, **given)
    except score_functions.Skipped as e:
        return None, f"skipped: {e}"


def _dispatch_run(name: str, preds: predictions_lib.Predictions,
                  parameters: Mapping[str, Any]) -> _RunScores:
    """Starts the run's score computations, record by record; JAX runs them while the next run
    is read. Records computed together (`fused`) come from one call of their function."""
    run = score_functions.RunInputs(preds)
    values, skipped, notes, fused = {}, {}, {}, {}
    for record in score_records.BY_NAME.values():
        if record.fused and record.function in fused:
            computed, note = fused[record.function]
        else:
            computed, note = _score(record, run, parameters)
            if record.fused:
                fused[record.function] = computed, note
        if computed is None:
            skipped[record.name] = note
            continue
        values[record.name] = computed[record.name] if record.fused else computed
        if note:
            notes[record.name] = note
    id_test, id_split = run.evaluated[0], preds.splits[run.evaluated[0]]
    id_values = _id_calibration(values["msp"][id_test], id_split.logits, id_split.labels,
                                np.linspace(0.0, 1.0, metrics.ECE_BINS + 1))
    # The first class attaining the max, as predicted_class_jax picks it: exact, so numpy's.
    correct = np.argmax(id_split.logits, axis=-1) == id_split.labels
    return _RunScores(name, id_test, run.evaluated[1:], values, id_values, correct, skipped,
                      notes)


def _finish_run(run: _RunScores) -> _RunScores:
    fetched = jax.device_get(run.values)  # its dicts come back with sorted keys
    values = {score: {split: np.asarray(fetched[score][split]) for split in per_split}
              for score, per_split in run.values.items()}
    for score, per_split in values.items():
        for split, v in per_split.items():
            if not np.isfinite(v).all():
                raise ScoringError(f"{run.name}: non-finite {score} scores in split '{split}' "
                                   "(check the predictions)")
    id_values = {m: float(v) for m, v in jax.device_get(run.id_metrics).items()}
    return dataclasses.replace(run, values=values, id_metrics=id_values)


def _selective_rows(runs: Sequence[_RunScores]) -> list[list[MetricRow]]:
    """The selective-classification rows of each run, from one batched call over all of them;
    error_auroc and error_fpr95 are left out where they are undefined (selective.py)."""
    groups = [(run, score) for run in runs for score in run.values]
    if not groups:
        return [[] for _ in runs]
    n = max(len(run.correct) for run in runs)
    id_scores = np.zeros((len(groups), n))
    correct = np.zeros((len(groups), n), bool)
    sizes = np.zeros(len(groups), np.int64)
    for g, (run, score) in enumerate(groups):
        sizes[g] = len(run.correct)
        id_scores[g, :sizes[g]] = run.values[score][run.id_test]
        correct[g, :sizes[g]] = run.correct
    out = selective.selective_metrics(id_scores, correct, sizes=sizes)
    rows = {run.name: [] for run in runs}
    for g, (run, score) in enumerate(groups):
        rows[run.name].extend(MetricRow(run.name, score, "", m, float(out[m][g]))
                              for m in SELECTIVE_METRICS if not np.isnan(out[m][g]))
    return [rows[run.name] for run in runs]


def _ood_rows(runs: Sequence[_RunScores]) -> list[list[MetricRow]]:
    """The OOD metric rows of each run, from one batched metrics call over all of them."""
    groups = [(run, score) for run in runs for score in run.values]
    groups = [(run, score) for run, score in groups if run.ood]
    if not groups:
        return [[] for _ in runs]
    # Arrays at the padded shapes that ood_metrics compiles for, so it need not copy them again.
    shape = metrics.padded_shape(
        len(groups), max(len(run.ood) for run, _ in groups),
        max(len(run.values[score][run.id_test]) for run, score in groups),
        max(len(run.values[score][o]) for run, score in groups for o in run.ood))
    id_scores = np.zeros(shape[:1] + shape[2:3])
    id_sizes = np.zeros(shape[:1], np.int64)
    ood_scores = np.zeros(shape[:2] + shape[3:])
    ood_sizes = np.zeros(shape[:2], np.int64)
    for g, (run, score) in enumerate(groups):
        values = run.values[score]
        id_sizes[g] = len(values[run.id_test])
        id_scores[g, :id_sizes[g]] = values[run.id_test]
        for o, split in enumerate(run.ood):
            ood_sizes[g, o] = len(values[split])
            ood_scores[g, o, :ood_sizes[g, o]] = values[split]
    # Only the real groups go in: a padded group has no ID scores, which ood_metrics rejects; it
    # pads again to the same bucketed shape.
    n = len(groups)
    out = metrics.ood_metrics(id_scores[:n], ood_scores[:n], id_sizes=id_sizes[:n],
                              ood_sizes=ood_sizes[:n])

    rows = {run.name: [] for run in runs}
    for g, (run, score) in enumerate(groups):
        for o, split in enumerate(run.ood):
            rows[run.name].extend(MetricRow(run.name, score, split, m, float(out[m][g, o]))
                                  for m in METRICS)
    return [rows[run.name] for run in runs]


def _progress(items: Iterable, total: int | None) -> Iterable:
    # tqdm (behind `progress`) is optional here so that scoring needs nothing beyond numpy and jax.
    try:
        from softlabel_ood import progress
    except ImportError:  # pragma: no cover
        for i, item in enumerate(items):
            print(f"scoring run {i + 1}/{total or '?'}: {item[0]}", file=sys.stderr)
            yield item
        return
    # The first run is read (and its files checked) before the bar shows, so that a refusal
    # there is the command's only line.
    items = iter(items)
    first = next(items, None)
    if first is None:
        return
    bar = progress.bar(itertools.chain([first], items), total=total, desc="scoring runs",
                       unit="run", file=sys.stderr)
    for item in bar:
        bar.set_postfix_str(item[0])
        yield item


def check_given(given: Mapping[str, Any]) -> dict[str, Any]:
    """The score parameters given for every run (`score_records.parameters`, None for not
    given), each checked by its record's rule."""
    known = score_records.parameters()
    for name, value in given.items():
        if name not in known:
            raise TypeError(f"unknown score parameter {name!r}; expected one of "
                            f"{', '.join(known)}")
        problem = None if value is None else known[name].problem(value)
        if problem is not None:
            raise ScoringError(problem)
    return {name: value for name, value in given.items() if value is not None}


def score_predictions(named: Iterable[tuple[str, predictions_lib.Predictions]], *,
                      stored: Mapping[str, Mapping[str, Any]] | None = None,
                      progress: bool = False, total: int | None = None,
                      **given) -> ScoreReport:
    """Scores runs given as (name, Predictions) pairs; see `score_runs_report`.
    `stored` ({run: {parameter: value}}) holds each run's own values of score parameters (from
    its config.json), which a parameter given by name for every run (`knn_k=5`) replaces; a
    parameter that neither gives takes its record's default."""
    given = check_given(given)
    pending = []
    with float64.enabled():
        for name, preds in _progress(named, total) if progress else named:
            if any(run.name == name for run in pending):
                raise ScoringError(f"{name}: two runs share this name (run names are "
                                   "directory base names)")
            pending.append(_dispatch_run(name, preds, {**(stored or {}).get(name, {}), **given}))
        runs = [_finish_run(run) for run in pending]
    if progress:
        print(f"computing metrics for {sum(len(r.values) * len(r.ood) for r in runs)} "
              "(run, score, OOD split) pairs", file=sys.stderr)
    rows = []
    for run, run_selective_rows, run_ood_rows in zip(runs, _selective_rows(runs), _ood_rows(runs),
                                                     strict=True):
        rows.extend(MetricRow(run.name, "", "", m, run.id_metrics[m]) for m in ID_METRICS)
        rows.extend(run_selective_rows)
        rows.extend(run_ood_rows)
    return ScoreReport(rows=rows, skipped={run.name: run.skipped for run in runs if run.skipped},
                       notes={run.name: run.notes for run in runs if run.notes})


def score_runs_report(run_dirs: Sequence, *, progress: bool = False,
                      ood_groups: Mapping[str, Sequence[str]] | None = None,
                      **given) -> ScoreReport:
    """Reads `<run_dir>/predictions` of each run and computes every score and metric.

    Rows per run: accuracy and ece of the ID test split (empty score and ood), then for each
    score in `score_records` order whose inputs the run holds (the logit scores always; the
    feature scores when the run has features and an id_train split; react and vim when it also
    has the classifier head; odin when it has ODIN scores, and an id_train split for the
    id_train rule) and each OOD split in manifest order, the METRICS in order. The report also
    says which scores were skipped in which run and why. Raises PredictionsError for a missing
    or invalid run directory, and ScoringError for clashing run names or a group that names a
    set which is not an OOD split of the run (`groups.check_groups`).

    `ood_groups` ({group: OOD sets}) overrides the groups each run names in its config.json.
    A score parameter given by name (`score_records.parameters`: knn_k, odin_selection,
    pnorm_p, ...) is used for every run, in place of the value each run's config.json stores
    for a parameter that is a config field, else its record's default: by default the knn
    score's k is `scores.default_knn_k` of each run's id_train size, the ODIN pair is chosen by
    the id_train rule (odin_selection.py) and pnorm's p is 2; the notes say what each run used.
    Every score also gets the ID test split's SELECTIVE_METRICS (empty ood), after accuracy and
    ece. The report's `unfinished` names the runs whose predictions may not be of the finished
    model (`trained_steps.unfinished`).
    """
    given = check_given(given)
    read = directory_reading.read_run_directories(run_dirs, ood_groups, given)
    named = ((run.name, predictions_lib.read(run.predictions)) for run in read)
    report = score_predictions(named, stored={run.name: run.parameters for run in read},
                               progress=progress, total=len(read), **given)
    return dataclasses.replace(report, groups={run.name: run.groups for run in read if run.groups},
                               unfinished={run.name: run.unfinished[1] for run in read
                                           if run.unfinished[0]})
