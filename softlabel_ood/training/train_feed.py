"""What each call of the train loop's compiled steps consumes (see `train_step.make_train_steps`).

Two ways to feed the same batches (the order of `input_pipeline`: epoch permutations drawn from
(seed, epoch), each process reading its contiguous rows of every global batch):

- resident: when the training arrays (ID images and labels, and outliers for OE) take at most
  `max_device_bytes`, they are placed on every device once, replicated, and a call receives only
  the example indices of its steps, int32 [steps_per_call, B]. The device gathers each batch
  inside the compiled program; the host sends no images while training.
- host: larger sets are gathered on the host, a call's batches stacked into
  [steps_per_call, B, H, W, C], and the next call's arrays are built and copied while the current
  call runs.

Both hand the compiled step the same images in the same order, so the choice never changes a
result. Each process places only its own devices' rows (`make_array_from_process_local_data`):
a multi-process run feeds every device from the process that owns it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood.data import input_pipeline
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training.train_step import RUNS_AXIS


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One call's worth of steps: steps [start, start + num_steps), rows [first, first + num_steps)
    of `feed`."""

    start: int
    num_steps: int
    first: int
    feed: dict  # the `feed` argument of the compiled steps, on the devices


def training_bytes(train: ArrayDataset, outliers: ArrayDataset | None) -> int:
    sets = [train] if outliers is None else [train, outliers]
    return sum(ds.images.nbytes + ds.labels.nbytes for ds in sets)


class TrainFeed:
    """Feeds of the compiled steps. `rows_per_feed` is the leading size of every feed array:
    a whole epoch's index table when resident (sent once per epoch; a call then selects its
    steps by `first`), `steps_per_call` stacked batches otherwise."""

    def __init__(self, train: ArrayDataset, *, global_batch_size: int, seed: int, mesh: Mesh,
                 steps_per_call: int, max_device_bytes: int,
                 outliers: ArrayDataset | None = None, outlier_batch_size: int = 0):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if (outliers is None) != (outlier_batch_size <= 0):
            raise ValueError("outliers and a positive outlier_batch_size go together, got "
                             f"outliers={outliers is not None}, "
                             f"outlier_batch_size={outlier_batch_size}")
        sharding = input_pipeline.data_sharding(mesh)
        input_pipeline.check_global_batch(sharding, global_batch_size, jax.process_count(),
                                          "global batch size")
        if outliers is not None:
            input_pipeline.check_global_batch(sharding, outlier_batch_size, jax.process_count(),
                                              "outlier batch size")
        self.train, self.outliers = train, outliers
        self.batch_size, self.outlier_batch_size = global_batch_size, outlier_batch_size
        self.seed, self.mesh, self.steps_per_call = seed, mesh, steps_per_call
        self.steps_per_epoch = input_pipeline.steps_per_epoch(len(train), global_batch_size)
        self._feed_sharding = NamedSharding(mesh, P(None, input_pipeline.DATA_AXIS))
        self.resident = training_bytes(train, outliers) <= max_device_bytes
        self.rows_per_feed = self.steps_per_epoch if self.resident else steps_per_call
        self.data = self.place_training_arrays() if self.resident else {}

    def place_training_arrays(self) -> dict[str, jax.Array]:
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
        plan = list(plan)
        for (start, n), (following, _) in itertools.pairwise(plan):
            if start + n != following:
                raise ValueError(f"plan is not consecutive: ({start}, {n}) then {following}")
        for start, n in plan:
            if n > self.steps_per_call or (self.resident and (start % self.steps_per_epoch) + n
                                           > self.steps_per_epoch):
                raise ValueError(f"call ({start}, {n}) is longer than {self.steps_per_call} "
                                 f"steps or crosses the end of an epoch")
        if not plan:
            return iter(())
        build = self._resident_chunks if self.resident else self._host_chunks
        return input_pipeline.prefetch_one(build(plan))

    def _resident_chunks(self, plan) -> Iterator[Chunk]:
        return _epoch_chunks(plan, self.steps_per_epoch, lambda first_step: {
            name: self._global(table) for name, table in self.epoch_tables(first_step).items()})

    def _host_chunks(self, plan) -> Iterator[Chunk]:
        id_rows = self._indices(len(self.train), self.batch_size, plan[0][0], 0)
        outlier_rows = None
        if self.outliers is not None:
            outlier_rows = self._indices(len(self.outliers), self.outlier_batch_size, plan[0][0],
                                         input_pipeline.OUTLIER_STREAM)
        for start, n in plan:
            rows = self._padded(itertools.islice(id_rows, n))
            feed = {"image": self.train.images[rows], "label": self.train.labels[rows]}
            if outlier_rows is not None:
                feed["outlier_image"] = self.outliers.images[
                    self._padded(itertools.islice(outlier_rows, n))]
            yield Chunk(start, n, 0, {name: self._global(a) for name, a in feed.items()})

    def _indices(self, num_examples: int, batch_size: int, start_step: int, stream: int, *,
                 whole_batch: bool = False):
        """From `start_step` on, each step's rows: this process's, or the whole global batch's."""
        processes = (0, 1) if whole_batch else (jax.process_index(), jax.process_count())
        return input_pipeline.train_indices(
            num_examples, global_batch_size=batch_size, seed=self.seed, start_step=start_step,
            process_index=processes[0], process_count=processes[1], stream=stream)

    def epoch_tables(self, first_step: int, *, whole_batch: bool = False
                     ) -> dict[str, np.ndarray]:
        """The rows of the steps of the ID epoch that starts at `first_step`: "index", and
        "outlier_index" with outliers, int32 [steps_per_epoch, B / P] for this process's rows
        or [steps_per_epoch, B] with `whole_batch`."""
        streams = {"index": (len(self.train), self.batch_size, 0)}
        if self.outliers is not None:
            streams["outlier_index"] = (len(self.outliers), self.outlier_batch_size,
                                        input_pipeline.OUTLIER_STREAM)
        return {name: np.stack(list(itertools.islice(
                    self._indices(num, size, first_step, stream, whole_batch=whole_batch),
                    self.steps_per_epoch))).astype(np.int32)
                for name, (num, size, stream) in streams.items()}

    def _padded(self, rows: Iterable[np.ndarray]) -> np.ndarray:
        """Stacked rows, padded with index 0 to steps_per_call."""
        rows = np.stack(list(rows)).astype(np.int32)
        padding = np.zeros((self.steps_per_call - len(rows), rows.shape[1]), np.int32)
        return np.concatenate([rows, padding])

    def _global(self, local: np.ndarray) -> jax.Array:
        processes = jax.process_count()
        shape = (local.shape[0], local.shape[1] * processes, *local.shape[2:])
        return jax.make_array_from_process_local_data(self._feed_sharding, local, shape)


