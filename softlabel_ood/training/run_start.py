"""Where each run of a population starts: a fresh state, its latest checkpoint, or a finished
run's weights (OE fine-tuning); its KD teacher; and the check that binds a workdir to its run."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from etils import epath

from softlabel_ood import methods
from softlabel_ood.cli_errors import UserError
from softlabel_ood.configs import config_validation
from softlabel_ood.training import checkpointing, run_model, saved_models, train_step
from softlabel_ood.workdir import run_dir, saved_runs


@dataclasses.dataclass
class Member:
    """One run of a population: its config, its directory and its KD teacher's variables."""

    config: ml_collections.ConfigDict
    workdir: epath.Path
    teacher_variables: Any = None


def load_teacher(config: ml_collections.ConfigDict, mesh):
    """(model, variables) of the run's KD teacher, or (None, None) for methods without one."""
    if not methods.needs_teacher(config.method):
        return None, None
    model, variables, _ = saved_models.load_finished_model(
        config.kd.teacher_workdir, mesh, role="config.kd.teacher_workdir", dataset=config.dataset)
    return model, variables


def check_resumable(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
    """A checkpoint may only be resumed by the config that made it (up to evaluation fields)."""
    if not (workdir / run_dir.CONFIG).exists() or \
            not checkpointing.has_checkpoint(workdir / run_dir.CHECKPOINTS):
        return  # a start that failed before its first checkpoint does not bind the workdir
    stored = saved_runs.config_to_dict(saved_runs.read_config(workdir))
    current = saved_runs.config_to_dict(config)
    changed = [name for name in config_validation.changed_fields(stored, current)
               if name.split(".")[0] not in config_validation.RESUMABLE_CHANGES
               and not _unread_and_added_later(name, stored, config.method)]
    if changed:
        raise config_validation.ConfigError(
            f"{workdir / run_dir.CONFIG}: this workdir was trained with other values of "
            f"{', '.join(changed)}; use a new workdir")


def _unread_and_added_later(name: str, stored: dict, method: str) -> bool:
    """Whether `name` is a method's hyperparameter (or a group of them) that the stored config,
    of an earlier version, lacks and `method` does not read: it enters the step at its neutral
    value, as before it existed, so the checkpoint resumes."""
    fields = [f for f in methods.hyperparameters() if f == name or f.startswith(name + ".")]
    value = stored
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            return bool(fields) and not any(methods.reads(method, f) for f in fields)
        value = value[key]
    return False


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


def initial_states(configs, model, mesh, ckpts) -> tuple[list[train_step.TrainState], int]:
    """Each run's state at the population's common start step, and that step.

    The runs of a population save their checkpoints at the same steps, but a killed process
    may have finished writing some of the latest ones and not others, and a grid cut into
    other populations may have trained some runs further. Every run then resumes from the
    latest step that all of them saved, and checkpoints past it are dropped: they will be
    written again, identical, since a run computes the same steps in any population.
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
        return initial_states(configs, model, mesh, ckpts)
    return states, start
