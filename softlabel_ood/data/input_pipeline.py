"""The order of training batches, and evaluation batches as global arrays sharded over "data".

Training order. Epoch e of a dataset of N examples visits them in the order
`np.random.default_rng((seed, e)).permutation(N)`: a numpy Generator seeded with the tuple
(seed, epoch), i.e. `SeedSequence([seed, epoch])`. Step s (counted from 0 at the start of
training) is batch s % steps_per_epoch of epoch s // steps_per_epoch; the N % B examples at the
end of each permutation are dropped (different ones every epoch). Every batch is a function of
(seed, step) alone, so a run resumed at step s sees exactly the batches that an uninterrupted run
sees from step s, with nothing replayed or skipped.

Outliers (outlier exposure). A second stream over the outlier set with its own batch size B_oe,
its own epochs (N_oe // B_oe steps each) and its own permutations
`np.random.default_rng((seed, e, 1))`, zipped step by step with the ID stream, so it resumes the
same way. (The OE reference restarts its outlier loader at every ID epoch from a random offset;
independent epochs make the same "fresh random outliers at every step" with no state to save.)

Processes. Every process computes the same permutation (no communication); process p of P takes
the contiguous rows [p * B / P, (p + 1) * B / P) of every global batch and the global array is
built with `jax.make_array_from_process_local_data` on `NamedSharding(mesh, P("data"))`. That
function lays a process's rows onto its own devices in device order; on a mesh whose "data" axis
lists devices process by process (as `jax.make_mesh` builds it) the global array holds the batch in
permutation order, and on any other mesh only the positions of examples inside a batch change,
never which examples make up the batch.

Evaluation. A fixed order (the dataset's), ceil(N / B) batches, the last padded with zero images
and label -1, and a boolean "mask" that is False on padded rows so that they never reach a metric.
Every process derives the same count from N and B, so all run the same number of steps.

Prefetch. The next batch is built, and its host-to-device copy started, before the current one is
handed out, so the copy overlaps the step that consumes the current batch.

Training batches reach the devices through `train_feed`, which applies this order to arrays that
stay on the devices (or, for sets too large for them, to batches gathered here on the host).
Normalisation (`datasets.info(name).mean/std`) is not applied here: images stay uint8 (4x less
host-to-device traffic and device memory than float32) and the jitted step normalises on device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from softlabel_ood.data.datasets import ArrayDataset

DATA_AXIS = "data"
OUTLIER_STREAM = 1  # mixed into the outlier stream's seed so its permutations differ from the ID


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Full global batches per epoch (the remainder is dropped)."""
    _check_positive("global_batch_size", global_batch_size)
    steps = num_examples // global_batch_size
    if steps < 1:
        raise ValueError(f"{num_examples} examples do not fill one global batch of "
                         f"{global_batch_size}")
    return steps


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Global eval batches, the last one padded: ceil(num_examples / global_batch_size)."""
    _check_positive("global_batch_size", global_batch_size)
    return -(-num_examples // global_batch_size)


def epoch_permutation(num_examples: int, seed: int, epoch: int, *, stream: int = 0
                      ) -> np.ndarray:
    """The visiting order of one epoch: a permutation drawn from (seed, epoch[, stream])."""
    # (seed, epoch, 0) would seed the same generator as (seed, epoch): SeedSequence pads the
    # entropy with zeros. Only non-zero streams are appended.
    entropy = (seed, epoch) if stream == 0 else (seed, epoch, stream)
    return np.random.default_rng(entropy).permutation(num_examples)


def process_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """The contiguous rows of every global batch that one process reads."""
    if global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"{process_count} processes")
    per_process = global_batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


def train_indices(num_examples: int, *, global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1, stream: int = 0
                  ) -> Iterator[np.ndarray]:
    """Infinite: for step start_step, start_step + 1, ... the example indices this process reads."""
    # Checked here, not inside the generator, so that mistakes surface at the call.
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    rows = process_slice(global_batch_size, process_index, process_count)

    def indices():
        step, epoch, permutation = start_step, None, None
        while True:
            step_epoch, batch = divmod(step, per_epoch)
            if step_epoch != epoch:
                epoch = step_epoch
                permutation = epoch_permutation(num_examples, seed, epoch, stream=stream)
            start = batch * global_batch_size
            yield permutation[start:start + global_batch_size][rows]
            step += 1

    return indices()


def eval_indices(num_examples: int, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per eval batch: (indices, mask) of this process's rows; padded rows have index 0."""
    rows = process_slice(global_batch_size, process_index, process_count)
    count = num_eval_batches(num_examples, global_batch_size)

    def indices():
        for batch in range(count):
            positions = np.arange(batch * global_batch_size, (batch + 1) * global_batch_size)
            mask = positions < num_examples
            yield np.where(mask, positions, 0)[rows], mask[rows]

    return indices()


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over the mesh's "data" axis, replicated over any other axis."""
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh has axes {mesh.axis_names}; the input pipeline needs a "
                         f"{DATA_AXIS!r} axis")
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def eval_batches(dataset: ArrayDataset, *, global_batch_size: int, mesh: Mesh
                 ) -> Iterator[dict[str, jax.Array]]:
    """The dataset once, in order: {"image", "label", "mask": bool [B]}, last batch padded."""
    sharding = data_sharding(mesh)
    process_index, process_count = jax.process_index(), jax.process_count()
    check_global_batch(sharding, global_batch_size, process_count, "eval batch size")
    indices = eval_indices(len(dataset), global_batch_size=global_batch_size,
                           process_index=process_index, process_count=process_count)

    def batches():
        for rows, mask in indices:
            images = dataset.images[rows]
            labels = dataset.labels[rows]
            # Padded rows are zeroed (not copies of example 0) so they cannot pass for data.
            images[~mask] = 0
            labels[~mask] = -1
            yield {
                "image": _global(sharding, images, global_batch_size),
                "label": _global(sharding, labels, global_batch_size),
                "mask": _global(sharding, mask, global_batch_size),
            }

    return prefetch_one(batches())


def _global(sharding: NamedSharding, local: np.ndarray, global_rows: int) -> jax.Array:
    return jax.make_array_from_process_local_data(
        sharding, local, (global_rows, *local.shape[1:]))


def prefetch_one(batches: Iterable[dict]) -> Iterator[dict]:
    batches = iter(batches)
    current = next(batches, None)
    while current is not None:
        # Build the following batch first: its device copy is then in flight while the caller
        # runs its step on `current` (jax dispatch is asynchronous).
        following = next(batches, None)
        yield current
        current = following


def _check_positive(what: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


def check_global_batch(sharding: NamedSharding, size: int, process_count: int,
                        what: str) -> None:
    _check_positive(what, size)
    devices = sharding.mesh.shape[DATA_AXIS]
    if size % devices:
        raise ValueError(f"{what} {size} is not divisible by the {devices} devices on the "
                         f"mesh's {DATA_AXIS!r} axis")
    if size % process_count:
        raise ValueError(f"{what} {size} is not divisible by the {process_count} processes")
    # Rows this process's devices hold; the contiguous-slice rule needs an equal share per
    # process (a mesh replicating "data" across processes would need the same rows twice).
    held = {(s[0].start or 0, s[0].stop) for s in
            sharding.addressable_devices_indices_map((size,)).values()}
    held_rows = sum((stop if stop is not None else size) - start for start, stop in held)
    if held_rows != size // process_count:
        raise ValueError(f"this process's devices hold {held_rows} rows of a {what} of {size}, "
                         f"not {size // process_count}: each process needs an equal share of "
                         f"the mesh's {DATA_AXIS!r} axis")
