"""The grid's runs that are already finished, checked against the grid before anything trains.

`reproduce` skips a finished run and reports it beside the runs it trains, so the run must have
been trained with the values the grid gives it now: a workdir trained with another num_epochs
(or any other field that shapes the model) would otherwise mix two grids in one report.

Compared: every field of the run's stored config.json except
- `config_validation.RESUMABLE_CHANGES`: the speed fields (`steps_per_call`,
  `device_data_max_mb`) and checkpoint and log bookkeeping, which never change a trained model
  (DESIGN.md §8), and the evaluation fields, which `predict` may change after training without
  rewriting config.json, so that config.json does not say what the predictions hold;
- the fields of other methods (`methods.Method.reads`: kd.temperature of a ce run), which do
  not enter the run's loss;
- a field the stored config lacks (a run of an earlier version, trained before the field
  existed).
The teacher and the fine-tuning start (`kd.teacher_workdir`, `oe.finetune_from`) are compared
by their run directory's name, so that a grid moved or named by another path still matches.
"""

from __future__ import annotations

import ml_collections
from etils import epath

from softlabel_ood import methods
from softlabel_ood.configs import config_validation, grid
from softlabel_ood.workdir import run_dir, saved_runs

_RUN_PATHS = ("kd.teacher_workdir", "oe.finetune_from")
_METHOD_FIELDS = frozenset(field for m in methods.BY_NAME.values() for field in m.reads)
_MISSING = object()


class GridMismatchError(grid.GridError):
    """A finished run of the workdir was trained with other values than the grid gives it."""


def _value(data: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _same(name: str, stored, current) -> bool:
    if name in _RUN_PATHS:  # the same run of the grid, wherever the workdir lies
        return epath.Path(stored or "").name == epath.Path(current or "").name
    return False


def check_trained_as_planned(run: str, directory: epath.PathLike,
                             config: ml_collections.ConfigDict) -> None:
    """GridMismatchError naming the run and the first field whose value in the finished run's
    config.json differs from `config`, the one the grid gives it; nothing for an unfinished
    run (its checkpoint is resumed only by its own config: `run_start.check_resumable`)."""
    directory = epath.Path(directory)
    if not saved_runs.is_finished(directory) or \
            not (directory / run_dir.CONFIG).exists():
        return
    stored = saved_runs.config_to_dict(saved_runs.read_config(directory))
    current = saved_runs.config_to_dict(config)
    for name in config_validation.changed_fields(stored, current):
        if name.split(".")[0] in config_validation.RESUMABLE_CHANGES or (
                name in _METHOD_FIELDS and not methods.reads(config.method, name)):
            continue
        old, new = _value(stored, name), _value(current, name)
        if old is _MISSING or new is _MISSING or _same(name, old, new):
            continue
        raise GridMismatchError(
            f"{directory / run_dir.CONFIG}: finished run {run} was trained with "
            f"config.{name} = {old!r}, the grid gives {new!r}; use another --workdir for "
            f"these values, or give the run's")
