"""The predictions manifest's `run` block (DESIGN.md §5): what was trained, from the run's config.

Its method fields derive from the method records (`softlabel_ood.methods`): one key per
registered hyperparameter (`alpha` for label_smoothing, `kd_temperature`, ...) and the teacher's
and outliers' fields. A field the method does not read is recorded empty ("", null, or a strict
hyperparameter's neutral value), so a summary never shows a teacher or a weight that did not
shape the model. Numpy-free and JAX-free: the scoring side reads it on a laptop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from softlabel_ood import methods

# Keys of the block that are config fields read only by methods with a teacher or outliers:
# key -> (config field, value for a method that does not read it).
_READ_FIELDS = {"teacher": ("kd.teacher_workdir", ""), "oe_dataset": ("oe_dataset", ""),
                "finetune_from": ("oe.finetune_from", "")}
# The key of outputs imported from a model trained elsewhere (`import_outputs`): {"splits":
# {split: {"file", "sha256"}}, "head": {"file", "sha256"}} (head only when one was given).
IMPORTED = "imported"


def is_imported(run: Mapping) -> bool:
    """The predictions are another program's outputs, imported whole: of the model it gave."""
    return IMPORTED in run


def _source_problem(where: str, source) -> str | None:
    if not isinstance(source, Mapping) or set(source) != {"file", "sha256"} \
            or not isinstance(source["file"], str) or not isinstance(source["sha256"], str) \
            or len(source["sha256"]) != 64 \
            or any(c not in "0123456789abcdef" for c in source["sha256"]):
        return (f"field 'run.{IMPORTED}.{where}' is {source!r}, expected "
                '{"file": <name>, "sha256": <64 hex digits>}')
    return None


def _imported_problem(record) -> str | None:
    if not isinstance(record, Mapping) or not isinstance(record.get("splits"), Mapping) \
            or not record["splits"] or set(record) - {"splits", "head"}:
        return (f"field 'run.{IMPORTED}' is {record!r}, expected {{\"splits\": {{split: "
                '{"file", "sha256"}}, "head": {"file", "sha256"}}')
    sources = {f"splits.{name}": source for name, source in record["splits"].items()}
    if "head" in record:
        sources["head"] = record["head"]
    return next(filter(None, (_source_problem(w, s) for w, s in sources.items())), None)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    dataset: str = ""
    model: str = ""
    method: str = ""
    teacher: str = ""  # kd.teacher_workdir (kd, kd_incorrect)
    oe_dataset: str = ""  # oe
    finetune_from: str = ""  # oe.finetune_from (oe fine-tuning)
    num_epochs: int = 0
    seed: int = 0
    # Manifest key -> value of every registered hyperparameter (`Hyperparameter.key`); a key
    # that an older manifest lacks reads as the hyperparameter's unread value.
    hyperparameters: Mapping[str, float | None] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_config(cls, config) -> RunSummary:
        """From a resolved run config (an ml_collections.ConfigDict, or `AttributeView`)."""
        method = config.method
        read = {key: _field(config, field) if methods.reads(method, field) else empty
                for key, (field, empty) in _READ_FIELDS.items()}
        values = {h.key: float(_field(config, field)) if methods.reads(method, field)
                  else h.unread_value() for field, h in methods.hyperparameters().items()}
        return cls(dataset=config.dataset, model=config.model, method=method,
                   teacher=read["teacher"], oe_dataset=read["oe_dataset"],
                   finetune_from=read["finetune_from"] or "", num_epochs=int(config.num_epochs),
                   seed=int(config.seed), hyperparameters=values)

    @classmethod
    def from_json(cls, data: Mapping) -> RunSummary:
        """From a manifest's `run` (older manifests lack some keys: they read as empty)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"hyperparameters"}
        values = {h.key: data.get(h.key, h.unread_value())
                  for h in methods.hyperparameters().values()}
        return cls(**{k: v for k, v in data.items() if k in known}, hyperparameters=values)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        del out["hyperparameters"]
        return {**out, **self.hyperparameters}

    def value(self, field: str) -> float | None:
        """The recorded value of the hyperparameter whose config field is `field`."""
        h = methods.hyperparameters()[field]
        return self.hyperparameters.get(h.key, h.unread_value())

    @property
    def alpha(self) -> float:
        return self.value("label_smoothing")

    @property
    def strength(self) -> float:
        """The value of the method's strength (`methods.Method.strength`: α of ls), 0 without."""
        h = methods.strength(self.method)
        return 0.0 if h is None else float(self.value(h.field))


def _field(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class AttributeView:
    """A config's JSON data read by attribute, as `RunSummary.from_config` reads a ConfigDict."""

    def __init__(self, data: Mapping):
        self._data = data

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._data[name]
        return AttributeView(value) if isinstance(value, Mapping) else value


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _string(v) -> bool:
    return isinstance(v, str)


def _rules() -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """Each key's allowed values, in words and as a test."""
    rules = {
        "dataset": ("a string", _string), "model": ("a string", _string),
        "method": (f"one of {', '.join(methods.BY_NAME)} (or empty)",
                   lambda v: isinstance(v, str) and (v == "" or v in methods.BY_NAME)),
        "teacher": ("a string", _string), "oe_dataset": ("a string", _string),
        "finetune_from": ("a string", _string),
        "num_epochs": ("an integer >= 0", _count), "seed": ("an integer >= 0", _count),
    }
    for h in methods.hyperparameters().values():
        empty = h.unread_value()
        rules[h.key] = (f"{h.allowed} or {'null' if empty is None else f'{empty:g}'}",
                        lambda v, h=h, empty=empty: (v is None and empty is None)
                        or (_number(v) and (v == empty or h.ok(v))))
    return rules


def problem(run: Mapping) -> str | None:
    """What is wrong with a manifest's `run` block, in words, or None: each value of its type
    and range, the method one of softlabel_ood.methods, and the fields that the method does not
    read empty, as `RunSummary.from_config` records them."""
    for key, (expected, ok) in _rules().items():
        if key in run and not ok(run[key]):
            return f"field 'run.{key}' is {run[key]!r}, expected {expected}"
    if is_imported(run) and (found := _imported_problem(run[IMPORTED])) is not None:
        return found
    method = run.get("method", "")
    if not method:
        return None
    unread = {key: (field, empty) for key, (field, empty) in _READ_FIELDS.items()}
    unread.update({h.key: (field, h.unread_value())
                   for field, h in methods.hyperparameters().items()})
    for key, (field, empty) in unread.items():
        if key in run and not methods.reads(method, field) and run[key] != empty:
            return f"field 'run.{key}' is {run[key]!r}, expected {empty!r}: method {method} " \
                   f"does not read {field}"
    return None
