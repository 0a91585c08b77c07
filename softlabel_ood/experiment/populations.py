"""How `reproduce` cuts a grid into populations: runs trained together in one compiled program,
and where each population's runs go on the devices.

Runs join a population when they share the compiled program, the data and the step count
(`run_model.population_key`): ce and every α of the label-smoothing sweep (one loss), the kd
students, the kd_incorrect students, the OE runs, across seeds. A run trains only after the
runs it reads (its teacher, the run it fine-tunes from), so the grid is cut into stages first:
stage 0 holds the runs that read no other run, stage k + 1 those whose inputs are in stages up
to k.

Placement: runs go over devices first (each device trains whole runs with their full batch),
data parallelism second (a run's batch split over the devices left). The size of a population
is `config.grid.max_population`, or, when it is 0, what `probe` measured fastest on one device,
times the devices.

Since a run computes exactly the same steps in any population (`training/runs_axis`), the cut
decides speed only: a reproduction killed and started again with another cut resumes each run
from the latest step that the runs of its new population all saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import ml_collections

from softlabel_ood.training import run_model, runs_axis


def inputs(config: ml_collections.ConfigDict) -> list[str]:
    """The directories of the runs that a run reads: its KD teacher, the run it fine-tunes."""
    return [path for path in (config.kd.teacher_workdir, config.oe.finetune_from) if path]


def stages(configs: Sequence[ml_collections.ConfigDict], directories: Sequence[str]) -> list[int]:
    """The stage of every run: 0 without inputs, else one more than its inputs' latest stage.

    A run's inputs are the runs whose directories (`directories`, one per config) its config
    names in kd.teacher_workdir and oe.finetune_from; inputs are listed before their readers.
    """
    stage_of: dict[str, int] = {}
    result = []
    for config, directory in zip(configs, directories, strict=True):
        stage = 1 + max((stage_of[path] for path in inputs(config) if path in stage_of),
                        default=-1)
        result.append(stage)
        stage_of[str(directory)] = stage
    return result


def groups(configs: Sequence[ml_collections.ConfigDict],
           directories: Sequence[str]) -> list[list[int]]:
    """Indices into `configs` of the runs that may share a program, stage by stage, each group
    in the order listed: same stage, same `run_model.population_key`, a teacher of one model."""
    by_dir = {str(d): c for c, d in zip(configs, directories, strict=True)}
    found: dict[tuple, list[int]] = {}
    for i, (config, stage) in enumerate(zip(configs, stages(configs, directories), strict=True)):
        teacher = by_dir.get(config.kd.teacher_workdir) if config.kd.teacher_workdir else None
        key = (stage, run_model.population_key(config, teacher.model if teacher else ""))
        found.setdefault(key, []).append(i)
    return [found[key] for key in sorted(found, key=lambda k: (k[0], found[k][0]))]


def form(configs: Sequence[ml_collections.ConfigDict], directories: Sequence[str],
         max_size: int, *, unit: int = 1) -> list[list[int]]:
    """Indices into `configs` of every population, in training order.

    With `max_size` 1, every run alone in the grid's order (seed by seed). Otherwise each group
    of `groups` is cut into ceil(n / max_size) populations of near-equal sizes in multiples of
    `unit` (the devices that take whole runs), the last one holding what remains: 13 runs at
    most 12 make 7 + 6, not 12 + 1; 18 runs at most 8 on 4 devices make 8 + 8 + 2.
    """
    if max_size < 1 or unit < 1:
        raise ValueError(f"max_size and unit must be >= 1, got {max_size}, {unit}")
    if max_size == 1:
        return [[i] for i in range(len(configs))]  # run by run, in the grid's order
    populations = []
    for members in groups(configs, directories):
        count = math.ceil(len(members) / max_size)
        units, extra = divmod(math.ceil(len(members) / unit), count)
        start = 0
        for j in range(count):
            end = min(len(members), start + (units + (j < extra)) * unit)
            populations.append(members[start:end])
            start = end
    return populations


def run_devices(requested: int, population: int, local_devices: int) -> int:
    """Devices along the mesh's "runs" axis: the largest number that divides both the
    population and each process's device count, up to `requested` (0 = no limit: runs over
    devices first); 1 = each run's batch over all devices."""
    limit = min(requested or local_devices, population, local_devices)
    return max(d for d in range(1, limit + 1) if population % d == 0 and local_devices % d == 0)


def mesh(grid: ml_collections.ConfigDict, population: int) -> jax.sharding.Mesh:
    """The mesh a population of `population` runs trains on."""
    return runs_axis.population_mesh(run_devices(
        int(grid.get("run_devices", 0)), population, jax.local_device_count()))
