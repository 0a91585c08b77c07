"""Which saved ODIN (temperature, epsilon) pair the `odin` score uses, chosen without OOD data.

A run's config field `odin_selection` (stored in its config.json; "id_train" when absent) names
the rule:

- "id_train", fixed in advance and using the `id_train` split only:
  1. T = the largest configured temperature. The ODIN paper finds detection improving with T
     and levelling off by T = 1000; and a mean ID score cannot choose T, because softmax
     confidences at different temperatures are not on one scale (a higher T flattens every
     softmax).
  2. ε = the one, among the pairs with that T, whose ODIN scores have the highest mean over the
     id_train split: the criterion of Generalized ODIN (Hsu et al. 2020), which picks the
     perturbation that raises ID confidence most. Ties go to the smaller ε.
  Generalized ODIN applies the criterion to held-out ID data; this project has no held-out ID
  split, so the id_train split (the training examples, seen by the model) stands in for it.
  The mean often rises with ε over the whole grid, and the rule then takes the largest ε.
- "fixed": OpenOOD's default pair, T = 1000 and ε = 0.0014 (the ODIN paper's CIFAR setting),
  whatever the data; the comparison point for the rule.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from softlabel_ood.scoring import directory_reading, score_records
from softlabel_ood.workdir import predictions as predictions_lib

SELECTIONS = score_records.ODIN_SELECTIONS
FIXED_PAIR = (1000.0, 0.0014)  # OpenOOD's ODIN postprocessor default
RULE = ("the largest configured temperature T, then the ε whose ODIN scores have the highest mean "
        "on the id_train split (Generalized ODIN's criterion; ties to the smaller ε)")
FIXED_RULE = "fixed: OpenOOD's default pair"


@dataclasses.dataclass(frozen=True)
class OdinChoice:
    index: int  # the column of the splits' ODIN arrays
    temperature: float
    epsilon: float
    # The ε of the pairs with that temperature, ascending, and the mean id_train ODIN score of
    # each (empty without an id_train split).
    epsilons: tuple[float, ...] = ()
    id_train_means: tuple[float, ...] = ()
    selection: str = "id_train"

    def text(self) -> str:
        rule = FIXED_RULE if self.selection == "fixed" else f"chosen by the rule: {RULE}"
        return f"T = {self.temperature:g}, ε = {self.epsilon:g} ({rule})"

    @property
    def took_the_largest_epsilon(self) -> bool:
        """The rule chose the largest of several ε: the mean did not turn down within the grid."""
        return (self.selection == "id_train" and len(self.epsilons) > 1
                and self.epsilon == max(self.epsilons))


def choose(pairs, id_train_odin: np.ndarray | None, selection: str = "id_train") -> OdinChoice:
    """The pair chosen by `selection`, from the pairs and the id_train split's ODIN scores
    [N, P] (the max softmax; needed by "id_train" only)."""
    pairs = [tuple(map(float, p)) for p in pairs]
    if selection == "fixed":
        temperature, epsilon = FIXED_PAIR
    else:
        temperature = max(t for t, _ in pairs)
    candidates = sorted((e, i) for i, (t, e) in enumerate(pairs) if t == temperature)
    means = () if id_train_odin is None else tuple(
        float(np.mean(id_train_odin[:, i], dtype=np.float64)) for _, i in candidates)
    if selection == "fixed":
        index = pairs.index(FIXED_PAIR)
    else:
        epsilon, index = candidates[int(np.argmax(means))]  # the first maximum: the smallest ε
    return OdinChoice(index, temperature, epsilon, tuple(e for e, _ in candidates), means,
                      selection)


def odin_problem(preds: predictions_lib.Predictions, selection: str = "id_train") -> str | None:
    """Why the `odin` score cannot be computed for `preds` with `selection`, or None."""
    if not preds.odin_pairs:
        return "the predictions hold no ODIN scores (none configured, or format v1)"
    if selection == "fixed" and FIXED_PAIR not in preds.odin_pairs:
        return (f"odin_selection is fixed, but the predictions hold no pair (T = "
                f"{FIXED_PAIR[0]:g}, ε = {FIXED_PAIR[1]:g})")
    if selection == "id_train" and not preds.names("id_train"):
        return "the predictions have no id_train split to choose the ODIN pair on"
    return None


def choose_for(preds: predictions_lib.Predictions, selection: str = "id_train") -> OdinChoice:
    train = preds.names("id_train")
    scores = preds.splits[train[0]].odin_max_softmax() if train else None
    return choose(preds.odin_pairs, scores, selection)


def choose_from_directory(directory, selection: str = "id_train") -> OdinChoice | None:
    """The choice for a predictions directory, reading only its manifest and the id_train split's
    ODIN array; None when `odin` is not computed for it."""
    manifest = predictions_lib.read_manifest(directory)
    pairs = manifest.get("odin", {}).get("pairs")
    train = [e for e in manifest["splits"].values() if e["role"] == "id_train"]
    if not pairs or (selection == "fixed" and list(FIXED_PAIR) not in pairs):
        return None
    if not train:
        return choose(pairs, None, selection) if selection == "fixed" else None
    with np.load(pathlib.Path(os.fspath(directory)) / train[0]["file"]) as npz:
        field = predictions_lib.ODIN_V2_FIELD \
            if manifest["format"] == predictions_lib.FORMAT_V2 else predictions_lib.ODIN_FIELD
        if field not in npz.files:
            return None
        scores = predictions_lib.odin_max_softmax(field, npz[field], manifest["num_classes"])
    return choose(pairs, scores, selection)


def selection_from_config(config: Mapping, where: str) -> str:
    """A stored config's `odin_selection`; "id_train" for runs saved before the field existed."""
    return directory_reading.stored_parameter(config, score_records.ODIN_SELECTION, where)
