"""What the report reads from the runs' directories beside their metrics: the OOD groups, the
ODIN pair each run chose, knn's k, pnorm's p, which runs' predictions are not of their finished
models, each run's mean softmax entropy on the ID test set, and the first seed's predictions the
figures draw. Runs without a directory at hand
(a rebuilt report's) are skipped; `rebuild` then takes these from runs.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from etils import epath
from scipy import special

from softlabel_ood import scoring
from softlabel_ood.analysis import family_claims, results
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.workdir import predictions, run_dir, trained_steps


def run_groups(runs: Sequence[RunInfo]) -> dict[str, tuple[str, ...]]:
    """The OOD groups (`config.ood_groups`) stored with the first run at hand that names any."""
    for r in runs:
        if r.directory and "://" not in r.directory:
            found = scoring.groups.read_groups(r.directory)
            if found:
                return found
    return {}


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


def pnorm_p(run: RunInfo) -> float:
    """The p of the run's pnorm score, as `score` takes it: from its config.json, else 2."""
    if not run.directory or "://" in run.directory:
        return scoring.scores.DEFAULT_PNORM_P
    return float(scoring.directory_reading.stored_parameter(
        run_dir.read_config(run.directory, missing_ok=True), scoring.score_records.PNORM_P,
        str(run_dir.config_path(run.directory))))


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


def first_predictions(group: Sequence[RunInfo] | None) -> predictions.Predictions | None:
    """Predictions of the first seed of a grid entry that has them at hand."""
    for r in group or ():
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is not None and (directory / predictions.MANIFEST).exists():
            return predictions.read(results.local_copy(directory), features=False)
    return None


def mean_softmax_entropy(logits: np.ndarray) -> float:
    """The mean over rows of H(softmax(z)) = −Σ_k p_k ln p_k, in nats, computed in float64."""
    log_p = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
    return float(np.mean(-np.sum(np.exp(log_p) * log_p, axis=-1)))


def id_entropies(runs: Sequence[RunInfo]) -> dict[str, float]:
    """Run -> the mean softmax entropy of its ID test split (how soft the model became), for
    the runs whose predictions are at hand."""
    found = {}
    for r in runs:
        directory = run_dir.predictions_path(epath.Path(r.directory)) if r.directory else None
        if directory is not None and (directory / predictions.MANIFEST).exists():
            preds = predictions.read(results.local_copy(directory), features=False)
            found[r.run] = mean_softmax_entropy(preds.splits[preds.id_test_name].logits)
    return found


def family_entropies(runs: Sequence[RunInfo]) -> dict[str, float]:
    """`id_entropies` when the runs hold a family method beyond ls (`family_claims.applies`),
    whose report shows them; else none."""
    return id_entropies(runs) if family_claims.applies(runs) else {}
