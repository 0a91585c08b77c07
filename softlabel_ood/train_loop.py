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
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import (
    checkpointing,
    config_validation,
    distributed,
    input_pipeline,
    metrics_log,
    progress,
    run_data,
    run_model,
    saved_runs,
    train_feed,
    train_step,
)

MEGABYTE = 2**20
# How far the host may run ahead of the device, in calls: enough that an epoch's bookkeeping
# (evaluation, logs, the next index table) happens while queued steps run, few enough that the
# queued feeds stay small.
MAX_CALLS_IN_FLIGHT = 4


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


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
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)


def evaluate_accuracy(eval_fn, variables, ds, mesh, batch_size: int) -> Callable[[], float]:
    """Dispatches the evaluation of `ds`; the returned function waits for it and gives accuracy."""
    correct = jnp.zeros((), jnp.int32)
    for batch in input_pipeline.eval_batches(ds, global_batch_size=batch_size, mesh=mesh):
        out = eval_fn(variables, batch)
        correct = correct + _count_correct(out["logits"], batch["label"], batch["mask"])
    return lambda: int(correct) / len(ds.labels)


class _StepMetrics:
    """The metrics of the calls since the last log, kept on the device until they are read."""

    def __init__(self):
        self._calls = []  # (first step, num_steps, {name: float32 [steps_per_call]})

    def add(self, start: int, num_steps: int, metrics: dict) -> None:
        self._calls.append((start, num_steps, metrics))

    def take(self) -> Callable[[], dict[str, float]]:
        """Hands over the pending calls; the returned function reads them and gives the means."""
        calls, self._calls = self._calls, []

        def read() -> dict[str, float]:
            values = jax.device_get([m for _, _, m in calls])
            counts = [n for _, n, _ in calls]
            per_step = {name: np.concatenate([v[name][:n] for n, v in zip(counts, values,
                                                                           strict=True)])
                        for name in train_step.METRICS}
            losses = per_step["loss"]
            if not np.isfinite(losses).all():
                bad = int(np.argmax(~np.isfinite(losses)))
                raise TrainingDivergedError(
                    f"loss is {losses[bad]} at step {calls[0][0] + bad + 1}; lower "
                    f"config.learning_rate or check the data")
            return {name: float(np.mean(v)) for name, v in per_step.items()}

        return read


