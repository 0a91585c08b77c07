"""Trains a grid's populations in order: each one once the runs it reads are done, up to
`config.grid.workers` at a time (`workers.Pool`), skipping finished runs and failing the readers
of failed ones. Every process of a multi-process run takes the same decisions, since the DONE
markers they read live in the shared workdir."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import ml_collections
import tqdm
from etils import epath

from softlabel_ood import progress
from softlabel_ood.configs.grid import RunInfo
from softlabel_ood.experiment import populations, workers
from softlabel_ood.training import distributed
from softlabel_ood.workdir import run_dir, saved_runs


class Schedule:
    """Which population may start next, and what became of every run."""

    def __init__(self, planned: Sequence[tuple[RunInfo, ml_collections.ConfigDict]],
                 cut: Sequence[Sequence[int]]):
        self.infos = [info for info, _ in planned]
        self.configs = [config for _, config in planned]
        self.cut = [list(population) for population in cut]
        self.pending = list(range(len(cut)))  # populations not started, by index into cut
        self.unresolved = {info.directory for info in self.infos}  # not yet skipped/trained/failed
        self.failed: dict[str, str] = {}  # run directory -> why it failed
        self.resolved = 0  # runs skipped, trained or failed so far: the k of the "[k/n]" lines
        self.writer = distributed.is_writer()
        self.bar = progress.bar(total=len(planned), desc="grid", unit="run",
                                disable=not self.writer)

    def _resolve(self, i: int, what: str) -> None:
        """Prints run i's line, numbered in the order runs end (workers finish out of order)."""
        self.unresolved.discard(self.infos[i].directory)
        self.resolved += 1
        self.bar.update(1)
        if self.writer:
            info = self.infos[i]
            tqdm.tqdm.write(f"[{self.resolved}/{len(self.infos)}] {info.run} ({info.method}): "
                            f"{what}", file=sys.stderr)

    def _ready(self, population: int) -> bool:
        return not any(p in self.unresolved for i in self.cut[population]
                       for p in populations.inputs(self.configs[i]))

    def next_population(self) -> tuple[int, list[int]] | None:
        """The next population whose inputs are done and the runs of it left to train (the
        others are skipped or failed here, and say so), or None while none is ready."""
        while (population := next((p for p in self.pending if self._ready(p)), None)) is not None:
            self.pending.remove(population)
            todo = []
            for i in self.cut[population]:
                directory = self.infos[i].directory
                if saved_runs.is_finished(directory):
                    self._resolve(i, "skipped, already finished")
                elif broken := [p for p in populations.inputs(self.configs[i]) if p in self.failed]:
                    self.failed[directory] = f"not trained: {epath.Path(broken[0]).name} failed"
                    self._resolve(i, self.failed[directory])
                else:
                    todo.append(i)
            if todo:
                return population, todo
        return None

    def finished(self, todo: Sequence[int], outcomes: Sequence[str | None], seconds: float,
                 resumed: dict[int, bool]) -> None:
        together = f" (together with {len(todo) - 1} more)" if len(todo) > 1 else ""
        for i, failure in zip(todo, outcomes, strict=True):
            if failure is not None:
                self.failed[self.infos[i].directory] = f"failed: {failure}"
                self._resolve(i, self.failed[self.infos[i].directory])
            else:
                self._resolve(i, f"{'resumed and trained' if resumed[i] else 'trained'} in "
                                 f"{seconds:.0f} s{together}")


def train(planned: Sequence[tuple[RunInfo, ml_collections.ConfigDict]],
          cut: Sequence[Sequence[int]], grid: ml_collections.ConfigDict) -> dict[str, str]:
    """Trains every unfinished run of the populations `cut` (indices into `planned`); returns
    the failed runs' directories with why each failed."""
    schedule = Schedule(planned, cut)
    training: dict[int, tuple[list[int], dict[int, bool]]] = {}  # population -> (runs, resumed)
    # The bar closes before an error or an interrupt is reported, so that it prints no line after.
    with schedule.bar, workers.Pool(workers.count(grid, max(map(len, cut), default=1))) as pool:
        while schedule.pending or pool.busy:
            while not pool.full and (started := schedule.next_population()) is not None:
                population, todo = started
                directories = [schedule.infos[i].directory for i in todo]
                schedule.bar.set_postfix_str(", ".join(epath.Path(d).name for d in directories[:3])
                                             + (", ..." if len(todo) > 3 else ""))
                training[population] = (todo, {i: (epath.Path(d) / run_dir.CHECKPOINTS).exists()
                                               for i, d in zip(todo, directories, strict=True)})
                pool.start(population, [schedule.configs[i] for i in todo], directories, grid)
            if not pool.busy:
                if schedule.pending:  # cannot happen: runs are listed before their readers
                    raise RuntimeError(f"populations {schedule.pending} read runs never trained")
                break  # every population left was skipped
            for population, outcomes, seconds in pool.finished():
                todo, resumed = training.pop(population)
                schedule.finished(todo, outcomes, seconds, resumed)
    return schedule.failed
