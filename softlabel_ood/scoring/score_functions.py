"""The functions behind the score records (`score_records.py`), on one run's predictions.

`FUNCTIONS[record.function](run, **parameters)` gives `(values, note)`: values is
{split: per-row scores} for each split the run evaluates (for a fused record, {score: that} for
every score of the call), and note says what the function chose, e.g. knn's k ("" for nothing).
Values may be JAX arrays still being computed: the caller fetches them all at once. Whether a
run holds a record's inputs is `missing_input`'s question, asked before the function is called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from softlabel_ood.scoring import head_scores, score_records, scores
from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.scoring.odin_selection import choose_for, odin_problem
from softlabel_ood.workdir import predictions as predictions_lib


class Skipped(Exception):  # not an error: the score does not apply to the run
    """A function's reason for not scoring this run, given its parameters."""


class RunInputs:
    """One run's predictions and the splits it scores (the ID test split, then the OOD splits),
    with the arrays that several scores share computed once."""

    def __init__(self, preds: predictions_lib.Predictions):
        self.preds = preds
        self.evaluated = [preds.id_test_name, *preds.names("ood_test")]

    def logits(self, split: str):
        return self.preds.splits[split].logits

    @functools.cached_property
    def train(self) -> predictions_lib.Split:
        return self.preds.splits[self.preds.names("id_train")[0]]

    @functools.cached_property
    def features(self) -> np.ndarray:
        """The features of every evaluated split in one array: one pass, then cut back."""
        return np.concatenate([self.preds.splits[s].features for s in self.evaluated])

    def per_split(self, per_row) -> dict[str, Any]:
        ends = np.cumsum([self.preds.splits[s].features.shape[0] for s in self.evaluated])
        return dict(zip(self.evaluated, np.split(per_row, ends[:-1]), strict=True))

    @property
    def head(self) -> tuple:
        return self.train.features, self.preds.head.kernel, self.preds.head.bias


def _check_train_size(preds: predictions_lib.Predictions) -> None:
    # Class means and a shared covariance need every class and more rows than classes; a smaller
    # split would give scores that mean nothing, so the run is refused, not skipped.
    train = preds.names("id_train")[0]
    labels = preds.splits[train].labels
    missing = sorted(set(range(preds.num_classes)) - set(np.unique(labels).tolist()))
    if len(labels) < preds.num_classes + 1 or missing:
        raise ScoringError(
            f"{preds.directory / (train + '.npz')}: id_train split has {len(labels)} rows"
            + (f" and no example of class {missing[0]}" if missing else "")
            + f"; the feature scores need every one of the {preds.num_classes} classes and at "
            f"least {preds.num_classes + 1} rows")


def missing_input(record: score_records.Score, run: RunInputs) -> str | None:
    """Why `run` cannot give `record` its inputs (checked in INPUTS order), or None."""
    preds, inputs = run.preds, record.inputs
    train = preds.names("id_train")
    if "id_train" in inputs and not train:
        return "the predictions have no id_train split"
    if "features" in inputs:
        for name in [*(train[:1] if "id_train" in inputs else []), *run.evaluated]:
            if preds.splits[name].features is None:
                return f"split '{name}' has no features"
        if "id_train" in inputs:
            _check_train_size(preds)
    if "head" in inputs and preds.head is None:
        return "the predictions have no classifier head (format v1)"
    if "odin" in inputs and not preds.odin_pairs:
        return "the predictions hold no ODIN scores (none configured, or format v1)"
    return None


def logit_scores(run: RunInputs) -> tuple[dict[str, dict[str, Any]], str]:
    """Every score of `scores.logit_scores_jax`, dispatched for each split without waiting."""
    per_split = {s: scores.logit_scores_jax(run.logits(s)) for s in run.evaluated}
    return {score: {s: v[score] for s, v in per_split.items()}
            for score in score_records.fused("logit_scores")}, ""


def pnorm(run: RunInputs, pnorm_p: float) -> tuple[dict[str, Any], str]:
    return ({s: scores.pnorm_jax(run.logits(s), float(pnorm_p)) for s in run.evaluated},
            f"p = {pnorm_p:g}")


def mahalanobis(run: RunInputs) -> tuple[dict[str, Any], str]:
    return run.per_split(scores.mahalanobis(run.features, run.train.features, run.train.labels,
                                            run.preds.num_classes)), ""


def knn_note(k: int | None, num_train: int) -> tuple[int, str]:
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


def knn(run: RunInputs, knn_k: int | None) -> tuple[dict[str, Any], str]:
    k, note = knn_note(knn_k, len(run.train.labels))
    return run.per_split(scores.knn(run.features, run.train.features, k)), note


def react(run: RunInputs) -> tuple[dict[str, Any], str]:
    return run.per_split(head_scores.react(run.features, *run.head)), ""


def vim(run: RunInputs) -> tuple[dict[str, Any], str]:
    return run.per_split(head_scores.vim(run.features, *run.head)), ""


def odin(run: RunInputs, odin_selection: str) -> tuple[dict[str, Any], str]:
    problem = odin_problem(run.preds, odin_selection)
    if problem is not None:
        raise Skipped(problem)
    choice = choose_for(run.preds, odin_selection)
    # Ranked as saved: the log-ratios of format v3 order exactly as the scores.
    return ({s: run.preds.splits[s].odin_ranking()[:, choice.index] for s in run.evaluated},
            choice.text())


FUNCTIONS: dict[str, Callable[..., tuple[dict, str]]] = {
    f.__name__: f for f in (logit_scores, pnorm, mahalanobis, knn, react, vim, odin)}

