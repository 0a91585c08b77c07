"""Checks a config before anything is loaded or written, with one-line errors naming the field.

`FIELDS` is the one definition of what each config field allows (DESIGN.md §8): `check` applies
it, and `--help` prints it. What a value means for one method (a teacher for kd, no α for ce)
comes from `softlabel_ood.methods`. Checks that need the loaded data (the batch size against
the size of the training set) are in `check_training_size`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from softlabel_ood import methods
from softlabel_ood.cli_errors import UserError
from softlabel_ood.data import datasets

COMPUTE_DTYPES = ("float32", "bfloat16")
# Optimizers of `softlabel_ood.training.optimizer` (its OPTIMIZERS, which imports optax; a test
# keeps the two equal so that the config side can check a name without loading JAX).
OPTIMIZERS = ("sgd", "adam", "adamw")
# The step's seed is an int32 argument of the compiled step.
MAX_SEED = 2**31 - 1
# The rules of `softlabel_ood.scoring.odin_selection` (SELECTIONS, FIXED_PAIR; a test keeps them
# equal, so that the config side needs no JAX).
ODIN_SELECTIONS = ("id_train", "fixed")
ODIN_FIXED_PAIR = (1000.0, 0.0014)


class ConfigError(UserError):
    """A config field has a value that no run can use."""


# Fields that `predict` may change on a finished run: what is evaluated, never what was trained.
EVALUATION_FIELDS = frozenset({
    "ood_datasets", "dataset_paths", "data_dir", "num_ood_examples", "eval_batch_size",
    "odin_pairs", "odin_selection", "ood_groups",
})
# Fields that may differ between the run that made a checkpoint and the run that resumes it:
# they change what is evaluated or logged, or the speed, not what is trained.
RESUMABLE_CHANGES = EVALUATION_FIELDS | {
    "log_every_steps", "checkpoint_every_steps", "steps_per_call", "device_data_max_mb",
}


@dataclasses.dataclass(frozen=True)
class Rule:
    allowed: str  # what the error and --help say is allowed
    ok: Callable[[Any], bool]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Rule:
    return Rule(f"an integer >= {low}", lambda v: _is_int(v) and v >= low)


def _real(allowed: str, ok: Callable[[float], bool]) -> Rule:
    return Rule(allowed, lambda v: _is_real(v) and ok(v))


def _dataset_name(v) -> bool:
    return v in datasets.NAMES


def _model_name(v) -> bool:
    # The model's constructor holds the naming rule (wrn<depth>_<width> with depth 6n + 4, ...);
    # building the flax module only records its fields, nothing is initialised.
    from softlabel_ood import models
    try:
        models.create_model(v, num_classes=2)
    except (ValueError, TypeError):
        return False
    return True


def _str_rule(allowed: str = "a string") -> Rule:
    return Rule(allowed, lambda v: isinstance(v, str))


def _odin_pairs(v) -> bool:
    def pair(p):
        return isinstance(p, tuple | list) and len(p) == 2 and all(map(_is_real, p)) \
            and p[0] > 0 and p[1] >= 0
    return isinstance(v, tuple | list) and all(map(pair, v)) \
        and len({tuple(p) for p in v}) == len(v)


def _ood_groups(v) -> bool:
    return all(isinstance(k, str) and isinstance(names, tuple | list)
               and all(isinstance(n, str) for n in names) for k, names in v.items())


FIELDS: dict[str, Rule] = {
    "method": Rule(f"one of {', '.join(methods.names())}", lambda v: v in methods.BY_NAME),
    "dataset": Rule("a dataset name with class labels (see softlabel_ood.data.datasets)",
                    lambda v: _dataset_name(v) and datasets.info(v).num_classes >= 2),
    "ood_datasets": Rule("a tuple of distinct dataset names, without the ID dataset",
                         lambda v: isinstance(v, tuple) and all(map(_dataset_name, v))
                         and len(set(v)) == len(v)),
    "oe_dataset": Rule("a dataset name (read by method oe only)",
                       lambda v: v == "" or _dataset_name(v)),
    "data_dir": _str_rule("a directory (empty: the tfds default)"),
    "dataset_paths": Rule("a path per dataset name (empty: the source's default)",
                          lambda v: all(k in datasets.NAMES and isinstance(p, str)
                                        for k, p in v.items())),
    "num_train_examples": _int_at_least(0),
    "num_ood_examples": _int_at_least(1),
    "ood_groups": Rule("named groups of OOD set names, e.g. near=('cifar100',)", _ood_groups),
    "model": Rule("wrn<depth>_<width> (depth 6n + 4), resnet18, resnet34 or small_cnn",
                  _model_name),
    "dropout_rate": _real("a number in [0, 1)", lambda v: 0 <= v < 1),
    "compute_dtype": Rule(f"one of {', '.join(COMPUTE_DTYPES)}", lambda v: v in COMPUTE_DTYPES),
    "label_smoothing": _real("a number in [0, 1) (α of ls and kd_incorrect)",
                             lambda v: 0 <= v < 1),
    "kd.teacher_workdir": _str_rule("a finished run's workdir (kd and kd_incorrect only)"),
    "kd.temperature": _real("a number > 0", lambda v: v > 0),
    "kd.weight": _real("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "oe.weight": _real("a number >= 0", lambda v: v >= 0),
    "oe.batch_size": _int_at_least(1),
    "oe.finetune_from": _str_rule("a finished run's workdir (oe only; empty: from scratch)"),
    "num_epochs": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "eval_batch_size": _int_at_least(1),
    "optimizer": Rule(f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
    "learning_rate": _real("a number > 0", lambda v: v > 0),
    "momentum": _real("a number >= 0", lambda v: v >= 0),
    "nesterov": Rule("true or false", lambda v: isinstance(v, bool)),
    "weight_decay": _real("a number >= 0", lambda v: v >= 0),
    "seed": Rule(f"an integer in [0, {MAX_SEED}]", lambda v: _is_int(v) and 0 <= v <= MAX_SEED),
    "odin_pairs": Rule("distinct (temperature > 0, epsilon >= 0) pairs", _odin_pairs),
    "odin_selection": Rule("id_train (the ε with the highest mean id_train ODIN score at the "
                           "largest T) or fixed (T = 1000, ε = 0.0014, OpenOOD's default)",
                           lambda v: v in ODIN_SELECTIONS),
    "checkpoint_every_steps": _int_at_least(1),
    "log_every_steps": _int_at_least(1),
    "steps_per_call": Rule("an integer >= 0 (0 chooses by platform)",
                           lambda v: _is_int(v) and v >= 0),
    "device_data_max_mb": _real("a number >= 0 (0 feeds every batch from the host)",
                                lambda v: v >= 0),
}
# Not run settings: the family's experiment grid, checked by `reproduce`.
_OTHER_FIELDS = frozenset({"grid"})
# Fields whose value is a whole dict (a path per dataset, the sets of each group).
_DICT_FIELDS = frozenset({"dataset_paths", "ood_groups"})


def flat_fields(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """{dotted name: value}; `dataset_paths` and `ood_groups` stay one field each."""
    out = {}
    for key, value in config.items():
        name = prefix + key
        if isinstance(value, dict | ml_collections.ConfigDict) and name not in _DICT_FIELDS \
                and name not in _OTHER_FIELDS:
            out.update(flat_fields(value, f"{name}."))
        else:
            out[name] = value
    return out


def _refuse(field: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"config.{field}: {value!r} is not allowed; expected {allowed}")


def _check_dataset_names(config: ml_collections.ConfigDict) -> None:
    """Names first, so that a misspelt dataset gets its own message with the known names."""
    named = [("dataset", config.get("dataset"))]
    named += [("ood_datasets", n) for n in config.get("ood_datasets") or ()]
    if config.get("method") in methods.BY_NAME and methods.needs_outliers(config.method):
        named.append(("oe_dataset", config.get("oe_dataset")))
    for field, name in named:
        if isinstance(name, str) and name not in datasets.NAMES:
            raise ConfigError(f"config.{field}: unknown dataset {name!r}; "
                              f"known: {', '.join(datasets.NAMES)}")


def check(config: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
    """Raises ConfigError naming the first field that no run could use.

    `num_devices`: the global device count, which the batch sizes must divide.
    """
    values = flat_fields(config)
    for name in values:
        if name not in FIELDS and name not in _OTHER_FIELDS:
            raise ConfigError(f"config.{name}: not a config field (see --help for the fields)")
    _check_dataset_names(config)
    for name, rule in FIELDS.items():
        if name not in values:
            raise ConfigError(f"config.{name}: missing; every config provides it "
                              f"(DESIGN.md §8)")
        if name == "oe.finetune_from" and values[name] is None:
            raise ConfigError("config.oe.finetune_from: not set; the oe_finetune recipe starts "
                              "from a finished ce run: give its workdir")
        if not rule.ok(values[name]):
            raise _refuse(name, values[name], rule.allowed)
    _check_method(config)
    _check_odin_selection(config)
    if config.dataset in config.ood_datasets:
        raise _refuse("ood_datasets", config.ood_datasets,
                      f"OOD sets other than the ID dataset {config.dataset!r}")
    for field in ("batch_size", "eval_batch_size") + (
            ("oe.batch_size",) if methods.needs_outliers(config.method) else ()):
        value = values[field]
        if value % num_devices:
            raise _refuse(field, value, f"a multiple of the {num_devices} devices")
    if 0 < config.num_train_examples < config.batch_size:
        raise _refuse("batch_size", config.batch_size,
                      f"at most config.num_train_examples = {config.num_train_examples}")


def check_evaluation(config: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
    """The fields `predict` may change (EVALUATION_FIELDS), on a finished run's config."""
    _check_dataset_names(config)
    values = flat_fields(config)
    for name in sorted(EVALUATION_FIELDS):
        # Runs of earlier versions may lack a later field (odin_pairs): predict uses its default.
        if name in values and not FIELDS[name].ok(values[name]):
            raise _refuse(name, values[name], FIELDS[name].allowed)
    # Runs of earlier versions may lack both fields: predict then saves the default pairs.
    if "odin_selection" in values and "odin_pairs" in values:
        _check_odin_selection(config)
    if config.dataset in config.ood_datasets:
        raise _refuse("ood_datasets", config.ood_datasets,
                      f"OOD sets other than the ID dataset {config.dataset!r}")
    if config.eval_batch_size % num_devices:
        raise _refuse("eval_batch_size", config.eval_batch_size,
                      f"a multiple of the {num_devices} devices")