def _check_resumable(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """A checkpoint may only be resumed by the config that made it (up to evaluation fields)."""
    if not (workdir / saved_runs.CONFIG_FILE).exists():
        return
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
        except (ValueError, KeyError, TypeError) as e:
            # The model fits (the config check passed), so the layout is another version's.
            raise saved_runs.RunError(
                f"{ckpts.directory}: its latest checkpoint's optimizer state does not fit this "
                f"version's train state ({type(e).__name__}), so it cannot be resumed; train in "
                f"a new workdir (its model can still serve as a teacher or be predicted)"
            ) from None
    if config.method == "oe" and config.oe.finetune_from:
        # OE fine-tuning starts from the finished run's weights with a fresh optimizer and schedule.
        _, variables, start_config = saved_runs.load_finished_model(
            config.oe.finetune_from, mesh, role="config.oe.finetune_from", dataset=config.dataset)
        if start_config.model != config.model:
            raise config_validation.ConfigError(
                f"config.oe.finetune_from: {config.oe.finetune_from} is a {start_config.model}, "
                f"this run a {config.model}")
        return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
    return state


def load_teacher(config: ml_collections.ConfigDict, mesh):
    """(model, variables) of the run's KD teacher, or (None, None) for methods without one."""
    if config.method not in train_step.TEACHER_METHODS:
        return None, None
    model, variables, _ = saved_runs.load_finished_model(
        config.kd.teacher_workdir, mesh, role="config.kd.teacher_workdir", dataset=config.dataset)
    return model, variables


def train(config: ml_collections.ConfigDict, workdir: epath.PathLike,
          data: run_data.TrainingData, mesh, *, teacher=(None, None)) -> train_step.TrainState:
    """Trains the run in `workdir` to its last step (resuming from its latest checkpoint).

    `teacher` is `load_teacher(config, mesh)` for kd and kd_incorrect. Writes config.json,
    checkpoints, metrics.jsonl and TensorBoard events (process 0); returns the final state.
    """
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_resumable(config, workdir)
    teacher_model, teacher_variables = teacher
    model = run_model.create_model(config)
    ckpts = checkpointing.Checkpoints(workdir / "checkpoints")
    state = _initial_state(config, model, mesh, ckpts)
    if distributed.is_writer():
        saved_runs.write_config(workdir, config)

    num_train = len(data.train.labels)
    per_call = run_model.steps_per_call(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(num_train, config.batch_size)
    total_steps = steps_per_epoch * config.num_epochs
    start_step = int(jax.device_get(state.step))
    replicated = NamedSharding(mesh, P())
    hparams = jax.device_put(run_model.hyperparams(config, num_train_examples=num_train),
                             replicated)
    feed = train_feed.TrainFeed(
        data.train, global_batch_size=config.batch_size, seed=config.seed, mesh=mesh,
        steps_per_call=per_call, max_device_bytes=config.device_data_max_mb * MEGABYTE,
        outliers=data.outliers,
        outlier_batch_size=config.oe.batch_size if data.outliers is not None else 0)
    step_config = run_model.step_config(config)
    run_steps = train_step.make_train_steps(
        model, step_config, mesh, steps_per_call=per_call, resident=feed.resident,
        teacher_model=teacher_model)
    eval_fn = train_step.make_eval_step(model, step_config, mesh)
    plan = chunk_plan(start_step, total_steps, per_call,
                      (config.log_every_steps, steps_per_epoch, config.checkpoint_every_steps))

    log = metrics_log.MetricsLog(workdir, resume_step=start_step, enabled=distributed.is_writer())
    if start_step and distributed.is_writer():
        tqdm.tqdm.write(f"{workdir}: resuming from step {start_step} of {total_steps}")
    bar = progress.bar(total=total_steps, initial=start_step, desc=workdir.name, unit="step",
                    disable=not distributed.is_writer())
    pending = _StepMetrics()
    # Calls dispatched but not yet read, each with the host work that waits for its results.
    in_flight: collections.deque[tuple[dict, list[Callable[[], None]]]] = collections.deque()

    def finish_oldest():
        metrics, work = in_flight.popleft()
        jax.block_until_ready(metrics)
        for item in work:
            item()

    @functools.cache
    def on_device(value: int) -> jax.Array:
        # The few distinct row offsets and step counts, each copied to the devices once.
        return jax.device_put(np.int32(value), replicated)

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
                work.append(_log_train(log, bar, done, pending.take()))
            if epoch_end:
                accuracy = evaluate_accuracy(eval_fn, state.variables, data.test, mesh,
                                             config.eval_batch_size)
                work.append(lambda done=done, accuracy=accuracy: log.write(
                    done, {"epoch": done // steps_per_epoch, "test_accuracy": accuracy()}))
            in_flight.append((metrics, work))
            # Finish older calls while newer ones keep the device busy.
            while len(in_flight) > MAX_CALLS_IN_FLIGHT:
                finish_oldest()
            if checkpoint_due:
                while in_flight:  # the loss check comes before the checkpoint
                    finish_oldest()
                ckpts.save(state)
        while in_flight:
            finish_oldest()
        ckpts.save(state)  # A run with no training steps left still has its final checkpoint.
    finally:
        # Also on a diverged loss: the last good checkpoint's write completes, files are closed.
        bar.close()
        log.close()
        ckpts.close()
    return state


def _log_train(log, bar, step: int, read_means: Callable[[], dict[str, float]]):
    def write():
        means = read_means()
        log.write(step, {f"train_{k}": v for k, v in means.items()})
        bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
    return write
