"""The training methods (DESIGN.md §7, §8) and what each one reads, with no JAX in sight.

Config files, the config validator and the experiment grid import this module; the train step
implements the losses. Keeping the names here lets a config load without flax or optax.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    summary: str
    needs_teacher: bool = False  # reads a finished run's model (kd.teacher_workdir)
    needs_outliers: bool = False  # reads an auxiliary outlier set (oe_dataset) while training
    # Config fields (dotted) whose value changes this method's loss; the other soft-label fields
    # are ignored, so a run may set them only to their neutral value (see config_validation).
    reads: tuple[str, ...] = ()


_ALL = (
    Method("ce", "cross-entropy with one-hot labels"),
    Method("ls", "label smoothing: (1 - α)·onehot + α/K", reads=("label_smoothing",)),
    Method("oe", "outlier exposure: cross-entropy + oe.weight · CE(outlier logits, uniform)",
           needs_outliers=True,
           reads=("oe_dataset", "oe.weight", "oe.batch_size", "oe.finetune_from")),
    Method("kd", "knowledge distillation from a teacher at temperature kd.temperature",
           needs_teacher=True, reads=("kd.teacher_workdir", "kd.temperature", "kd.weight")),
    Method("kd_incorrect", "(1 - α)·onehot + α·(teacher's incorrect-class distribution)",
           needs_teacher=True,
           reads=("kd.teacher_workdir", "kd.temperature", "label_smoothing")),
)

BY_NAME: dict[str, Method] = {m.name: m for m in _ALL}
METHODS: tuple[str, ...] = tuple(BY_NAME)
TEACHER_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if m.needs_teacher)
OUTLIER_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if m.needs_outliers)


def needs_teacher(method: str) -> bool:
    return BY_NAME[method].needs_teacher


def needs_outliers(method: str) -> bool:
    return BY_NAME[method].needs_outliers


def reads(method: str, field: str) -> bool:
    return field in BY_NAME[method].reads