class PopulationFeed:
    """The feeds of a population (`train_step.make_population_steps`): one training set on every
    device, shared, and per epoch an int32 [runs, steps_per_epoch, B] table with each run's own
    batches, the ones `TrainFeed` gives that run alone (its seed's permutations).

    Populations are resident only: a set larger than `max_device_bytes` is trained run by run.
    Every process computes the whole table (a few integers per example) and places the part its
    devices hold, whatever the split over the mesh's "runs" and "data" axes.
    """

    def __init__(self, train: ArrayDataset, *, global_batch_size: int, seeds: list[int],
                 mesh: Mesh, outliers: ArrayDataset | None = None, outlier_batch_size: int = 0):
        self._runs = [TrainFeed(train, global_batch_size=global_batch_size, seed=seed, mesh=mesh,
                                steps_per_call=1, max_device_bytes=-1, outliers=outliers,
                                outlier_batch_size=outlier_batch_size) for seed in seeds]
        self.mesh, self.steps_per_epoch = mesh, self._runs[0].steps_per_epoch
        self._table_sharding = NamedSharding(mesh, P(RUNS_AXIS, None, input_pipeline.DATA_AXIS))
        self.data = self._runs[0].place_training_arrays()

    def chunks(self, plan: Iterable[tuple[int, int]]) -> Iterator[Chunk]:
        """The feed of every (start, num_steps) of `plan`, none crossing an epoch's end."""
        for start, n in plan:
            if (start % self.steps_per_epoch) + n > self.steps_per_epoch:
                raise ValueError(f"call ({start}, {n}) crosses the end of an epoch")
        return _epoch_chunks(plan, self.steps_per_epoch, self._epoch_tables)

    def _epoch_tables(self, first_step: int) -> dict[str, jax.Array]:
        per_run = [run.epoch_tables(first_step, whole_batch=True) for run in self._runs]
        tables = {name: np.stack([t[name] for t in per_run]) for name in per_run[0]}
        return {name: jax.make_array_from_callback(table.shape, self._table_sharding,
                                                   lambda index, t=table: t[index])
                for name, table in tables.items()}


def _epoch_chunks(plan, steps_per_epoch: int, tables_at) -> Iterator[Chunk]:
    """Chunks of `plan` fed from one index table per epoch, `tables_at(first step of the
    epoch)`; a resumed run starts its table at the epoch's first step."""
    epoch, feed = None, None
    for start, n in plan:
        if start // steps_per_epoch != epoch:
            epoch = start // steps_per_epoch
            feed = tables_at(epoch * steps_per_epoch)
        yield Chunk(start, n, start - epoch * steps_per_epoch, feed)
