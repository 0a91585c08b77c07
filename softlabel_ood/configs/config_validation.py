"""Checks a config before anything is loaded or written, with one-line errors naming the field.

`fields()` is the one definition of what each config field allows (DESIGN.md §8): `check`
applies it, and `--help` prints it. The methods' hyperparameters, and what a value means for one
method (a teacher for kd, no α for ce), come from their records in `softlabel_ood.methods`; the
score parameters that a run stores (pnorm_p, odin_selection) from theirs in
`softlabel_ood.scoring.score_records`.
Checks that need the loaded data (the batch size and the number of steps against the size of the
training set) are in `check_training_size`.

Every size has an upper bound, so that a mistyped value (1e9 for 1e3) is refused here rather
than hours later by an int32 overflow or an allocation of terabytes: step numbers, step counts
and example indices are int32 (`MAX_INT32`), and a size that makes an array of input images
(an eval batch, an OOD set, an outlier batch, one call's batches) is held to `MAX_IMAGE_BYTES`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from softlabel_ood import methods, model_names
from softlabel_ood.cli_errors import UserError
from softlabel_ood.data import datasets
from softlabel_ood.scoring import score_records

COMPUTE_DTYPES = ("float32", "bfloat16")
# Optimizers of `softlabel_ood.training.optimizer` (its OPTIMIZERS, which imports optax; a test
# keeps the two equal so that the config side can check a name without loading JAX).
OPTIMIZERS = ("sgd", "adam", "adamw")
# Step numbers, step counts and example indices are int32 on the device (the step's key is
# fold_in(key(seed), step); the loop passes each call's first step and length as int32).
MAX_INT32 = 2**31 - 1
# The step's seed is an int32 argument of the compiled step.
MAX_SEED = MAX_INT32
# The most bytes that one array of input images made by a size field may take as uint8 pixels:
# far above any of the paper's protocol (a CIFAR OOD set of 2,000 32x32x3 images is 6 MB; all
# 36,500 Places365 validation images would be 112 MB), and within a host's memory even as the
# device's float32 copy (4 GiB), so that only a mistyped size reaches it.
MAX_IMAGE_BYTES = 2**30
# The fixed pair of `softlabel_ood.scoring.odin_selection` (FIXED_PAIR; a test keeps them
# equal, so that the config side needs no JAX).
ODIN_FIXED_PAIR = (1000.0, 0.0014)


class ConfigError(UserError):
    """A config field has a value that no run can use."""


# Fields that `predict` may change on a finished run: what is evaluated, never what was trained.
# The score parameters that are config fields (`score_records`) are among them.
EVALUATION_FIELDS = frozenset({
    "ood_datasets", "dataset_paths", "data_dir", "num_ood_examples", "eval_batch_size",
    "odin_pairs", "ood_groups", *score_records.config_parameters(),
})
# Fields that may differ between the run that made a checkpoint and the run that resumes it:
# they change what is evaluated or logged, or the speed, not what is trained.
RESUMABLE_CHANGES = EVALUATION_FIELDS | {
    "log_every_steps", "checkpoint_every_steps", "checkpoint_min_seconds", "steps_per_call",
    "device_data_max_mb",
}


@dataclasses.dataclass(frozen=True)
class Rule:
    allowed: str  # what the error and --help say is allowed
    ok: Callable[[Any], bool]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(low: int, high: int = MAX_INT32) -> Rule:
    return Rule(f"an integer in [{low}, {high}]", lambda v: _is_int(v) and low <= v <= high)


def _real(allowed: str, ok: Callable[[float], bool]) -> Rule:
    return Rule(allowed, lambda v: _is_real(v) and ok(v))


def _dataset_name(v) -> bool:
    return v in datasets.NAMES


def _model_name(v) -> bool:
    try:
        model_names.parse(v)
    except ValueError:
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
    # What each group names is checked in `_check_groups`, with a message per group.
    return all(isinstance(k, str) and k and isinstance(names, tuple | list)
               and all(isinstance(n, str) for n in names) for k, names in v.items())


# The fields before the methods' hyperparameters in `fields()` (and so in --help) ...
_RUN_FIELDS: dict[str, Rule] = {
    "method": Rule(f"one of {', '.join(methods.names())}", lambda v: v in methods.BY_NAME),
    "dataset": Rule("a dataset name with class labels (see softlabel_ood.data.datasets)",
                    lambda v: _dataset_name(v) and datasets.info(v).num_classes >= 2),
    "ood_datasets": Rule("a tuple of distinct dataset names, none holding the ID dataset's images",
                         lambda v: isinstance(v, tuple) and all(map(_dataset_name, v))
                         and len(set(v)) == len(v)),
    "oe_dataset": Rule("a dataset name apart from the ID and OOD sets (read by method oe only)",
                       lambda v: v == "" or _dataset_name(v)),
    "data_dir": _str_rule("a directory (empty: the tfds default)"),
    "dataset_paths": Rule("a path per dataset name (empty: the source's default)",
                          lambda v: all(k in datasets.NAMES and isinstance(p, str)
                                        for k, p in v.items())),
    # A cap on the training set: its examples are indexed by int32.
    "num_train_examples": _int_in(0),
    # An OOD set holds this many images (a generated one exactly): int32 rows, MAX_IMAGE_BYTES.
    "num_ood_examples": _int_in(1),
    "ood_groups": Rule("named groups of distinct OOD set names from ood_datasets, e.g. "
                       "near=('cifar100',); () removes a group", _ood_groups),
    "model": Rule(model_names.ALLOWED, _model_name),
    "dropout_rate": _real("a number in [0, 1)", lambda v: 0 <= v < 1),
    "compute_dtype": Rule(f"one of {', '.join(COMPUTE_DTYPES)}", lambda v: v in COMPUTE_DTYPES),
}
# ... and after them.
_TRAINING_FIELDS: dict[str, Rule] = {
    "kd.teacher_workdir": _str_rule("a finished run's workdir (kd and kd_incorrect only)"),
    # The outliers of one step: int32 indices, MAX_IMAGE_BYTES, at most the outlier set (loaded).
    "oe.batch_size": _int_in(1),
    "oe.finetune_from": _str_rule("a finished run's workdir (oe only; empty: from scratch)"),
    # Every epoch has a step, and the last step number (epochs x steps per epoch) is an int32.
    "num_epochs": _int_in(1),
    # int32 indices; at most the training set (num_train_examples, or once it is loaded).
    "batch_size": _int_in(1),
    # Every evaluated batch is padded to this size: MAX_IMAGE_BYTES.
    "eval_batch_size": _int_in(1),
    "optimizer": Rule(f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
    "learning_rate": _real("a number > 0", lambda v: v > 0),
    "momentum": _real("a number >= 0", lambda v: v >= 0),
    "nesterov": Rule("true or false", lambda v: isinstance(v, bool)),
    "weight_decay": _real("a number >= 0", lambda v: v >= 0),
    "seed": Rule(f"an integer in [0, {MAX_SEED}]", lambda v: _is_int(v) and 0 <= v <= MAX_SEED),
    "odin_pairs": Rule("distinct (temperature > 0, epsilon >= 0) pairs", _odin_pairs),
}
# ... then the score parameters that are config fields, and these.
_BOOKKEEPING_FIELDS: dict[str, Rule] = {
    # Periods in steps, compared with int32 step numbers.
    "checkpoint_every_steps": _int_in(1),
    # Seconds of wall time; a day at most, so that a mistyped value cannot switch saving off.
    "checkpoint_min_seconds": _real("a number of seconds in [0, 86400] (0: at every multiple of "
                                    "checkpoint_every_steps)", lambda v: 0 <= v <= 86400),
    "log_every_steps": _int_in(1),
    # An int32 step count; a call fed from the host holds its steps' batches: MAX_IMAGE_BYTES.
    "steps_per_call": Rule(f"an integer in [0, {MAX_INT32}] (0 chooses by platform)",
                           lambda v: _is_int(v) and 0 <= v <= MAX_INT32),
    # A threshold compared with the training arrays' size, which it never makes larger.
    "device_data_max_mb": _real("a number >= 0 (0 feeds every batch from the host)",
                                lambda v: v >= 0),
}


def _hyperparameter_rule(h: methods.Hyperparameter) -> Rule:
    if not h.strict:
        return _real(f"{h.allowed} ({h.meaning})", h.ok)
    return _real(f"{h.allowed} ({h.meaning}), or {h.neutral:g} for a method that does not "
                 f"read it", lambda v: v == h.neutral or h.ok(v))


def fields() -> dict[str, Rule]:
    """Every config field's rule, the registered methods' hyperparameters included."""
    hyperparameters = {field: _hyperparameter_rule(h)
                       for field, h in methods.hyperparameters().items()}
    score_parameters = {name: Rule(p.allowed, p.ok)
                        for name, p in score_records.config_parameters().items()}
    return {**_RUN_FIELDS, **hyperparameters, **_TRAINING_FIELDS, **score_parameters,
            **_BOOKKEEPING_FIELDS}


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
    rules = fields()
    for name in values:
        if name not in rules and name not in _OTHER_FIELDS:
            raise ConfigError(f"config.{name}: not a config field (see --help for the fields)")
    _check_dataset_names(config)
    for name, rule in rules.items():
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
    _check_ood_apart(config)
    _check_groups(config, evaluated=True)
    outliers = methods.needs_outliers(config.method)
    for field in ("batch_size", "eval_batch_size") + (("oe.batch_size",) if outliers else ()):
        value = values[field]
        if value % num_devices:
            raise _refuse(field, value, f"a multiple of the {num_devices} devices")
    if 0 < config.num_train_examples < config.batch_size:
        raise _refuse("batch_size", config.batch_size,
                      f"at most config.num_train_examples = {config.num_train_examples}")
    _check_image_bytes(config, ("eval_batch_size", "num_ood_examples")
                       + (("oe.batch_size",) if outliers else ()) + ("steps_per_call",))
    if config.num_train_examples:  # the training set has at most this many examples
        _check_last_step(config, config.num_train_examples,
                         f"config.num_train_examples = {config.num_train_examples}")


def check_stored(config: ml_collections.ConfigDict, where: str) -> None:
    """The fields of a run's stored config that predict reads but may not change, each as
    `fields()` allows (a config.json edited by hand); a field an earlier version lacked is not."""
    values = flat_fields(config)
    for name, rule in fields().items():
        if name in values and name.split(".")[0] not in EVALUATION_FIELDS \
                and not rule.ok(values[name]):
            raise ConfigError(f"{where}: field '{name}' is {values[name]!r}, expected "
                              f"{rule.allowed}")


def check_evaluation(config: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
    """The fields `predict` may change (EVALUATION_FIELDS), on a finished run's config."""
    _check_dataset_names(config)
    values = flat_fields(config)
    for name in sorted(EVALUATION_FIELDS):
        # Runs of earlier versions may lack a later field (odin_pairs): predict uses its default.
        rule = fields()[name]
        if name in values and not rule.ok(values[name]):
            raise _refuse(name, values[name], rule.allowed)
    # Runs of earlier versions may lack both fields: predict then saves the default pairs.
    if "odin_selection" in values and "odin_pairs" in values:
        _check_odin_selection(config)
    _check_ood_apart(config)
    # predict writes no group mean: only what the groups name is checked here.
    _check_groups(config, evaluated=False)
    if config.eval_batch_size % num_devices:
        raise _refuse("eval_batch_size", config.eval_batch_size,
                      f"a multiple of the {num_devices} devices")
    _check_image_bytes(config, ("eval_batch_size", "num_ood_examples"))


