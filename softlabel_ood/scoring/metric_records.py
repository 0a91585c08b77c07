"""The metrics (DESIGN.md §6), one record each: name, label, unit, which side is better, kind.

Every table, figure and file reads a metric's label and direction here, so a metric added with
`register` is labelled and marked ↑ or ↓ everywhere it is printed. Its values come from the
scoring functions of its kind (`metrics.py`, `selective.py`). No numpy, no JAX.
"""

from __future__ import annotations

import dataclasses

KINDS = ("ood", "id", "selective")  # an (ID, OOD) pair of a score; the ID test split; a score on it


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str  # its `metric` in metrics.csv
    label: str  # how tables and figures name it
    kind: str  # one of KINDS
    higher_is_better: bool
    unit: str = "%"  # how tables print it: metrics.csv holds fractions, tables percentages

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        """The label with its direction, as a table's column header."""
        return f"{self.label} {self.arrow}"


BY_NAME: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.kind not in KINDS:
        raise ValueError(f"metric {metric.name!r}: kind {metric.kind!r}, expected one of {KINDS}")
    if metric.name in BY_NAME:
        raise ValueError(f"metric {metric.name!r} is already registered")
    BY_NAME[metric.name] = metric
    return metric


def names(kind: str) -> tuple[str, ...]:
    """The metrics of `kind` in the order metrics.csv lists them."""
    return tuple(m.name for m in BY_NAME.values() if m.kind == kind)


def label(name: str) -> str:
    """A metric's label; an unknown name (another version's metrics.csv) labels itself."""
    return BY_NAME[name].label if name in BY_NAME else name


def header(name: str) -> str:
    return BY_NAME[name].header if name in BY_NAME else name


def lower_is_better(kind: str) -> tuple[str, ...]:
    return tuple(m.name for m in BY_NAME.values() if m.kind == kind and not m.higher_is_better)


for _metric in (
    Metric("auroc", "AUROC", "ood", True),
    Metric("aupr_in", "AUPR-in", "ood", True),
    Metric("aupr_out", "AUPR-out", "ood", True),
    Metric("fpr95", "FPR95", "ood", False),
    Metric("tnr95", "TNR95", "ood", True),
    Metric("fpr95_ood_positive", "FPR95 (OOD positive)", "ood", False),
    Metric("detection_acc", "detection accuracy", "ood", True),
    Metric("fpr95_oe", "FPR95 (OE code)", "ood", False),
    Metric("accuracy", "accuracy", "id", True),
    Metric("ece", "ECE", "id", False),
    Metric("aurc", "AURC", "selective", False),
    Metric("eaurc", "E-AURC", "selective", False),
    Metric("error_auroc", "error AUROC", "selective", True),
    Metric("error_fpr95", "error FPR95", "selective", False),
):
    register(_metric)
