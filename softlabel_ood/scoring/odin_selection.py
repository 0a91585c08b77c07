"""Which saved ODIN (temperature, epsilon) pair the `odin` score uses, chosen without OOD data.

The rule, fixed in advance and using the `id_train` split only:

1. T = the largest configured temperature. The ODIN paper finds detection improving with T and
   levelling off by T = 1000; and a mean ID score cannot choose T, because softmax confidences at
   different temperatures are not on one scale (a higher T flattens every softmax).
2. ε = the one, among the pairs with that T, whose ODIN scores have the highest mean over the
   id_train split: the criterion of Generalized ODIN (Hsu et al. 2020), which picks the
   perturbation that raises ID confidence most. Ties go to the smaller ε.

Generalized ODIN applies the criterion to held-out ID data; this project has no held-out ID split,
so the id_train split (the training examples, seen by the model) stands in for it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from softlabel_ood.workdir import predictions as predictions_lib

RULE = ("the largest configured temperature T, then the ε whose ODIN scores have the highest mean "
        "on the id_train split (Generalized ODIN's criterion; ties to the smaller ε)")


@dataclasses.dataclass(frozen=True)
class OdinChoice:
    index: int  # the column of the splits' odin arrays
    temperature: float
    epsilon: float
    id_train_means: tuple[float, ...]  # mean id_train score of each pair with that temperature

    def text(self) -> str:
        return (f"T = {self.temperature:g}, ε = {self.epsilon:g} (chosen by the rule: {RULE})")


def choose(pairs, id_train_odin: np.ndarray) -> OdinChoice:
    """The pair chosen by the rule, from the pairs and the id_train split's odin array [N, P]."""
    pairs = [tuple(map(float, p)) for p in pairs]
    temperature = max(t for t, _ in pairs)
    candidates = sorted((e, i) for i, (t, e) in enumerate(pairs) if t == temperature)
    means = [float(np.mean(id_train_odin[:, i], dtype=np.float64)) for _, i in candidates]
    best = int(np.argmax(means))  # the first maximum: the smallest ε among ties
    epsilon, index = candidates[best]
    return OdinChoice(index, temperature, epsilon, tuple(means))


def odin_problem(preds: predictions_lib.Predictions) -> str | None:
    """Why the `odin` score cannot be computed for `preds`, or None."""
    if not preds.odin_pairs:
        return "the predictions hold no ODIN scores (none configured, or format v1)"
    if not preds.names("id_train"):
        return "the predictions have no id_train split to choose the ODIN pair on"
    return None


def choose_for(preds: predictions_lib.Predictions) -> OdinChoice:
    train = preds.splits[preds.names("id_train")[0]]
    return choose(preds.odin_pairs, train.odin_max_softmax())


def choose_from_directory(directory) -> OdinChoice | None:
    """The choice for a predictions directory, reading only its manifest and the id_train split's
    ODIN array; None when `odin` is not computed for it."""
    manifest = predictions_lib.read_manifest(directory)
    pairs = manifest.get("odin", {}).get("pairs")
    train = [e for e in manifest["splits"].values() if e["role"] == "id_train"]
    if not pairs or not train:
        return None
    with np.load(pathlib.Path(os.fspath(directory)) / train[0]["file"]) as npz:
        field = predictions_lib.ODIN_V2_FIELD \
            if manifest["format"] == predictions_lib.FORMAT_V2 else predictions_lib.ODIN_FIELD
        if field not in npz.files:
            return None
        scores = predictions_lib.odin_max_softmax(field, npz[field], manifest["num_classes"])
    return choose(pairs, scores)
