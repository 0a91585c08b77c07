"""The eval program and its two uses: the per-epoch test accuracy and predict's outputs.

An evaluated split is placed on the devices once (`resident`, padded to whole batches with
zero images labelled -1), and each call of a program takes its batch by offset on the device:
the host sends no images and waits for nothing until the split's last batch is dispatched.
Padded rows are computed like any other and dropped afterwards, so every process runs the same
number of batches and padded rows never reach a metric or a saved array.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood.data import input_pipeline
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training.runs_axis import (
    DATA_AXIS,
    PROGRAM_CACHE_SIZE,
    RUNS_AXIS,
    over_runs,
    runs_per_device_group,
    stack_in_program,
    take,
)
from softlabel_ood.training.train_step import StepConfig, prepare_images


@dataclasses.dataclass(frozen=True)
class ResidentSplit:
    """A split on every device of the mesh: images uint8 [batches * B, H, W, C] and labels
    int32 [batches * B] (-1 past the split's end), replicated."""

    images: jax.Array
    labels: jax.Array
    num_examples: int
    batch_size: int

    @property
    def offsets(self) -> range:
        return range(0, self.labels.shape[0], self.batch_size)


def resident(ds: ArrayDataset, mesh: Mesh, batch_size: int) -> ResidentSplit:
    input_pipeline.check_global_batch(input_pipeline.data_sharding(mesh), batch_size,
                                      jax.process_count(), "eval batch size")
    padding = -len(ds.labels) % batch_size
    images = np.concatenate([ds.images, np.zeros((padding, *ds.images.shape[1:]), np.uint8)])
    labels = np.concatenate([ds.labels.astype(np.int32), np.full(padding, -1, np.int32)])
    replicated = NamedSharding(mesh, P())

    def put(array):
        # Every process holds the whole split, so its local data is the global array.
        return jax.make_array_from_process_local_data(replicated, array, array.shape)

    return ResidentSplit(put(images), put(labels), len(ds.labels), batch_size)


def batch_program(per_run: Callable, mesh: Mesh, *, runs: int, batch_size: int) -> Callable:
    """Jitted `program(variables, images, offset)`: `per_run(run_variables, batch_images)` on
    images[offset:offset + batch_size] (batch split over "data") for each run of the stacked
    `variables`, its outputs stacked [runs, batch, ...]."""
    local_runs = runs_per_device_group(mesh, runs)

    def per_device(variables, images, offset):
        batch = jax.lax.dynamic_slice_in_dim(images, offset, batch_size)
        batch = jax.lax.with_sharding_constraint(batch, P(DATA_AXIS))
        return stack_in_program([per_run(take(variables, r), batch) for r in range(local_runs)])

    program = over_runs(per_device, mesh, in_specs=(P(RUNS_AXIS), P(), P()),
                        out_specs=P(RUNS_AXIS))
    return jax.jit(program,
                   in_shardings=(NamedSharding(mesh, P(RUNS_AXIS)), NamedSharding(mesh, P()),
                                 NamedSharding(mesh, P())),
                   out_shardings=NamedSharding(mesh, P(RUNS_AXIS, DATA_AXIS)))


@functools.lru_cache(maxsize=PROGRAM_CACHE_SIZE)
def make_eval_program(model: nn.Module, step_config: StepConfig, mesh: Mesh, *, runs: int,
                      batch_size: int, features: bool = True) -> Callable:
    """Returns jitted `eval(variables, images, offset) -> {"logits": [runs, B, K]}` (and
    "features" [runs, B, D] with `features`), float32, for the stacked variables of `runs`
    runs ({"params", "batch_stats"} on a leading run axis): inference mode (BatchNorm running
    statistics, no dropout), no augmentation, on images[offset:offset + B] of a resident split."""

    def per_run(variables, images):
        x = prepare_images(images, None, step_config)
        logits, feats = model.apply(variables, x, train=False, return_features=True)
        out = {"logits": logits.astype(jnp.float32)}
        if features:
            out["features"] = feats.astype(jnp.float32)
        return out

    return batch_program(per_run, mesh, runs=runs, batch_size=batch_size)


@jax.jit
def _count_correct(logits, labels, offset):
    # logits [runs, B, K]; labels of padded rows are -1 and never match.
    batch = jax.lax.dynamic_slice_in_dim(labels, offset, logits.shape[1])
    return jnp.sum(jnp.argmax(logits, axis=-1) == batch, axis=-1)


def accuracy(eval_program, variables, split: ResidentSplit) -> Callable[[], list[float]]:
    """Dispatches the evaluation of `split`; the returned function waits for it and gives each
    run's accuracy."""
    correct = 0
    for offset in split.offsets:
        offset = np.int32(offset)
        correct = correct + _count_correct(eval_program(variables, split.images, offset)["logits"],
                                           split.labels, offset)
    return lambda: [int(c) / split.num_examples for c in np.atleast_1d(jax.device_get(correct))]


def outputs(program, variables, split: ResidentSplit) -> dict[str, np.ndarray]:
    """Every output of `program` (an eval or ODIN program) for every example of `split`, in
    order, float32, on every process: [runs, N, ...] per name."""
    parts = [program(variables, split.images, np.int32(offset)) for offset in split.offsets]
    if jax.process_count() == 1:
        parts = jax.device_get(parts)
    else:  # each process holds only its rows of each batch
        parts = multihost_utils.process_allgather(parts, tiled=True)
    return {name: np.concatenate([p[name] for p in parts], axis=1)[:, :split.num_examples]
            .astype(np.float32) for name in parts[0]}
