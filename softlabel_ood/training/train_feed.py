"""What each call of the train program consumes (`train_step.make_train_program`), for R runs.

Every run has its own order of batches (the input pipeline's epoch permutations drawn from
(seed, epoch)), so a run sees the same batches alone and in a population. Two ways to feed them:

- resident (the default): when the training arrays (ID images and labels, and outliers for OE)
  take at most `max_device_bytes`, they are placed on every device once, replicated, shared by
  all runs, and each epoch the program receives only the runs' example indices, int32
  [runs, steps_per_epoch, B]; the device gathers each batch inside the program, and the host
  sends no images while training.
- host: larger sets are gathered on the host, a call's batches stacked into
  [runs, steps_per_call, B, H, W, C], the next call's built and copied while the current runs.

Both hand the program the same images in the same order, so the choice never changes a result.
Every array is placed with `make_array_from_callback` over the mesh: each process builds only
the rows its devices hold (whatever the split of "runs" and "data" over processes), which for a
run's batch are its contiguous rows, as the input pipeline defines them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood.data import input_pipeline
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training.runs_axis import DATA_AXIS, RUNS_AXIS


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One call's worth of steps: steps [start, start + num_steps), rows [first, first + num_steps)
    of `feed`."""

    start: int
    num_steps: int
    first: int
    feed: dict  # the `feed` argument of the train program, on the devices


def training_bytes(train: ArrayDataset, outliers: ArrayDataset | None) -> int:
    sets = [train] if outliers is None else [train, outliers]
    return sum(ds.images.nbytes + ds.labels.nbytes for ds in sets)


class TrainFeed:
    """The feeds of R runs, one seed each. `rows_per_feed` is the second size of every feed
    array: a whole epoch's index table when resident (sent once per epoch; a call then selects
    its steps by `first`), `steps_per_call` stacked batches otherwise."""

    def __init__(self, train: ArrayDataset, *, global_batch_size: int, seeds: Sequence[int],
                 mesh: Mesh, steps_per_call: int, max_device_bytes: int,
                 outliers: ArrayDataset | None = None, outlier_batch_size: int = 0):
        if not seeds or min(seeds) < 0:
            raise ValueError(f"seeds must be >= 0, got {list(seeds)}")
        if (outliers is None) != (outlier_batch_size <= 0):
            raise ValueError("outliers and a positive outlier_batch_size go together, got "
                             f"outliers={outliers is not None}, "
                             f"outlier_batch_size={outlier_batch_size}")
        sharding = input_pipeline.data_sharding(mesh)
        input_pipeline.check_global_batch(sharding, global_batch_size, jax.process_count(),
                                          "global batch size")
        # (examples, batch size, random stream) of each feed table
        self.streams = {"index": (len(train), global_batch_size, 0)}
        if outliers is not None:
            input_pipeline.check_global_batch(sharding, outlier_batch_size, jax.process_count(),
                                              "outlier batch size")
            self.streams["outlier_index"] = (len(outliers), outlier_batch_size,
                                             input_pipeline.OUTLIER_STREAM)
        self.train, self.outliers, self.seeds = train, outliers, list(seeds)
        self.mesh, self.steps_per_call = mesh, steps_per_call
        self.steps_per_epoch = input_pipeline.steps_per_epoch(len(train), global_batch_size)
        self._sharding = NamedSharding(mesh, P(RUNS_AXIS, None, DATA_AXIS))
        self.resident = training_bytes(train, outliers) <= max_device_bytes
        self.rows_per_feed = self.steps_per_epoch if self.resident else steps_per_call
        self.data = self._place_training_arrays() if self.resident else {}

    def _place_training_arrays(self) -> dict[str, jax.Array]:
        """The training arrays (and outliers) replicated on every device of the mesh."""
        replicated = NamedSharding(self.mesh, P())

        def put(array):
            # Every process holds the whole set, so its local data is the global array.
            return jax.make_array_from_process_local_data(replicated, array, array.shape)

        data = {"image": put(self.train.images), "label": put(self.train.labels)}
        if self.outliers is not None:
            data["outlier_image"] = put(self.outliers.images)
        return data

    def chunks(self, plan: Iterable[tuple[int, int]]) -> Iterator[Chunk]:
        """The feed of every (start, num_steps) of `plan`: consecutive steps, none of its calls
        crossing an epoch's end when resident; built one call ahead."""
        build = self._resident_chunks if self.resident else self._host_chunks
        return input_pipeline.prefetch_one(build(self._checked(plan)))

    def _checked(self, plan: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        # Checked call by call as they come: a plan of one-step calls may hold 2³¹ of them.
        following = None
        for start, n in plan:
            if following is not None and start != following:
                raise ValueError(f"plan is not consecutive: {following} then {start}")
            if n > self.steps_per_call or (self.resident and (start % self.steps_per_epoch) + n
                                           > self.steps_per_epoch):
                raise ValueError(f"call ({start}, {n}) is longer than {self.steps_per_call} "
                                 f"steps or crosses the end of an epoch")
            following = start + n
            yield start, n

    def tables(self, first_step: int, num_steps: int) -> dict[str, np.ndarray]:
        """Every run's rows of steps [first_step, first_step + num_steps): int32
        [runs, num_steps, B] per stream (whole global batches)."""
        return {name: np.stack([np.stack(list(itertools.islice(input_pipeline.train_indices(
                    num, global_batch_size=size, seed=seed, start_step=first_step,
                    process_index=0, process_count=1, stream=stream), num_steps)))
                    for seed in self.seeds]).astype(np.int32)
                for name, (num, size, stream) in self.streams.items()}

    def _place(self, table: np.ndarray) -> jax.Array:
        # Each process builds only the slices its devices hold.
        return jax.make_array_from_callback(table.shape, self._sharding, lambda index: table[index])

    def _resident_chunks(self, plan) -> Iterator[Chunk]:
        epoch, feed = None, None
        for start, n in plan:
            if start // self.steps_per_epoch != epoch:
                # A resumed run starts its table at the epoch's first step.
                epoch = start // self.steps_per_epoch
                tables = self.tables(epoch * self.steps_per_epoch, self.steps_per_epoch)
                feed = {name: self._place(table) for name, table in tables.items()}
            yield Chunk(start, n, start - epoch * self.steps_per_epoch, feed)

    def _host_chunks(self, plan) -> Iterator[Chunk]:
        sources = {"index": (self.train, ("image", "label")),
                   "outlier_index": (self.outliers, ("outlier_image",))}
        for start, n in plan:
            feed = {}
            for stream, table in self.tables(start, n).items():
                # Padded with row 0 to steps_per_call rows: the program reads only the first n.
                table = np.pad(table, ((0, 0), (0, self.steps_per_call - n), (0, 0)))
                ds, names = sources[stream]
                for name in names:
                    array = ds.images if name.endswith("image") else ds.labels
                    shape = (*table.shape, *array.shape[1:])
                    feed[name] = jax.make_array_from_callback(
                        shape, self._sharding, lambda index, t=table, a=array: a[t[index[:3]]])
            yield Chunk(start, n, 0, feed)
