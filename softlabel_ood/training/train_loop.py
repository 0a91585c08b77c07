"""The train loop: a population's steps in calls of many steps, with logs, evaluation and
checkpoints between calls. A run trained alone is a population of one.

`train_population(members, data, mesh)` trains (or resumes) the runs on arrays already in memory and
returns their final states; `population_job.train_and_evaluate_population` loads the data and writes
the predictions around it, and `benchmarks/train_loop.py` times it on synthetic arrays.

How the host keeps out of the accelerator's way:
- the steps between two boundaries (a log, an epoch's evaluation, a checkpoint) run as calls of
  up to `config.steps_per_call` compiled steps (`chunk_plan`), fed from device-resident arrays
  (`train_feed`);
- a call is dispatched before the host reads the metrics of earlier calls (JAX dispatches
  asynchronously), so logging, the loss check and evaluation bookkeeping overlap the queued
  calls; the host waits only for results it needs, and stays at most `MAX_CALLS_IN_FLIGHT`
  calls ahead of the device;
- metrics stay on the device until a log boundary.
The loss is checked at every log and before every checkpoint, so a diverged run never saves a
checkpoint past the divergence. A run whose loss diverges stops writing (its last good
checkpoint stays), the others go on, and training ends once every run has diverged.
"""

from __future__ import annotations

import collections
import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
import tqdm
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import progress
from softlabel_ood.cli_errors import UserError
from softlabel_ood.data import input_pipeline, run_data
from softlabel_ood.training import (
    checkpointing,
    distributed,
    evaluation,
    run_model,
    run_start,
    runs_axis,
    train_feed,
    train_step,
)
from softlabel_ood.training.run_start import Member
from softlabel_ood.workdir import metrics_log, run_dir, saved_runs

MEGABYTE = 2**20
# How far the host may run ahead of the device, in calls: enough that an epoch's bookkeeping
# (evaluation, logs, the next index table) happens while queued steps run, few enough that the
# queued feeds stay small.
MAX_CALLS_IN_FLIGHT = 4
# A step's loss above this means the run has diverged (DESIGN.md §3): every loss of §7 starts
# near log K (at most 4.6 for 100 classes) and a training run only lowers it, while a diverged
# one reaches 1e16 and more with accuracy at chance.
MAX_LOSS = 1e4


