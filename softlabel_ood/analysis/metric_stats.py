"""A grid's metrics as numbers: one metric per run, then mean ± std over seeds.

The report, its claims, the figures and the notebook all read metrics through this module, so
that "mean over OOD sets" and "mean ± std over seeds" are computed in one place and the same way
everywhere:

1. for one run (one seed), a metric averaged over OOD sets is the unweighted mean of its values on
   the OOD sets that every run of the grid was scored on (`MetricTable.ood_sets`);
2. a cell of a table is the mean and the sample standard deviation (ddof = 1) of those per-run
   values over the seeds of one grid entry.

Which run is which (grid entries, seeds, teachers) and how results are loaded is `results.py`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from softlabel_ood import scoring

if TYPE_CHECKING:
    from softlabel_ood.analysis.results import RunInfo



@dataclasses.dataclass(frozen=True)
class Stat:
    """Per-seed values of one quantity; `std` is the sample std (ddof = 1), NaN below 2 seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan


class MetricTable:
    """Metric rows (`run, score, ood, metric, value`) indexed for lookup."""

    def __init__(self, rows: Iterable[scoring.MetricRow]):
        self._values: dict[tuple[str, str, str, str], float] = {}
        oods_by_run: dict[str, list[str]] = {}
        self.scores: list[str] = []
        for row in rows:
            self._values[(row.run, row.score, row.ood, row.metric)] = float(row.value)
            if row.ood:
                oods = oods_by_run.setdefault(row.run, [])
                if row.ood not in oods:
                    oods.append(row.ood)
            if row.score and row.score not in self.scores:
                self.scores.append(row.score)
        known = list(scoring.ALL_SCORES)
        self.scores.sort(key=lambda s: (known.index(s) if s in known else len(known), s))
        self.runs = list(dict.fromkeys(run for run, *_ in self._values))
        # Means over OOD sets compare runs only when they average over the same sets.
        all_oods = [set(v) for v in oods_by_run.values()]
        first = next(iter(oods_by_run.values()), [])
        common = set.intersection(*all_oods) if all_oods else set()
        self.ood_sets: list[str] = [o for o in first if o in common]
        self.all_ood_sets: list[str] = list(dict.fromkeys(
            o for oods in oods_by_run.values() for o in oods))

    def value(self, run: str, metric: str, score: str = "", ood: str = "") -> float | None:
        return self._values.get((run, score, ood, metric))

    def ood_mean(self, run: str, score: str, metric: str) -> float | None:
        """Unweighted mean of a metric over `ood_sets` for one run; None if any is missing."""
        values = [self.value(run, metric, score, ood) for ood in self.ood_sets]
        if not values or any(v is None for v in values):
            return None
        return float(np.mean(values))


def ood_group_mean(table: MetricTable, run: str, score: str, metric: str,
                   members: Sequence[str]) -> float | None:
    """Unweighted mean of a metric over a group's OOD sets among `table.ood_sets` for one run;
    None when the group has none of them or a value is missing."""
    values = [table.value(run, metric, score, ood) for ood in table.ood_sets if ood in members]
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def stat(runs: Sequence[RunInfo], value: Callable[[str], float | None]) -> Stat:
    """`value(run)` over the seeds of one grid entry, skipping runs without that metric."""
    values = (value(r.run) for r in runs)
    return Stat(tuple(v for v in values if v is not None))


def by_seed(runs: Sequence[RunInfo], value: Callable[[str], float | None]) -> dict[int, float]:
    """{seed: value(run)} over the seeds of one grid entry, skipping runs without that metric.

    Runs of different grid entries with the same seed share initialisation, data order and
    augmentation, so claims compare entries seed by seed."""
    values = {r.seed: value(r.run) for r in runs}
    return {seed: v for seed, v in values.items() if v is not None}


def id_stat(table: MetricTable, runs: Sequence[RunInfo], metric: str) -> Stat:
    return stat(runs, lambda run: table.value(run, metric))


def ood_mean_stat(table: MetricTable, runs: Sequence[RunInfo], score: str, metric: str) -> Stat:
    return stat(runs, lambda run: table.ood_mean(run, score, metric))


def ood_group_mean_stat(table: MetricTable, runs: Sequence[RunInfo], score: str, metric: str,
                        members: Sequence[str]) -> Stat:
    return stat(runs, lambda run: ood_group_mean(table, run, score, metric, members))


def ood_stat(table: MetricTable, runs: Sequence[RunInfo], score: str, metric: str,
             ood: str) -> Stat:
    return stat(runs, lambda run: table.value(run, metric, score, ood))


def format_stat(s: Stat, *, scale: float = 100.0, digits: int = 2) -> str:
    """"mean ± std" in percent; the mean alone for one seed; "–" without values."""
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"
