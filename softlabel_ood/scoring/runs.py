"""From run directories to metric rows (`metrics_files` writes them to metrics.csv and metrics.md).

Each run is read and scored in turn (scores need the logits, which are dropped afterwards); then
the OOD metrics of every (run, score, OOD split), and the selective-classification metrics of
every (run, score), are computed in one batched call each, so a grid of runs costs a few
compiled computations rather than a loop of small ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pathlib
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from softlabel_ood.scoring import (
    float64,
    groups,
    head_scores,
    metrics,
    odin_selection,
    scores,
    selective,
)
from softlabel_ood.scoring.head_scores import HEAD_SCORES
from softlabel_ood.scoring.metrics import ID_METRICS, METRICS, ScoringError
from softlabel_ood.scoring.odin_selection import SELECTIONS as ODIN_SELECTIONS
from softlabel_ood.scoring.odin_selection import read_selection
from softlabel_ood.scoring.scores import FEATURE_SCORES, LOGIT_SCORES, POSTHOC_SCORES
from softlabel_ood.scoring.selective import SELECTIVE_METRICS
from softlabel_ood.workdir import predictions as predictions_lib
from softlabel_ood.workdir import run_dir as run_dir_lib
from softlabel_ood.workdir import trained_steps

# Every score, in the order of metrics.csv and metrics.md. Definitions: docs/scores_and_metrics.md.
ODIN_SCORES = ("odin",)
ALL_SCORES = (*LOGIT_SCORES, *POSTHOC_SCORES, *FEATURE_SCORES, *HEAD_SCORES, *ODIN_SCORES)


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
    # run -> {score: why it was not computed}, for feature scores a run cannot provide.
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


def run_name(run_dir) -> str:
    """A run's name is its directory's base name (`runs/ls_0.1/` -> `ls_0.1`)."""
    return pathlib.Path(os.path.abspath(os.fspath(run_dir))).name


def _feature_problem(preds: predictions_lib.Predictions, needed: Sequence[str]) -> str | None:
    train = preds.names("id_train")
    if not train:
        return "the predictions have no id_train split"
    for name in [train[0], *needed]:
        if preds.splits[name].features is None:
            return f"split '{name}' has no features"
    # Class means and a shared covariance need every class and more rows than classes; a
    # smaller split would give scores that mean nothing, so the run is refused, not skipped.
    labels = preds.splits[train[0]].labels
    missing = sorted(set(range(preds.num_classes)) - set(np.unique(labels).tolist()))
    if len(labels) < preds.num_classes + 1 or missing:
        raise ScoringError(
            f"{preds.directory / (train[0] + '.npz')}: id_train split has {len(labels)} rows"
            + (f" and no example of class {missing[0]}" if missing else "")
            + f"; the feature scores need every one of the {preds.num_classes} classes and at "
            f"least {preds.num_classes + 1} rows")
    return None


@jax.jit
def _id_calibration(logit_values, logits, labels, edges):
    """accuracy and ece of the ID test split, given its logit scores [4, N] (msp first)."""
    return metrics.calibration_jax(logit_values[0], scores.predicted_class_jax(logits) == labels,
                                   edges)


def _knn_note(k: int | None, num_train: int) -> tuple[int, str]:
    """The k the knn score uses for an id_train split of `num_train` rows, and what it is."""
    if k is None:
        k = scores.default_knn_k(num_train)
        why = (f"Sun et al.'s k = 50 for 50,000 train examples, scaled to the {num_train:,} "
               f"id_train examples: one per {scores.KNN_TRAIN_PER_NEIGHBOUR:,}, at least 1")
    else:
        why = "as given"
    k_used = min(k, num_train)
    if k_used < k:
        why += f"; {k} capped at the id_train size"
    return k_used, f"k = {k_used} ({why})"


def _dispatch_run(name: str, preds: predictions_lib.Predictions, knn_k: int | None,
                  selection: str, pnorm_p: float) -> _RunScores:
    """Starts the run's score computations; JAX runs them while the next run is read."""
    id_test = preds.id_test_name
    ood = preds.names("ood_test")
    evaluated = [id_test, *ood]
    # Dispatched without waiting for the results (see _finish_run). Splits of equal size share
    # one compiled computation.
    logit_values = {s: scores.logit_scores_jax(preds.splits[s].logits) for s in evaluated}
    id_split = preds.splits[id_test]
    id_values = _id_calibration(logit_values[id_test], id_split.logits, id_split.labels,
                                np.linspace(0.0, 1.0, metrics.ECE_BINS + 1))
    correct = scores.predicted_class_jax(id_split.logits) == id_split.labels
    values = {"logit": logit_values,  # split -> [4, N], taken apart once computed
              "pnorm": {s: scores.pnorm_jax(preds.splits[s].logits, float(pnorm_p))
                        for s in evaluated}}
    notes = {"pnorm": f"p = {pnorm_p:g}"}

    skipped = {}
    problem = _feature_problem(preds, evaluated)
    if problem is None:
        train = preds.splits[preds.names("id_train")[0]]
        k, notes["knn"] = _knn_note(knn_k, len(train.labels))
        # One pass over all evaluated splits, then cut back into splits.
        features = np.concatenate([preds.splits[s].features for s in evaluated])
        ends = np.cumsum([preds.splits[s].features.shape[0] for s in evaluated])
        for score, per_row in [
                ("mahalanobis", scores.mahalanobis(features, train.features, train.labels,
                                                   preds.num_classes)),
                ("knn", scores.knn(features, train.features, k))]:
            values[score] = dict(zip(evaluated, np.split(per_row, ends[:-1]), strict=True))
    else:
        skipped = dict.fromkeys(FEATURE_SCORES, f"skipped: {problem}")

    if problem is None and preds.head is None:
        problem = "the predictions have no classifier head (format v1)"
    if problem is None:
        head = (train.features, preds.head.kernel, preds.head.bias)
        for score, per_row in [("react", head_scores.react(features, *head)),
                               ("vim", head_scores.vim(features, *head))]:
            values[score] = dict(zip(evaluated, np.split(per_row, ends[:-1]), strict=True))
    else:
        skipped.update(dict.fromkeys(HEAD_SCORES, f"skipped: {problem}"))

    problem = odin_selection.odin_problem(preds, selection)
    if problem is None:
        choice = odin_selection.choose_for(preds, selection)
        # Ranked as saved: the log-ratios of format v3 order exactly as the scores.
        values["odin"] = {s: preds.splits[s].odin_ranking()[:, choice.index] for s in evaluated}
        notes["odin"] = choice.text()
    else:
        skipped["odin"] = f"skipped: {problem}"
    return _RunScores(name, id_test, ood, values, id_values, correct, skipped, notes)