class TrainingDivergedError(UserError):
    """The loss became NaN, infinite or larger than MAX_LOSS."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) while training, raised once the checkpoint writes in flight completed;
    `step` is the last step whose call the host had seen complete."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def chunk_plan(start_step: int, total_steps: int, steps_per_call: int,
               boundaries: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first step, number of steps) of every call from `start_step` to `total_steps`.

    A call never crosses a multiple of any period in `boundaries` (log, epoch, checkpoint), so
    the work due there happens between calls. The cuts depend on absolute step numbers only, so
    a run resumed from a checkpoint cuts its remaining steps as an uninterrupted run does.
    Yielded as the calls are made: a run of 2³¹ one-step calls holds no list of them.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")

    def calls():
        step = start_step
        while step < total_steps:
            end = min(total_steps, step + steps_per_call,
                      *((step // period + 1) * period for period in boundaries))
            yield step, end - step
            step = end
    return calls()


def read_means(calls: list[tuple[int, int, dict]], methods: Sequence[str]
               ) -> list[dict[str, float] | TrainingDivergedError]:
    """Each run's mean metrics over the calls (first step, num_steps, metrics [runs, per call]),
    or its TrainingDivergedError if its loss was NaN, infinite or above MAX_LOSS at some step."""
    values = jax.device_get([m for _, _, m in calls])
    counts = [n for _, n, _ in calls]
    per_step = {name: np.concatenate([v[name][:, :n] for n, v in zip(counts, values, strict=True)],
                                     axis=1) for name in train_step.METRICS}
    results = []
    for run, losses in enumerate(per_step["loss"]):
        diverged = ~(np.abs(losses) <= MAX_LOSS)  # also true for NaN
        if not diverged.any():
            results.append({name: float(np.mean(v[run])) for name, v in per_step.items()})
            continue
        bad = int(np.argmax(diverged))
        results.append(TrainingDivergedError(
            f"training diverged: method {methods[run]} loss is {losses[bad]:.4g} at step "
            f"{calls[0][0] + bad + 1} (the bound is {MAX_LOSS:g}); lower "
            f"config.learning_rate or check the data"))
    return results


class Population:
    """A population being trained: its program, feed, states, checkpoints and logs, and the
    calls dispatched but not yet read (each with the host work that waits for its results)."""

    def __init__(self, members: Sequence[Member], data: run_data.TrainingData, mesh, *,
                 teacher_model=None):
        self.members, self.mesh = list(members), mesh
        configs = [m.config for m in members]
        if len({run_model.population_key(c) for c in configs}) != 1:
            raise ValueError("the runs of a population must share their compiled program")
        self.config = config = configs[0]
        model = run_model.create_model(config)
        for m in members:
            m.workdir.mkdir(parents=True, exist_ok=True)
            run_start.check_resumable(m.config, m.workdir)
        self.ckpts = [checkpointing.Checkpoints(m.workdir / run_dir.CHECKPOINTS) for m in members]
        try:
            states, self.start_step = run_start.initial_states(configs, model, mesh, self.ckpts)
        except BaseException:
            self.close()
            raise
        num_train = len(data.train.labels)
        self.steps_per_epoch = input_pipeline.steps_per_epoch(num_train, config.batch_size)
        self.total_steps = run_model.total_steps(config, num_train)
        step_config, runs = run_model.step_config(config), len(members)
        per_call = run_model.steps_per_call(config)
        self.feed = train_feed.TrainFeed(
            data.train, global_batch_size=config.batch_size, seeds=[c.seed for c in configs],
            mesh=mesh, steps_per_call=per_call,
            max_device_bytes=config.device_data_max_mb * MEGABYTE, outliers=data.outliers,
            outlier_batch_size=config.oe.batch_size if data.outliers is not None else 0)
        self.program = train_step.make_train_program(
            model, step_config, mesh, runs=runs, steps_per_call=per_call,
            teacher_model=teacher_model)
        self.eval_program = evaluation.make_eval_program(
            model, step_config, mesh, runs=runs, batch_size=config.eval_batch_size,
            features=False)
        self.test = evaluation.resident(data.test, mesh, config.eval_batch_size)
        self.states = runs_axis.stack(states, mesh)
        self.hparams = runs_axis.stack([run_model.hyperparams(c, num_train_examples=num_train)
                                        for c in configs], mesh)
        self.teachers = (runs_axis.stack([m.teacher_variables for m in members], mesh)
                         if teacher_model is not None else None)
        self.plan = chunk_plan(self.start_step, self.total_steps, per_call,
                               (config.log_every_steps, self.steps_per_epoch,
                                config.checkpoint_every_steps))
        self.writer = distributed.is_writer()
        if self.writer:  # first: a disk too full for it fails before any log is open
            for m in members:
                saved_runs.write_config(m.workdir, m.config)
        self.logs = [metrics_log.MetricsLog(m.workdir, resume_step=self.start_step,
                                            enabled=self.writer) for m in members]
        self.bar = self._progress_bar()
        self.step_reached = self.start_step  # the last step whose call completed
        self.last_save = time.monotonic()
        self.diverged: dict[int, TrainingDivergedError] = {}
        self.pending: list[tuple[int, int, dict]] = []  # calls since the last log
        self.in_flight: collections.deque = collections.deque()

    def _progress_bar(self):
        name = self.members[0].workdir.name
        if len(self.members) > 1:  # named by its first run: worker processes share one log
            name = f"{name} and {len(self.members) - 1} more"
        if self.start_step and self.writer:
            tqdm.tqdm.write(f"{name}: resuming from step {self.start_step} of {self.total_steps}")
        return progress.bar(total=self.total_steps, initial=self.start_step, desc=name,
                            unit="step", disable=not self.writer)

    @functools.cache  # noqa: B019 (one population, a few distinct offsets and step counts)
    def _on_device(self, value: int) -> jax.Array:
        return jax.device_put(np.int32(value), NamedSharding(self.mesh, P()))

    def dispatch(self, chunk: train_feed.Chunk) -> None:
        """Queues one call, with the logs, evaluation and checkpoint due after it."""
        self.states, metrics = self.program(
            self.states, self.hparams, self.teachers, self.feed.data, chunk.feed,
            self._on_device(chunk.first), self._on_device(chunk.num_steps))
        self.pending.append((chunk.start, chunk.num_steps, metrics))
        done = chunk.start + chunk.num_steps
        work = [functools.partial(self._reached, done, chunk.num_steps)]
        epoch_end = done % self.steps_per_epoch == 0
        checkpoint_due = self._checkpoint_due(done)
        if done % self.config.log_every_steps == 0 or epoch_end or checkpoint_due:
            calls, self.pending = self.pending, []
            work.append(functools.partial(self._log_train, done, calls))
        if epoch_end:
            accuracies = evaluation.accuracy(self.eval_program, self.states.variables, self.test)
            work.append(functools.partial(self._log_epoch, done, accuracies))
        self.in_flight.append((metrics, work))
        while len(self.in_flight) > MAX_CALLS_IN_FLIGHT:
            self._finish_oldest()  # older calls' host work, while newer calls keep the device busy
        if checkpoint_due:
            self.drain()  # the loss check comes before the checkpoint
            self.save_checkpoints()

    def _reached(self, step: int, num_steps: int) -> None:
        self.step_reached = step
        self.bar.update(num_steps)

    def _checkpoint_due(self, done: int) -> bool:
        """At the last step; at a multiple of checkpoint_every_steps once checkpoint_min_seconds
        have passed since the last save. Every process decides as process 0 does: a save is a
        collective operation."""
        if done == self.total_steps:
            return True
        if done % self.config.checkpoint_every_steps:
            return False
        waited = time.monotonic() - self.last_save >= self.config.checkpoint_min_seconds
        if jax.process_count() > 1:
            waited = bool(multihost_utils.broadcast_one_to_all(np.bool_(waited)))
        return waited

    def _finish_oldest(self) -> None:
        metrics, work = self.in_flight.popleft()
        jax.block_until_ready(metrics)
        for item in work:
            item()

    def drain(self) -> None:
        while self.in_flight:
            self._finish_oldest()

    def _log_train(self, step: int, calls) -> None:
        for r, means in enumerate(read_means(calls, [m.config.method for m in self.members])):
            if isinstance(means, TrainingDivergedError):
                if r not in self.diverged and self.writer and len(self.members) > 1:
                    tqdm.tqdm.write(f"{self.members[r].workdir}: {means}; the run stops here, "
                                    f"the others go on", file=sys.stderr)
                self.diverged.setdefault(r, means)
            elif r not in self.diverged:
                self.logs[r].write(step, {f"train_{k}": v for k, v in means.items()})
        if len(self.members) == 1 and not self.diverged:
            self.bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")

    def _log_epoch(self, step: int, accuracies: Callable[[], list[float]]) -> None:
        for r, accuracy in enumerate(accuracies()):
            if r not in self.diverged:
                self.logs[r].write(step, {"epoch": step // self.steps_per_epoch,
                                          "test_accuracy": accuracy})

    def state_of(self, run: int) -> train_step.TrainState:
        """Run `run`'s state, replicated on the mesh as a run alone holds it."""
        return runs_axis.member(self.states, run, self.mesh)

    def save_checkpoints(self) -> None:
        for r, c in enumerate(self.ckpts):
            if r not in self.diverged:
                c.save(self.state_of(r))
        self.last_save = time.monotonic()

    @property
    def all_diverged(self) -> bool:
        return len(self.diverged) == len(self.members)

    def results(self) -> list[train_step.TrainState | TrainingDivergedError]:
        return [self.diverged.get(r) or self.state_of(r) for r in range(len(self.members))]

    def close(self) -> None:
        # Also on a diverged loss: the last good checkpoint's write completes, files are closed.
        for closing in (getattr(self, "bar", None), *getattr(self, "logs", ()), *self.ckpts):
            if closing is not None:
                closing.close()


