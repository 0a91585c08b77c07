"""What `score` reads from each run directory before any scoring: the run's name, its manifest
(checked against its config.json), its OOD groups, the score parameters its config.json stores
(`score_records.config_parameters`), and whether its predictions are of the finished model.
The manifests are cheap to read: most bad directories are reported before any work."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from softlabel_ood.scoring import groups, score_records
from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.workdir import predictions as predictions_lib
from softlabel_ood.workdir import run_dir as run_dir_lib
from softlabel_ood.workdir import trained_steps


@dataclasses.dataclass(frozen=True)
class RunDirectory:
    name: str
    predictions: pathlib.Path  # the predictions directory
    groups: dict[str, tuple[str, ...]]  # {group: OOD sets}, the groups whose means metrics.md shows
    parameters: dict[str, Any]  # {parameter: value} of the score parameters it stores
    unfinished: tuple[bool, trained_steps.Checkpoint | None]  # `trained_steps.unfinished`


def run_name(run_dir) -> str:
    """A run's name is its directory's base name (`runs/ls_0.1/` -> `ls_0.1`)."""
    return pathlib.Path(os.path.abspath(os.fspath(run_dir))).name


def stored_parameter(config: Mapping, parameter: score_records.Parameter, where: str):
    """A stored config's value of a score parameter that is a config field; its default for
    runs saved before the field existed."""
    value = config.get(parameter.name, parameter.default)
    problem = parameter.problem(value)
    if problem is not None:
        raise ScoringError(f"{where}: {problem}")
    return value


def _read_one(run_dir, ood_groups: Mapping[str, Sequence[str]] | None,
              given: Mapping[str, Any], names: Sequence[str]) -> RunDirectory:
    if not os.path.isdir(os.fspath(run_dir)):
        raise predictions_lib.PredictionsError(f"{run_dir}: no such run directory")
    directory = pathlib.Path(os.fspath(run_dir))
    manifest = predictions_lib.read_manifest(run_dir_lib.predictions_path(directory))
    name = run_name(run_dir)
    if name in names:
        raise ScoringError(f"{run_dir}: another run directory has the same base name "
                           f"'{name}' (run names must be unique)")
    # A run directory written by train holds its config: the predictions must be its own.
    stored = run_dir_lib.read_config(directory, missing_ok=True)
    config_path = run_dir_lib.config_path(directory)
    predictions_lib.check_run_matches_config(
        run_dir_lib.predictions_path(directory) / run_dir_lib.MANIFEST, manifest.get("run", {}),
        stored, config_path)
    if ood_groups is not None:
        run_groups, where = dict(ood_groups), "--groups"
    else:
        run_groups = groups.groups_of(stored, directory)
        where = f"{config_path} (ood_groups; --groups replaces them)"
    groups.check_groups(run_groups, {n: e["role"] for n, e in manifest["splits"].items()},
                        run=name, where=where)
    # A value given for every run replaces the stored one, which is then not read.
    parameters = {p.name: stored_parameter(stored, p, str(config_path))
                  for p in score_records.config_parameters().values()
                  if given.get(p.name) is None}
    return RunDirectory(name, run_dir_lib.predictions_path(directory), run_groups, parameters,
                        trained_steps.unfinished(
                            manifest, done=(directory / run_dir_lib.DONE).exists()))


def read_run_directories(run_dirs: Sequence,
                         ood_groups: Mapping[str, Sequence[str]] | None = None,
                         given: Mapping[str, Any] | None = None) -> list[RunDirectory]:
    """Each run directory's name, groups, stored score parameters and finished state, once its
    manifest and groups are checked; `ood_groups` replaces every run's groups, and a parameter
    in `given` (not None) the value each run stores."""
    read = []
    for run_dir in run_dirs:
        read.append(_read_one(run_dir, ood_groups, given or {}, [r.name for r in read]))
    return read
