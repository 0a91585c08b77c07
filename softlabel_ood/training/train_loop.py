"""The train command's loop: a run's steps in calls of many steps, with logs, evaluation and
checkpoints between calls.

`train(config, workdir, data, mesh)` trains (or resumes) one run on arrays already in memory and
returns its final state; `train.train_and_evaluate` loads the data and writes the predictions
around it, and `benchmarks/train_loop.py` times it on synthetic arrays.

How the host keeps out of the accelerator's way:
- the steps between two boundaries (a log, an epoch's evaluation, a checkpoint) run as calls of
  up to `config.steps_per_call` compiled steps (`chunk_plan`), fed from device-resident arrays
  (`train_feed`);
- a call is dispatched before the host reads the metrics of earlier calls (JAX dispatches
  asynchronously), so logging, the loss check and evaluation bookkeeping overlap the queued
  calls; the host waits only for results it needs, and stays at most `MAX_CALLS_IN_FLIGHT`
  calls ahead of the device;
- metrics stay on the device until a log boundary.
The loss is checked for NaN or infinity at every log and before every checkpoint, so a diverged
run never saves a checkpoint past the divergence.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import methods, progress
from softlabel_ood.cli_errors import UserError
from softlabel_ood.configs import config_validation
from softlabel_ood.data import input_pipeline, run_data
from softlabel_ood.training import (
    checkpointing,
    distributed,
    run_model,
    saved_models,
    train_feed,
    train_step,
)
from softlabel_ood.workdir import metrics_log, saved_runs

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


def chunk_plan(start_step: int, total_steps: int, steps_per_call: int,
               boundaries: Sequence[int]) -> list[tuple[int, int]]:
    """(first step, number of steps) of every call from `start_step` to `total_steps`.

    A call never crosses a multiple of any period in `boundaries` (log, epoch, checkpoint), so
    the work due there happens between calls. The cuts depend on absolute step numbers only, so
    a run resumed from a checkpoint cuts its remaining steps as an uninterrupted run does.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    plan, step = [], start_step
    while step < total_steps:
        end = min(total_steps, step + steps_per_call,
                  *((step // period + 1) * period for period in boundaries))
        plan.append((step, end - step))
        step = end
    return plan


@jax.jit
def _count_correct(logits, labels, mask):
    # logits [B, K], or [runs, B, K] for a population: one count per run.
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask, axis=-1)


def evaluate_accuracy(eval_fn, variables, ds, mesh, batch_size: int
                      ) -> Callable[[], list[float]]:
    """Dispatches the evaluation of `ds` by `eval_fn` (`train_step.make_eval_step`, or
    `make_population_eval_step` with stacked variables); the returned function waits for it and
    gives each run's accuracy."""
    correct = jnp.zeros((), jnp.int32)
    for batch in input_pipeline.eval_batches(ds, global_batch_size=batch_size, mesh=mesh):
        out = eval_fn(variables, batch)
        correct = correct + _count_correct(out["logits"], batch["label"], batch["mask"])
    return lambda: [int(c) / len(ds.labels) for c in np.atleast_1d(jax.device_get(correct))]


class _StepMetrics:
    """The metrics of the calls since the last log, kept on the device until they are read."""

    def __init__(self, methods: Sequence[str] = ()):
        self._methods = list(methods)  # each run's method, named when its loss diverges
        # (first step, num_steps, {name: float32 [steps_per_call] or [runs, steps_per_call]})
        self._calls = []

    def add(self, start: int, num_steps: int, metrics: dict) -> None:
        self._calls.append((start, num_steps, metrics))

    def take(self) -> Callable[[], list[dict[str, float] | TrainingDivergedError]]:
        """Hands over the pending calls; the returned function reads them and gives each run's
        means, or its TrainingDivergedError if its loss was NaN or infinite at some step."""
        calls, self._calls = self._calls, []

        def read() -> list[dict[str, float] | TrainingDivergedError]:
            values = jax.device_get([m for _, _, m in calls])
            counts = [n for _, n, _ in calls]
            # [runs, steps since the last log] per name; a run trained alone is one row.
            per_step = {name: np.concatenate([np.atleast_2d(v[name])[:, :n]
                                              for n, v in zip(counts, values, strict=True)],
                                             axis=1)
                        for name in train_step.METRICS}
            results = []
            for run, losses in enumerate(per_step["loss"]):
                diverged = ~(np.abs(losses) <= MAX_LOSS)  # also true for NaN
                if not diverged.any():
                    results.append({name: float(np.mean(v[run])) for name, v in per_step.items()})
                    continue
                bad = int(np.argmax(diverged))
                method = self._methods[run] if run < len(self._methods) else "?"
                results.append(TrainingDivergedError(
                    f"training diverged: method {method} loss is {losses[bad]:.4g} at step "
                    f"{calls[0][0] + bad + 1} (the bound is {MAX_LOSS:g}); lower "
                    f"config.learning_rate or check the data"))
            return results

        return read


def _check_resumable(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """A checkpoint may only be resumed by the config that made it (up to evaluation fields)."""
    if not (workdir / saved_runs.CONFIG_FILE).exists() or \
            not checkpointing.has_checkpoint(workdir / "checkpoints"):
        return  # a start that failed before its first checkpoint does not bind the workdir
    stored = saved_runs.config_to_dict(saved_runs.read_config(workdir))
    current = saved_runs.config_to_dict(config)
    changed = [name for name in config_validation.changed_fields(stored, current)
               if name.split(".")[0] not in config_validation.RESUMABLE_CHANGES]
    if changed:
        raise config_validation.ConfigError(
            f"{workdir / saved_runs.CONFIG_FILE}: this workdir was trained with other values of "
            f"{', '.join(changed)}; use a new workdir")


def _initial_state(config, model, mesh, ckpts) -> train_step.TrainState:
    state = run_model.create_state(config, model, mesh)
    if ckpts.latest_step() is not None:
        try:
            return ckpts.restore(state)
        except UserError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            # The model fits (the config check passed), so the layout is another version's.
            raise saved_runs.RunError(
                f"{ckpts.directory}: its latest checkpoint's optimizer state does not fit this "
                f"version's train state ({type(e).__name__}), so it cannot be resumed; train in "
                f"a new workdir (its model can still serve as a teacher or be predicted)"
            ) from None
    if methods.reads(config.method, "oe.finetune_from") and config.oe.finetune_from:
        # OE fine-tuning starts from the finished run's weights with a fresh optimizer and schedule.
        _, variables, start_config = saved_models.load_finished_model(
            config.oe.finetune_from, mesh, role="config.oe.finetune_from", dataset=config.dataset)
        if start_config.model != config.model:
            raise config_validation.ConfigError(
                f"config.oe.finetune_from: {config.oe.finetune_from} is a {start_config.model}, "
                f"this run a {config.model}")
        return state.replace(**variables)
    return state


def load_teacher(config: ml_collections.ConfigDict, mesh):
    """(model, variables) of the run's KD teacher, or (None, None) for methods without one."""
    if not methods.needs_teacher(config.method):
        return None, None
    model, variables, _ = saved_models.load_finished_model(
        config.kd.teacher_workdir, mesh, role="config.kd.teacher_workdir", dataset=config.dataset)
    return model, variables


@dataclasses.dataclass
class Member:
    """One run of a population: its config, its directory and its KD teacher's variables."""

    config: ml_collections.ConfigDict
    workdir: epath.Path
    teacher_variables: Any = None


def train(config: ml_collections.ConfigDict, workdir: epath.PathLike,
          data: run_data.TrainingData, mesh, *, teacher=(None, None)) -> train_step.TrainState:
    """Trains the run in `workdir` to its last step (resuming from its latest checkpoint).

    `teacher` is `load_teacher(config, mesh)` for kd and kd_incorrect. Writes config.json,
    checkpoints, metrics.jsonl and TensorBoard events (process 0); returns the final state.
    Raises TrainingDivergedError if the loss becomes NaN or infinite.
    """
    teacher_model, teacher_variables = teacher
    result, = train_population([Member(config, epath.Path(workdir), teacher_variables)], data,
                               mesh, teacher_model=teacher_model)
    if isinstance(result, TrainingDivergedError):
        raise result
    return result


def train_population(members: Sequence[Member], data: run_data.TrainingData, mesh, *,
                     teacher_model=None) -> list[train_step.TrainState | TrainingDivergedError]:
    """Trains (or resumes) the runs of a population together, each to its last step.

    The runs must agree on everything that shapes the compiled program (`run_model.
    population_key`); they differ in seed, hyperparameters and teacher. One run takes the
    single-run program (`make_train_steps`), several the stacked one (`make_population_steps`)
    on the mesh's "runs" axis. Every run writes its own config.json, checkpoints, metrics.jsonl
    and TensorBoard events, as if trained alone. A run whose loss becomes NaN or infinite stops
    writing (its last good checkpoint stays) and its result is the TrainingDivergedError; the
    others go on, and training ends once every run has diverged. Returns each run's final state
    (replicated, as a run trained alone holds it).
    """
    configs = [m.config for m in members]
    keys = {run_model.population_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError(f"the runs of a population must share their compiled program, got "
                         f"{len(keys)} different ones")
    config = configs[0]
    stacked = len(members) > 1
    model = run_model.create_model(config)
    for m in members:
        m.workdir.mkdir(parents=True, exist_ok=True)
        _check_resumable(m.config, m.workdir)
    ckpts = [checkpointing.Checkpoints(m.workdir / "checkpoints") for m in members]
    try:
        states, start_step = _initial_states(configs, model, mesh, ckpts)
    except BaseException:
        for c in ckpts:
            c.close()
        raise
    if distributed.is_writer():
        for m in members:
            saved_runs.write_config(m.workdir, m.config)

    num_train = len(data.train.labels)
    per_call = run_model.steps_per_call(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(num_train, config.batch_size)
    total_steps = run_model.total_steps(config, num_train)
    replicated = NamedSharding(mesh, P())
    hparams = [run_model.hyperparams(c, num_train_examples=num_train) for c in configs]
    step_config = run_model.step_config(config, population=stacked)
    outlier_batch = config.oe.batch_size if data.outliers is not None else 0
    if stacked:
        feed = train_feed.PopulationFeed(
            data.train, global_batch_size=config.batch_size, seeds=[c.seed for c in configs],
            mesh=mesh, outliers=data.outliers, outlier_batch_size=outlier_batch)
        run_steps = train_step.make_population_steps(
            model, step_config, mesh, steps_per_call=per_call, population=len(members),
            teacher_model=teacher_model)
        state = train_step.stack(states, mesh)
        hparams = train_step.stack(hparams, mesh)
        teacher_variables = (train_step.stack([m.teacher_variables for m in members], mesh)
                             if teacher_model is not None else None)
        eval_fn = train_step.make_population_eval_step(model, step_config, mesh)
    else:
        feed = train_feed.TrainFeed(
            data.train, global_batch_size=config.batch_size, seed=config.seed, mesh=mesh,
            steps_per_call=per_call, max_device_bytes=config.device_data_max_mb * MEGABYTE,
            outliers=data.outliers, outlier_batch_size=outlier_batch)
        run_steps = train_step.make_train_steps(
            model, step_config, mesh, steps_per_call=per_call, resident=feed.resident,
            teacher_model=teacher_model)
        state, = states
        hparams = jax.device_put(hparams[0], replicated)
        teacher_variables = members[0].teacher_variables
        eval_fn = train_step.make_eval_step(model, step_config, mesh)

    plan = chunk_plan(start_step, total_steps, per_call,
                      (config.log_every_steps, steps_per_epoch, config.checkpoint_every_steps))
    writer = distributed.is_writer()
    logs = [metrics_log.MetricsLog(m.workdir, resume_step=start_step, enabled=writer)
            for m in members]
    name = members[0].workdir.name
    if stacked:  # named by its first run: populations in other worker processes share the log
        name = f"{name} and {len(members) - 1} more"
    if start_step and writer:
        tqdm.tqdm.write(f"{name}: resuming from step {start_step} of {total_steps}")
    bar = progress.bar(total=total_steps, initial=start_step, desc=name, unit="step",
                    disable=not writer)
    pending = _StepMetrics([c.method for c in configs])
    diverged: dict[int, TrainingDivergedError] = {}
    # Calls dispatched but not yet read, each with the host work that waits for its results.
    in_flight: collections.deque[tuple[dict, list[Callable[[], None]]]] = collections.deque()

    def finish_oldest():
        metrics, work = in_flight.popleft()
        jax.block_until_ready(metrics)
        for item in work:
            item()

    def member_state(r: int):
        return train_step.member(state, r, mesh) if stacked else state

    def save_checkpoints():
        for r, c in enumerate(ckpts):
            if r not in diverged:
                c.save(member_state(r))

    @functools.cache
    def on_device(value: int) -> jax.Array:
        # The few distinct row offsets and step counts, each copied to the devices once.
        return jax.device_put(np.int32(value), replicated)

    def log_train(step: int, read_means):
        def write():
            for r, means in enumerate(read_means()):
                if isinstance(means, TrainingDivergedError):
                    if r not in diverged and writer and stacked:
                        tqdm.tqdm.write(f"{members[r].workdir}: {means}; the run stops here, "
                                        f"the others go on", file=sys.stderr)
                    diverged.setdefault(r, means)
                elif r not in diverged:
                    logs[r].write(step, {f"train_{k}": v for k, v in means.items()})
            if not stacked and not diverged:
                bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
        return write

    def log_epoch(step: int, accuracies):
        def write():
            for r, accuracy in enumerate(accuracies()):
                if r not in diverged:
                    logs[r].write(step, {"epoch": step // steps_per_epoch,
                                         "test_accuracy": accuracy})
        return write

    try:
        for chunk in feed.chunks(plan):
            state, metrics = run_steps(state, hparams, teacher_variables, feed.data, chunk.feed,
                                       on_device(chunk.first), on_device(chunk.num_steps))
            pending.add(chunk.start, chunk.num_steps, metrics)
            done = chunk.start + chunk.num_steps
            work = [lambda n=chunk.num_steps: bar.update(n)]
            epoch_end = done % steps_per_epoch == 0
            checkpoint_due = done % config.checkpoint_every_steps == 0 or done == total_steps
            if done % config.log_every_steps == 0 or epoch_end or checkpoint_due:
                work.append(log_train(done, pending.take()))
            if epoch_end:
                work.append(log_epoch(done, evaluate_accuracy(
                    eval_fn, state.variables, data.test, mesh, config.eval_batch_size)))
            in_flight.append((metrics, work))
            # Finish older calls while newer ones keep the device busy.
            while len(in_flight) > MAX_CALLS_IN_FLIGHT:
                finish_oldest()
            if checkpoint_due:
                while in_flight:  # the loss check comes before the checkpoint
                    finish_oldest()
                save_checkpoints()
            if len(diverged) == len(members):
                break  # nothing left to train
        while in_flight:
            finish_oldest()
        save_checkpoints()  # A run with no training steps left still has its final checkpoint.
    finally:
        # Also on a diverged loss: the last good checkpoint's write completes, files are closed.
        bar.close()
        for log in logs:
            log.close()
        for c in ckpts:
            c.close()
    return [diverged.get(r) or member_state(r) for r in range(len(members))]


def _initial_states(configs, model, mesh, ckpts) -> tuple[list[train_step.TrainState], int]:
    """Each run's state at the population's common start step, and that step.

    The runs of a population save their checkpoints at the same steps, but a killed process
    may have finished writing some of the latest ones and not others. Every run then resumes
    from the latest step that all of them saved, and checkpoints past it are dropped: they
    will be written again, identical, since the population recomputes the same steps.
    """
    latest = [c.latest_step() or 0 for c in ckpts]
    start = min(latest)
    if start and not all(start in c.all_steps() for c in ckpts):
        start = 0  # a run no longer holds the common step: the population starts again
    states = []
    for config, c in zip(configs, ckpts, strict=True):
        if c.latest_step() is not None and c.latest_step() > start:
            c.drop_after(start)
        states.append(_initial_state(config, model, mesh, c))
    # A damaged checkpoint is set aside and the one before it restored (checkpointing): the
    # population then starts again from the earliest step that every run restored.
    if any(int(jax.device_get(s.step)) != start for s in states):
        return _initial_states(configs, model, mesh, ckpts)
    return states, start