def _check_odin_selection(config: ml_collections.ConfigDict) -> None:
    pairs = {tuple(map(float, p)) for p in config.odin_pairs}
    if config.odin_selection == "fixed" and ODIN_FIXED_PAIR not in pairs:
        raise ConfigError(f"config.odin_selection: 'fixed' scores ODIN at (T, ε) = "
                          f"{ODIN_FIXED_PAIR}, which config.odin_pairs lacks; add it there")


def _check_method(config: ml_collections.ConfigDict) -> None:
    method = config.method
    if methods.needs_outliers(method) and not config.oe_dataset:
        raise ConfigError(f"config.oe_dataset: method {method} needs an outlier dataset")
    if methods.needs_teacher(method) and not config.kd.teacher_workdir:
        raise ConfigError(f"config.kd.teacher_workdir: method {method} needs a teacher "
                          "(a finished run's workdir)")
    if methods.reads(method, "label_smoothing") and config.label_smoothing == 0:
        raise ConfigError(f"config.label_smoothing: 0 is not allowed for method {method}, which "
                          f"it makes plain cross-entropy (method ce); expected α in (0, 1)")
    # Fields that only some methods read: a value set for a method that ignores it would be
    # recorded with the run as if it had been used.
    values = flat_fields(config)
    for field in methods.REFUSED_UNLESS_READ:
        value = methods.NEUTRAL[field]
        if not methods.reads(method, field) and values[field] != value:
            users = methods.readers(field)
            raise ConfigError(f"config.{field}: {values[field]!r} is ignored by method "
                              f"{method} (read by {', '.join(users)} only; leave it "
                              f"{value!r})")


def check_training_size(config: ml_collections.ConfigDict, num_train_examples: int) -> None:
    """The batch sizes against the loaded training set (before anything is written)."""
    if config.batch_size > num_train_examples:
        raise _refuse("batch_size", config.batch_size,
                      f"at most the {num_train_examples} training examples of "
                      f"{config.dataset}")


def changed_fields(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two config dicts."""
    names = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += changed_fields(a, b, f"{prefix}{key}.")
        elif _normalise(a) != _normalise(b):
            names.append(prefix + key)
    return names


def _normalise(value):
    # JSON turns tuples into lists; compare the two as equal.
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value