def _check_ood_apart(config: ml_collections.ConfigDict) -> None:
    """No OOD set may hold the ID dataset's images (they would be scored as OOD), and OE's
    auxiliary set neither (Outlier Exposure keeps it apart from the ID and test OOD sets)."""
    for name in config.ood_datasets:
        if datasets.share_examples(config.dataset, name):
            raise _refuse("ood_datasets", config.ood_datasets,
                          f"OOD sets other than the ID dataset {config.dataset!r} and sets "
                          f"of its images ({name!r} shares them)")
    if config.get("method") in methods.BY_NAME and methods.needs_outliers(config.method):
        for name in (config.dataset, *config.ood_datasets):
            if datasets.share_examples(config.oe_dataset, name):
                raise _refuse("oe_dataset", config.oe_dataset,
                              f"an auxiliary set apart from the ID and OOD sets ({name!r} "
                              "shares its images)")


def check_groups_evaluated(config: ml_collections.ConfigDict, groups: Iterable[str]) -> None:
    """The groups named in `groups` hold only sets of config.ood_datasets: those a predict
    override sets (a run's stored groups may name sets that a --replace_ood leaves out)."""
    _check_groups(config, evaluated=True, only=frozenset(groups))


def _check_groups(config: ml_collections.ConfigDict, *, evaluated: bool,
                  only: frozenset[str] | None = None) -> None:
    """Each group names distinct OOD sets (an empty group is no group); with `evaluated`, sets
    of config.ood_datasets, so that a group's mean is always over every set it names."""
    for group, names in (config.get("ood_groups") or {}).items():
        if only is not None and group not in only:
            continue
        field = f"config.ood_groups.{group}"
        for name in names:
            if name not in datasets.NAMES:
                raise ConfigError(f"{field}: unknown dataset {name!r}; known: "
                                  f"{', '.join(datasets.NAMES)}")
            if name == config.dataset:
                raise ConfigError(f"{field}: names the ID dataset {name!r}; a group holds OOD "
                                  "sets")
            if evaluated and name not in config.ood_datasets:
                raise ConfigError(
                    f"{field}: names {name!r}, which config.ood_datasets "
                    f"{tuple(config.ood_datasets)} does not hold; add it there, or give the "
                    f"group the sets it averages ({field}=() removes it)")
        if len(set(names)) != len(names):
            twice = next(n for n in names if list(names).count(n) > 1)
            raise ConfigError(f"{field}: names {twice!r} twice")


