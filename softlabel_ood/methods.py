"""The training methods (DESIGN.md §7, §8) and what each one reads, with no JAX in sight.

This is the one place that says what a method is: its loss, whether it reads a teacher or an
outlier set, and which config fields change what it learns. The config validator, the grid,
the train step's hyperparameters, the predictions manifest and the report all ask here. A new
method is one record in `BY_NAME` and one loss in `training/method_losses.py`.

Config files, the config validator and the grid import this module; keeping it free of JAX lets
a config load without flax or optax.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    summary: str
    # The name of its batch loss in `training.method_losses.LOSSES`. Methods with the same loss
    # (and the same teacher and outlier needs) run one compiled program: ce is the soft-target
    # cross-entropy with α = 0, so ce trains with the ls sweep.
    loss: str
    needs_teacher: bool = False  # reads a finished run's model (kd.teacher_workdir)
    needs_outliers: bool = False  # reads an auxiliary outlier set (oe_dataset) while training
    # Config fields (dotted) whose value changes this method's loss. Every other soft-label field
    # takes its neutral value (`NEUTRAL`) in the train step, and config_validation refuses a run
    # that sets it to anything else, since it would be recorded as if it had been used.
    reads: tuple[str, ...] = ()


BY_NAME: dict[str, Method] = {m.name: m for m in (
    Method("ce", "cross-entropy with one-hot labels", loss="cross_entropy"),
    Method("ls", "label smoothing: (1 - α)·onehot + α/K", loss="cross_entropy",
           reads=("label_smoothing",)),
    Method("oe", "outlier exposure: cross-entropy + oe.weight · CE(outlier logits, uniform)",
           loss="outlier_exposure", needs_outliers=True,
           reads=("oe_dataset", "oe.weight", "oe.batch_size", "oe.finetune_from")),
    Method("kd", "knowledge distillation from a teacher at temperature kd.temperature",
           loss="distillation", needs_teacher=True,
           reads=("kd.teacher_workdir", "kd.temperature", "kd.weight")),
    Method("kd_incorrect", "(1 - α)·onehot + α·(teacher's incorrect-class distribution)",
           loss="teacher_incorrect", needs_teacher=True,
           reads=("kd.teacher_workdir", "kd.temperature", "label_smoothing")),
)}

# The value a soft-label field takes for a method that does not read it: what the train step
# uses, and the only value the config validator accepts then (for the fields listed in
# `REFUSED_UNLESS_READ`; the others, such as kd.temperature, have family defaults that a run
# leaves alone).
NEUTRAL = {"label_smoothing": 0.0, "kd.temperature": 1.0, "kd.weight": 0.0, "oe.weight": 0.0,
           "kd.teacher_workdir": "", "oe.finetune_from": ""}
REFUSED_UNLESS_READ = ("label_smoothing", "kd.teacher_workdir", "oe.finetune_from")


def names() -> tuple[str, ...]:
    return tuple(BY_NAME)


def get(name: str) -> Method:
    if name not in BY_NAME:
        raise KeyError(f"unknown method {name!r}; expected one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


def needs_teacher(method: str) -> bool:
    return get(method).needs_teacher


def needs_outliers(method: str) -> bool:
    return get(method).needs_outliers


def reads(method: str, field: str) -> bool:
    return field in get(method).reads


def readers(field: str) -> tuple[str, ...]:
    """The methods that read `field`."""
    return tuple(m.name for m in BY_NAME.values() if field in m.reads)


def value_read(method: str, field: str, value):
    """`value` if `method` reads `field`, else the field's neutral value."""
    return value if reads(method, field) else NEUTRAL[field]