def _finish_run(run: _RunScores) -> _RunScores:
    values = jax.device_get(run.values)
    logit_values = values.pop("logit")
    values = {**{score: {s: np.asarray(v[i]) for s, v in logit_values.items()}
                 for i, score in enumerate(LOGIT_SCORES)}, **values}
    values = {score: values[score] for score in ALL_SCORES if score in values}
    for score, per_split in values.items():
        for split, v in per_split.items():
            if not np.isfinite(v).all():
                raise ScoringError(f"{run.name}: non-finite {score} scores in split '{split}' "
                                   "(check the predictions)")
    id_values = {m: float(v) for m, v in jax.device_get(run.id_metrics).items()}
    return dataclasses.replace(run, values=values, id_metrics=id_values,
                               correct=np.asarray(jax.device_get(run.correct)))


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


def score_predictions(named: Iterable[tuple[str, predictions_lib.Predictions]], *,
                      knn_k: int | None = None,
                      odin_selections: Mapping[str, str] | None = None,
                      pnorm_ps: Mapping[str, float] | None = None,
                      progress: bool = False, total: int | None = None) -> ScoreReport:
    """Scores runs given as (name, Predictions) pairs; see `score_runs_report`.
    `odin_selections` ({run: "id_train" or "fixed"}) picks each run's ODIN pair (default
    "id_train"); `pnorm_ps` ({run: p}) the pnorm score's p (default 2)."""
    pending = []
    with float64.enabled():
        for name, preds in _progress(named, total) if progress else named:
            if any(run.name == name for run in pending):
                raise ScoringError(f"{name}: two runs share this name (run names are "
                                   "directory base names)")
            pending.append(_dispatch_run(
                name, preds, knn_k, (odin_selections or {}).get(name, "id_train"),
                (pnorm_ps or {}).get(name, scores.DEFAULT_PNORM_P)))
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


def pnorm_p_of(config: Mapping, where: str) -> float:
    """A stored config's `pnorm_p`; the default for runs saved before the field existed."""
    p = config.get("pnorm_p", scores.DEFAULT_PNORM_P)
    try:
        scores.check_pnorm_p(p)
    except ValueError as e:
        raise ScoringError(f"{where}: {e}") from None
    return float(p)