def _check_image_bytes(config: ml_collections.ConfigDict, fields: tuple[str, ...]) -> None:
    """The sizes in `fields` against MAX_IMAGE_BYTES: each makes an array of uint8 images at the
    ID images' shape, to which every evaluated and outlier set is converted."""
    shape = datasets.info(config.dataset).image_shape
    image_bytes = math.prod(shape)
    per_step = config.batch_size + (config.oe.batch_size
                                    if methods.needs_outliers(config.method) else 0)
    # field -> (images per unit of the field, what the array is)
    arrays = {"eval_batch_size": (1, "an eval batch"),
              "num_ood_examples": (1, "an OOD set"),
              "oe.batch_size": (1, "an outlier batch"),
              "steps_per_call": (per_step, f"a call's batches ({per_step} images a step, when "
                                           f"fed from the host)")}
    values = flat_fields(config)
    for field in fields:
        per_unit, what = arrays[field]
        most = MAX_IMAGE_BYTES // (image_bytes * per_unit)
        if values[field] > most:
            raise _refuse(field, values[field],
                          f"at most {most}, so that {what} of {'x'.join(map(str, shape))} "
                          f"images takes at most {MAX_IMAGE_BYTES / 2**30:g} GiB "
                          f"(config_validation.MAX_IMAGE_BYTES)")


