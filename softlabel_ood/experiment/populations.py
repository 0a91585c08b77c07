"""How `reproduce` cuts a grid into populations: runs trained together in one compiled program.

Runs join a population when they share the compiled program, the data and the step count
(`run_model.population_key`): ce and every α of the label-smoothing sweep, the kd students,
the kd_incorrect students, the OE runs, across seeds. A run trains only after the runs it reads
(its teacher, the run it fine-tunes from), so the grid is cut into stages first: stage 0 holds
the runs that read no other run, stage k + 1 those whose inputs are in stages up to k.

The cut depends on the grid and `config.grid.max_population` alone, never on which runs are
finished, so a reproduction that is killed and started again forms the same populations and
trains the unfinished runs with the same programs: its results are bitwise those of an
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import ml_collections

from softlabel_ood.training import run_model, train_step

# The largest population when config.grid.max_population is 0 (automatic), by platform.
# CPU: 1, measured by benchmarks/population.py on 2 cores: XLA:CPU runs a vmapped population of
# convolutional models slower than the same runs one after another (small_cnn 0.49-0.56x,
# wrn16_2 0.19-0.27x).
# Accelerators: 4, runs of batch 128 stacked to 512 images per step, where an H100 trains
# wrn40_2 in bfloat16 at 1.8x the images/s of batch 128; not yet measured with populations.
AUTO_MAX_POPULATION = {"cpu": 1}
AUTO_MAX_POPULATION_ACCELERATOR = 4


def max_population(grid: ml_collections.ConfigDict) -> int:
    value = int(grid.get("max_population", 0))
    if value < 0:
        raise ValueError(f"config.grid.max_population: {value} must be >= 0 (0 = automatic)")
    if value:
        return value
    return AUTO_MAX_POPULATION.get(jax.default_backend(), AUTO_MAX_POPULATION_ACCELERATOR)


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


def form(configs: Sequence[ml_collections.ConfigDict], directories: Sequence[str],
         max_size: int) -> list[list[int]]:
    """Indices into `configs` of every population, in training order.

    With `max_size` 1, every run alone in the grid's order (seed by seed). Otherwise stage by
    stage; within a stage, runs with the same `run_model.population_key` (and a teacher
    of the same model), in the order listed, cut into populations of at most `max_size` runs of
    near-equal sizes (13 runs at most 12 make 7 + 6, not 12 + 1).
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    if max_size == 1:
        return [[i] for i in range(len(configs))]  # run by run, in the grid's order
    by_dir = {str(d): c for c, d in zip(configs, directories, strict=True)}
    groups: dict[tuple, list[int]] = {}
    for i, (config, stage) in enumerate(zip(configs, stages(configs, directories), strict=True)):
        teacher = by_dir.get(config.kd.teacher_workdir) if config.kd.teacher_workdir else None
        key = (stage, run_model.population_key(config, teacher.model if teacher else ""))
        groups.setdefault(key, []).append(i)
    populations = []
    for key in sorted(groups, key=lambda k: (k[0], groups[k][0])):
        members = groups[key]
        count = math.ceil(len(members) / max_size)
        size, extra = divmod(len(members), count)
        start = 0
        for j in range(count):
            end = start + size + (j < extra)
            populations.append(members[start:end])
            start = end
    return populations


def mesh(grid: ml_collections.ConfigDict, population: int) -> jax.sharding.Mesh:
    """The mesh a population of `population` runs trains on: a run alone on `data_mesh`, more
    on a ("runs", "data") mesh with `run_devices` of `config.grid.run_devices` on "runs"."""
    if population == 1:
        return train_step.data_mesh()
    return train_step.population_mesh(run_devices(
        int(grid.get("run_devices", 1)), population, jax.local_device_count()))


def run_devices(requested: int, population: int, local_devices: int) -> int:
    """Devices along the mesh's "runs" axis: the largest number up to `requested` that divides
    both the population and each process's device count (1 = each run's batch over all
    devices)."""
    return max(d for d in range(1, min(requested, population, local_devices) + 1)
               if population % d == 0 and local_devices % d == 0)