def _check_run_dirs(run_dirs: Sequence, ood_groups: Mapping[str, Sequence[str]] | None
                    ) -> list[tuple[str, dict, float, tuple]]:
    """(name, OOD groups, pnorm's p, `trained_steps.unfinished`) of each run, once its manifest
    and groups are checked."""
    checked = []
    for run_dir in run_dirs:
        if not os.path.isdir(os.fspath(run_dir)):
            raise predictions_lib.PredictionsError(f"{run_dir}: no such run directory")
        # The manifests are cheap to check: most bad directories are reported before any work.
        directory = pathlib.Path(os.fspath(run_dir))
        manifest = predictions_lib.read_manifest(run_dir_lib.predictions_path(directory))
        name = run_name(run_dir)
        if any(name == other for other, *_ in checked):
            raise ScoringError(f"{run_dir}: another run directory has the same base name "
                               f"'{name}' (run names must be unique)")
        # A run directory written by train holds its config: the predictions must be its own.
        stored = run_dir_lib.read_config(directory, missing_ok=True)
        predictions_lib.check_run_matches_config(
            run_dir_lib.predictions_path(directory) / run_dir_lib.MANIFEST,
            manifest.get("run", {}), stored, run_dir_lib.config_path(directory))
        if ood_groups is not None:
            run_groups, where = dict(ood_groups), "--groups"
        else:
            run_groups = groups.groups_of(stored, directory)
            where = f"{run_dir_lib.config_path(directory)} (ood_groups; --groups replaces them)"
        groups.check_groups(run_groups, {n: e["role"] for n, e in manifest["splits"].items()},
                            run=name, where=where)
        checked.append((name, run_groups,
                        pnorm_p_of(stored, str(run_dir_lib.config_path(directory))),
                        trained_steps.unfinished(
                            manifest, done=run_dir_lib.is_finished(directory))))
    return checked


def score_runs_report(run_dirs: Sequence, *, knn_k: int | None = None, progress: bool = False,
                      ood_groups: Mapping[str, Sequence[str]] | None = None,
                      odin_selection: str | None = None,
                      pnorm_p: float | None = None) -> ScoreReport:
    """Reads `<run_dir>/predictions` of each run and computes every score and metric.

    Rows per run: accuracy and ece of the ID test split (empty score and ood), then for each
    score (LOGIT_SCORES; FEATURE_SCORES when the run has features and an id_train split;
    HEAD_SCORES when it also has the classifier head; odin when it has ODIN scores and an
    id_train split) and each OOD split in manifest order, the METRICS in order. The report also
    says which scores were skipped in which run and why. Raises PredictionsError for a missing
    or invalid run directory, and ScoringError for clashing run names or a group that names a
    set which is not an OOD split of the run (`groups.check_groups`).

    `ood_groups` ({group: OOD sets}) overrides the groups each run names in its config.json.
    `knn_k` fixes the knn score's k for every run; by default each run's is
    `scores.default_knn_k` of its id_train size, and the notes say which k it used.
    `odin_selection` ("id_train" or "fixed") overrides the rule each run's config.json names for
    its ODIN pair (odin_selection.py), and `pnorm_p` the p of each run's pnorm score (its
    config.json's `pnorm_p`, else 2). Every score also gets the ID test split's
    SELECTIVE_METRICS (empty ood), after accuracy and ece. The report's `unfinished` names the
    runs whose predictions may not be of the finished model (`trained_steps.unfinished`).
    """
    if odin_selection is not None and odin_selection not in ODIN_SELECTIONS:
        raise ScoringError(f"odin_selection: {odin_selection!r}, expected one of "
                           f"{', '.join(ODIN_SELECTIONS)}")
    if pnorm_p is not None:
        try:
            scores.check_pnorm_p(pnorm_p)
        except ValueError as e:
            raise ScoringError(str(e)) from None
    checked = _check_run_dirs(run_dirs, ood_groups)
    names = [name for name, *_ in checked]
    named = ((name, predictions_lib.read(run_dir_lib.predictions_path(d)))
             for name, d in zip(names, run_dirs, strict=True))
    selections = {name: odin_selection or read_selection(d)
                  for name, d in zip(names, run_dirs, strict=True)}
    pnorm_ps = {name: pnorm_p or p for name, _, p, _ in checked}
    report = score_predictions(named, knn_k=knn_k, odin_selections=selections,
                               pnorm_ps=pnorm_ps, progress=progress, total=len(checked))
    return dataclasses.replace(report, groups={n: g for n, g, *_ in checked if g},
                               unfinished={n: checkpoint for n, *_, (unfinished, checkpoint)
                                           in checked if unfinished})
