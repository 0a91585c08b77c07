"""How R runs share one compiled program: a ("runs", "data") mesh, runs over devices first.

Every program of the training side (train, eval, ODIN) takes the runs of a population stacked on
a leading axis split over the mesh's "runs" axis, and each run's batch split over "data". Inside,
`shard_map` makes "runs" manual: each device group receives its own runs and computes them one
after another, unrolled, with the very operations a run alone would compute; "data" stays
automatic, so the compiler partitions each run's batch and inserts the BatchNorm and gradient
all-reduces. A run alone is the same program with one run.

Why unrolled and not `jax.vmap`: vmapping a convolution over runs turns it into a grouped
convolution, which XLA runs slower than the separate ones on CPU and GPU (benchmarks/
population.py: R = 4 at 0.56-0.76x of runs in turn). Unrolled runs are independent chains that
XLA's CPU runtime executes concurrently, and each run's arithmetic is exactly its arithmetic
alone: on one device, and with whole runs per device, a population's runs are bitwise the runs
trained one by one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
RUNS_AXIS = "runs"
# Compiled programs kept per process: a grid needs a handful (one per loss, model and size).
PROGRAM_CACHE_SIZE = 64


def population_mesh(run_devices: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2-D mesh ("runs", "data") over `devices` (default: all devices).

    `run_devices` = 1 is pure data parallelism; `run_devices` = the device count gives each
    device whole runs. Every row of the mesh (the devices of one group of runs) takes an equal
    share of every process's devices, in `jax.make_mesh`'s order, so the "data" axis spans the
    processes as the input pipeline needs (each process feeds its contiguous rows of a batch).
    Both axes are Auto: the compiler propagates shardings inside the programs.
    """
    devices = list(jax.devices() if devices is None else devices)
    auto = jax.sharding.AxisType.Auto
    ordered = np.asarray(jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(auto,),
                                       devices=devices).devices)
    processes = len({d.process_index for d in devices})
    local = len(devices) // processes
    if run_devices < 1 or local % run_devices:
        raise ValueError(f"run_devices={run_devices} must divide the {local} devices of each "
                         f"process")
    grid = ordered.reshape(processes, run_devices, local // run_devices).transpose(1, 0, 2)
    return Mesh(grid.reshape(run_devices, -1), (RUNS_AXIS, DATA_AXIS), axis_types=(auto, auto))


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Every device on "data" (a runs axis of size 1): a run alone, predict, a teacher."""
    return population_mesh(1, devices)


def fit_mesh(mesh: Mesh, runs: int) -> Mesh:
    """`mesh`, or when `runs` does not divide among its run groups (a run of a population
    dropped out), a mesh over all devices with as many run groups as divide both."""
    groups = mesh.shape[RUNS_AXIS]
    return mesh if runs % groups == 0 else population_mesh(math.gcd(runs, groups))


def runs_per_device_group(mesh: Mesh, runs: int) -> int:
    groups = mesh.shape[RUNS_AXIS]
    if runs < 1 or runs % groups:
        raise ValueError(f"{runs} runs do not divide among the mesh's {groups} run groups")
    return runs // groups


def take(tree: Any, run: int) -> Any:
    """Run `run` of a stacked pytree (inside a program)."""
    return jax.tree.map(lambda x: x[run], tree)


def stack_in_program(trees: Sequence[Any]) -> Any:
    """Runs' pytrees stacked on a leading axis, inside a traced program (`stack` places them on
    a mesh from outside one)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def over_runs(per_device: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """`per_device` under shard_map, manual over "runs" and automatic over "data"."""
    return jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         axis_names={RUNS_AXIS}, check_vma=False)


def stack(trees: Sequence[Any], mesh: Mesh) -> Any:
    """Single runs' pytrees (states, hyperparameters, teachers) stacked on a leading run axis,
    split over the mesh's "runs" axis: the inputs of a program (`stack_in_program` stacks
    inside one)."""
    return _stack_program(mesh)(*trees)


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _stack_program(mesh: Mesh) -> Callable:
    return jax.jit(lambda *trees: stack_in_program(trees),
                   out_shardings=NamedSharding(mesh, P(RUNS_AXIS)))


def member(tree: Any, index: int, mesh: Mesh) -> Any:
    """Run `index` of a stacked pytree, replicated on `mesh` (as a run alone holds it)."""
    return _member_program(mesh)(tree, np.int32(index))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def _member_program(mesh: Mesh) -> Callable:
    return jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree),
                   out_shardings=NamedSharding(mesh, P()))
