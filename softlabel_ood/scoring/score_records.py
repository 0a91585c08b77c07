"""The OOD scores (DESIGN.md §6), one record each, with no numpy or JAX in sight.

A record says what a score reads from a run's predictions (its inputs), the parameters it takes
(each with its `score` flag, its rule, its default for runs saved before it existed, and
whether it is also a config field a run stores in its config.json), and the name of its function
in `score_functions.FUNCTIONS`. metrics.csv and metrics.md list the scores in registration
order; `score`'s flags, the config validator's rules and defaults for the parameters that are
config fields, and the scoring pipeline (`pipeline.py`) all derive from these records. A new
score is one `register(Score(...))` and its function.

The config side imports this module: keeping it free of numpy and JAX lets a config load
without them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

# What a score may read: the logits; the penultimate features (of every evaluated split, and of
# the id_train split when it reads id_train too); the id_train split (its statistics are the ID
# reference); the classifier head (format v2 on); the ODIN arrays that predict saves.
INPUTS = ("logits", "id_train", "features", "head", "odin")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A value a score's function takes: `score --<name>` gives it for every run."""

    name: str  # the `score` flag without its dashes, and the config field when `config_field`
    help: str  # the flag's --help text
    type: Callable[[str], Any]  # the flag's parser: float, int, str
    # What a run that does not give it uses (a run saved before the field existed, or any run
    # when it is no config field); None for a default that the score's function works out.
    default: Any
    # One line on a given value that no run can use (it starts with the name), or None.
    problem: Callable[[Any], str | None]
    config_field: bool = False  # also a config field, stored with the run and read from there
    allowed: str = ""  # for a config field: its values in words, as the config validator says
    choices: tuple[str, ...] = ()  # the flag's choices, when it takes one of a few names

    def ok(self, value) -> bool:
        return self.problem(value) is None


@dataclasses.dataclass(frozen=True)
class Score:
    name: str  # its `score` in metrics.csv
    summary: str  # one line; the definitions are in the function's module and the docs
    inputs: tuple[str, ...]  # of INPUTS, checked in INPUTS order: a run lacking one skips it
    # Its function's name in `score_functions.FUNCTIONS`; or, for scores computed together, the
    # name in `score_functions.FUSED` of the one call that returns all of them (`fused`).
    function: str
    parameters: tuple[Parameter, ...] = ()
    fused: bool = False


BY_NAME: dict[str, Score] = {}


def register(score: Score) -> Score:
    """Adds a score; a parameter that another score declares must be the same record there."""
    if score.name in BY_NAME:
        raise ValueError(f"score {score.name!r} is already registered")
    unknown = [i for i in score.inputs if i not in INPUTS]
    if unknown:
        raise ValueError(f"score {score.name!r}: input {unknown[0]!r}, expected one of {INPUTS}")
    known = parameters()
    for p in score.parameters:
        if p.name in known and known[p.name] != p:
            raise ValueError(f"score {score.name!r}: parameter {p.name!r} differs from the "
                             "record that another score declares")
    BY_NAME[score.name] = score
    return score


def names() -> tuple[str, ...]:
    """Every score, in the order of metrics.csv and metrics.md."""
    return tuple(BY_NAME)


def get(name: str) -> Score:
    return BY_NAME[name]


def parameters() -> dict[str, Parameter]:
    """Every registered score's parameters by name, in alphabetical order (flags, fields)."""
    found = {p.name: p for score in BY_NAME.values() for p in score.parameters}
    return {name: found[name] for name in sorted(found)}


def config_parameters() -> dict[str, Parameter]:
    """The parameters that are config fields, by name."""
    return {name: p for name, p in parameters().items() if p.config_field}


def fused(function: str) -> tuple[str, ...]:
    """The scores that the fused call `function` computes together, in registration order."""
    return tuple(s.name for s in BY_NAME.values() if s.fused and s.function == function)


def reading(*inputs: str) -> tuple[str, ...]:
    """The scores that read every one of `inputs`."""
    return tuple(s.name for s in BY_NAME.values() if set(inputs) <= set(s.inputs))


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


PNORM_P = Parameter(
    "pnorm_p", "p of the pnorm score for every run, a number >= 1 (default: each run's "
    "config.pnorm_p from its config.json, else 2)", type=float, default=2.0,
    problem=lambda v: None if _is_real(v) and v >= 1 else
    f"pnorm_p: must be a finite number >= 1 (a norm), got {v!r}",
    config_field=True, allowed="a number >= 1 (the p of a norm)")
KNN_K = Parameter(
    "knn_k", "k of the knn score for every run (default: per run, one neighbour per 1,000 "
    "id_train examples, at least 1, as Sun et al.'s k = 50 for 50,000; capped at the id_train "
    "size)", type=int, default=None,
    problem=lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else
    f"knn_k: must be at least 1, got {v}")
ODIN_SELECTIONS = ("id_train", "fixed")  # the rules of `odin_selection.py`
ODIN_SELECTION = Parameter(
    "odin_selection", "the ODIN pair of every run: id_train (the ε with the highest mean "
    "id_train score at the largest T) or fixed (T = 1000, ε = 0.0014, OpenOOD's default) "
    "(default: each run's config.odin_selection from its config.json, else id_train)",
    type=str, default="id_train", choices=ODIN_SELECTIONS,
    problem=lambda v: None if v in ODIN_SELECTIONS else
    f"odin_selection is {v!r}, expected one of {', '.join(ODIN_SELECTIONS)}",
    config_field=True,
    allowed="id_train (the ε with the highest mean id_train ODIN score at the largest T) or "
            "fixed (T = 1000, ε = 0.0014, OpenOOD's default)")

for _score in (
    Score("msp", "max softmax probability", ("logits",), "logit_scores", fused=True),
    Score("max_logit", "the largest logit", ("logits",), "logit_scores", fused=True),
    Score("energy", "logsumexp of the logits, T = 1", ("logits",), "logit_scores", fused=True),
    Score("entropy", "negative entropy of the softmax", ("logits",), "logit_scores", fused=True),
    Score("pnorm", "MaxLogit-pNorm: the largest centred logit over the centred logits' p-norm",
          ("logits",), "pnorm", parameters=(PNORM_P,)),
    Score("mahalanobis", "distance to the nearest id_train class mean, shared covariance",
          ("id_train", "features"), "mahalanobis"),
    Score("knn", "cosine similarity to the k-th nearest id_train feature, minus 1",
          ("id_train", "features"), "knn", parameters=(KNN_K,)),
    Score("react", "energy of the head's logits of features clipped at an id_train percentile",
          ("id_train", "features", "head"), "react"),
    Score("vim", "energy minus the scaled residual of the features outside id_train's "
          "principal subspace", ("id_train", "features", "head"), "vim"),
    Score("odin", "ODIN's saved score at the pair that odin_selection chooses", ("odin",),
          "odin", parameters=(ODIN_SELECTION,)),
):
    register(_score)
