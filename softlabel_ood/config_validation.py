"""Checks a config before anything is loaded or trained, with one-line errors naming the field."""

from __future__ import annotations

import ml_collections

from softlabel_ood import config_base, datasets, train_step


class ConfigError(ValueError):
    """A config field has a value that no run can use."""


# Fields that may differ between the run that made a checkpoint and the run that resumes it:
# they change what is evaluated or logged, not what is trained.
RESUMABLE_CHANGES = frozenset({
    "ood_datasets", "dataset_paths", "data_dir", "num_ood_examples", "eval_batch_size",
    "log_every_steps", "checkpoint_every_steps", "steps_per_call", "device_data_max_mb",
    "odin_pairs", "ood_groups",
})


def check(config: ml_collections.ConfigDict) -> None:
    if config.method not in config_base.METHODS:
        raise ConfigError(f"config.method: {config.method!r} is not one of {config_base.METHODS}")
    named = [("dataset", config.dataset)] + [("ood_datasets", n) for n in config.ood_datasets]
    if config.method == "oe":
        named.append(("oe_dataset", config.oe_dataset))
    for field, name in named:
        if name not in datasets.NAMES:
            raise ConfigError(f"config.{field}: unknown dataset {name!r}; "
                              f"known: {', '.join(datasets.NAMES)}")
    if datasets.info(config.dataset).num_classes < 2:
        raise ConfigError(f"config.dataset: {config.dataset!r} has no class labels")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"config.label_smoothing: {config.label_smoothing} is outside [0, 1)")
    if config.method == "oe" and not config.oe_dataset:
        raise ConfigError("config.oe_dataset: method oe needs an outlier dataset")
    if config.method in train_step.TEACHER_METHODS and not config.kd.teacher_workdir:
        raise ConfigError(f"config.kd.teacher_workdir: method {config.method} needs a teacher")
    if config.kd.temperature <= 0:
        raise ConfigError(f"config.kd.temperature: {config.kd.temperature} must be positive")
    if not 0.0 <= config.kd.weight <= 1.0:
        raise ConfigError(f"config.kd.weight: {config.kd.weight} is outside [0, 1]")
    positive = ("num_epochs", "batch_size", "eval_batch_size", "learning_rate",
                "checkpoint_every_steps", "log_every_steps")
    for field in positive:
        if not config[field] > 0:
            raise ConfigError(f"config.{field}: {config[field]} must be positive")
    if config.method == "oe" and config.oe.batch_size <= 0:
        raise ConfigError(f"config.oe.batch_size: {config.oe.batch_size} must be positive")
    if config.steps_per_call < 0:
        raise ConfigError(f"config.steps_per_call: {config.steps_per_call} must be >= 0 "
                          "(0 chooses by platform)")
    if config.device_data_max_mb < 0:
        raise ConfigError(f"config.device_data_max_mb: {config.device_data_max_mb} must be >= 0 "
                          "(0 feeds every batch from the host)")
    if config.weight_decay < 0:
        raise ConfigError(f"config.weight_decay: {config.weight_decay} must be >= 0")
    for pair in config.get("odin_pairs", ()):
        if not isinstance(pair, tuple | list) or len(pair) != 2 \
                or not all(isinstance(v, int | float) for v in pair) \
                or not pair[0] > 0 or not pair[1] >= 0:
            raise ConfigError(f"config.odin_pairs: entry {pair!r} is not a (temperature > 0, "
                              "epsilon >= 0) pair")
    if config.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config.compute_dtype: {config.compute_dtype!r} is not float32 "
                          "or bfloat16")


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