def train_population(members: Sequence[Member], data: run_data.TrainingData, mesh, *,
                     teacher_model=None) -> list[train_step.TrainState | TrainingDivergedError]:
    """Trains (or resumes) the runs of a population together, each to its last step.

    The runs must agree on everything that shapes the compiled program (`run_model.
    population_key`); they differ in seed, hyperparameters and teacher. Every run writes its
    own config.json, checkpoints, metrics.jsonl and TensorBoard events, as if trained alone.
    Returns each run's final state (replicated on `mesh`), or its TrainingDivergedError.
    """
    population = Population(members, data, mesh, teacher_model=teacher_model)
    try:
        for chunk in population.feed.chunks(population.plan):
            population.dispatch(chunk)
            if population.all_diverged:
                break  # nothing left to train
        population.drain()
        population.save_checkpoints()  # a run with no steps left still has its final checkpoint
    except KeyboardInterrupt:
        # Raised after close(), which completes the checkpoint writes in flight: the next run
        # resumes from the latest of them.
        raise TrainingInterrupted(population.step_reached) from None
    finally:
        population.close()
    return population.results()


def train(config, workdir: epath.PathLike, data: run_data.TrainingData, mesh, *,
          teacher=(None, None)) -> train_step.TrainState:
    """Trains the run in `workdir` alone (a population of one) to its last step, resuming from
    its latest checkpoint; `teacher` is `run_start.load_teacher(config, mesh)` for kd and
    kd_incorrect. Raises TrainingDivergedError if the loss diverges."""
    teacher_model, teacher_variables = teacher
    result, = train_population([Member(config, epath.Path(workdir), teacher_variables)], data,
                               mesh, teacher_model=teacher_model)
    if isinstance(result, TrainingDivergedError):
        raise result
    return result
