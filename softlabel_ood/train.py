"""Trains one run.

    python -m softlabel_ood.train --config=configs/<file>.py[:method] --workdir=<dir>


`train_and_evaluate(config, workdir)` is the whole job, so that tests, notebooks and the
reproduction driver call exactly what the command line runs. Running it again on the same
workdir resumes from the latest checkpoint, and a finished run only rewrites its predictions.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from softlabel_ood import (
    checkpointing,
    cli_errors,
    config_validation,
    distributed,
    input_pipeline,
    metrics_log,
    predict,
    run_data,
    run_model,
    saved_runs,
    train_step,
)

is_finished = saved_runs.is_finished


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


@jax.jit
def _count_correct(logits, labels, mask):
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)


def evaluate_accuracy(eval_fn, variables, ds, mesh, batch_size: int) -> float:
    correct = 0
    for batch in input_pipeline.eval_batches(ds, global_batch_size=batch_size, mesh=mesh):
        out = eval_fn(variables, batch)
        correct += int(_count_correct(out["logits"], batch["label"], batch["mask"]))
    return correct / len(ds.labels)


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


def _initial_state(config, model, mesh, ckpts, num_train_examples) -> train_step.TrainState:
    state = run_model.create_state(config, model, mesh, num_train_examples=num_train_examples)
    if ckpts.latest_step() is not None:
        return ckpts.restore(state)
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


class _MetricsBuffer:
    """Step metrics stay on device until a flush, so that steps are not serialised by reads."""

    def __init__(self):
        self._pending = []

    def add(self, metrics) -> None:
        self._pending.append(metrics)

    def flush(self, last_step: int) -> dict[str, float] | None:
        if not self._pending:
            return None
        values = jax.device_get(self._pending)
        first_step = last_step - len(values) + 1
        self._pending = []
        losses = np.array([v["loss"] for v in values])
        if not np.isfinite(losses).all():
            bad = first_step + int(np.argmax(~np.isfinite(losses)))
            raise TrainingDivergedError(
                f"loss is {losses[bad - first_step]} at step {bad}; lower config.learning_rate "
                f"or check the data")
        return {name: float(np.mean([v[name] for v in values])) for name in values[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    config_validation.check(config)
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_resumable(config, workdir)
    mesh = train_step.data_mesh()

    teacher_model, teacher_variables = None, None
    if config.method in train_step.TEACHER_METHODS:
        teacher_model, teacher_variables, _ = saved_runs.load_finished_model(
            config.kd.teacher_workdir, mesh, role="config.kd.teacher_workdir",
            dataset=config.dataset)

    train_ds = run_data.load_id(config, "train")
    test_ds = run_data.load_id(config, "test")
    outliers = run_data.load_outliers(config) if config.method == "oe" else None

    model = run_model.create_model(config)
    ckpts = checkpointing.Checkpoints(workdir / "checkpoints")
    state = _initial_state(config, model, mesh, ckpts, len(train_ds.labels))
    if distributed.is_writer():
        saved_runs.write_config(workdir, config)

    steps_per_epoch = input_pipeline.steps_per_epoch(len(train_ds.labels), config.batch_size)
    total_steps = steps_per_epoch * config.num_epochs
    start_step = int(jax.device_get(state.step))
    step_config = run_model.step_config(config)
    step_fn = train_step.make_train_step(model, step_config, mesh, teacher_model=teacher_model)
    eval_fn = train_step.make_eval_step(model, step_config, mesh)
    batches = input_pipeline.train_batches(
        train_ds, global_batch_size=config.batch_size, seed=config.seed, mesh=mesh,
        start_step=start_step, outliers=outliers,
        outlier_batch_size=config.oe.batch_size if outliers is not None else 0)
    log = metrics_log.MetricsLog(workdir, resume_step=start_step, enabled=distributed.is_writer())
    buffer = _MetricsBuffer()
    if start_step and distributed.is_writer():
        tqdm.tqdm.write(f"{workdir}: resuming from step {start_step} of {total_steps}")

    bar = tqdm.tqdm(range(start_step, total_steps), initial=start_step, total=total_steps,
                    desc=workdir.name, unit="step", disable=not distributed.is_writer())
    for step in bar:
        state, metrics = step_fn(state, next(batches), teacher_variables)
        buffer.add(metrics)
        done = step + 1
        epoch_end = done % steps_per_epoch == 0
        checkpoint_due = done % config.checkpoint_every_steps == 0 or done == total_steps
        # Flush (and so check for a non-finite loss) before any checkpoint is written.
        log_due = done % config.log_every_steps == 0 or epoch_end or checkpoint_due
        if log_due and (means := buffer.flush(done)) is not None:
            log.write(done, {f"train_{k}": v for k, v in means.items()})
            bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
        if epoch_end:
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            accuracy = evaluate_accuracy(eval_fn, variables, test_ds, mesh, config.eval_batch_size)
            log.write(done, {"epoch": done // steps_per_epoch, "test_accuracy": accuracy})
        if checkpoint_due:
            ckpts.save(state)
    bar.close()
    log.close()
    ckpts.save(state)  # A run with no training steps left still has its final checkpoint.
    ckpts.close()

    predict.write_predictions(config, workdir, model,
                              {"params": state.params, "batch_stats": state.batch_stats}, mesh)
    if distributed.is_writer():
        saved_runs.mark_finished(workdir)


@cli_errors.exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    try:
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    config_flags.DEFINE_config_file("config", None, "e.g. configs/cifar10.py:ls")
    flags.DEFINE_string("workdir", None, "Directory of this run (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