def _check_last_step(config: ml_collections.ConfigDict, num_train_examples: int,
                     source: str) -> None:
    """The last step number, num_epochs x full batches per epoch, must be an int32."""
    steps_per_epoch = num_train_examples // config.batch_size
    if config.num_epochs * steps_per_epoch > MAX_INT32:
        raise _refuse("num_epochs", config.num_epochs,
                      f"at most {MAX_INT32 // steps_per_epoch}: {steps_per_epoch} steps an "
                      f"epoch ({source}), and the last step number is an int32")


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
    values = flat_fields(config)
    for field, h in methods.hyperparameters().items():
        value = values[field]
        if methods.reads(method, field) and not h.ok(value):
            why = (f": at its neutral value {h.at_neutral}"
                   if value == h.neutral and h.at_neutral else "")  # ls at α = 0 is ce
            raise ConfigError(f"config.{field}: {value!r} is not allowed for method {method}"
                              f"{why}; expected {h.allowed}")
    # Fields that only some methods read: a value set for a method that ignores it would be
    # recorded with the run as if it had been used.
    strict = {field: h.neutral for field, h in methods.hyperparameters().items() if h.strict}
    for field, value in {**strict, **methods.REFUSED_UNLESS_READ}.items():
        if not methods.reads(method, field) and values[field] != value:
            users = methods.readers(field)
            raise ConfigError(f"config.{field}: {values[field]!r} is ignored by method "
                              f"{method} (read by {', '.join(users)} only; leave it "
                              f"{value!r})")


def check_training_size(config: ml_collections.ConfigDict, num_train_examples: int) -> None:
    """The batch size and the number of steps against the loaded training set (before anything
    is written)."""
    if config.batch_size > num_train_examples:
        raise _refuse("batch_size", config.batch_size,
                      f"at most the {num_train_examples} training examples of "
                      f"{config.dataset}")
    _check_last_step(config, num_train_examples,
                     f"{num_train_examples} training examples of {config.dataset}")


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
