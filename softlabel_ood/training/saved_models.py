"""The model of a saved run, restored read-only: a KD teacher, an OE fine-tuning start, predict."""

from __future__ import annotations

import ml_collections
from etils import epath

from softlabel_ood import methods, models
from softlabel_ood.data import datasets
from softlabel_ood.training import checkpointing, run_model
from softlabel_ood.workdir import run_dir
from softlabel_ood.workdir.saved_runs import RunError, is_finished, read_config


def check_finished_run(workdir: str, *, role: str, dataset: str,
                       model: str | None = None) -> ml_collections.ConfigDict:
    """The stored config of the finished run in `workdir`, checked without reading a model array:
    RunError unless it trained on `dataset` (and is a `model`) and its latest checkpoint's
    classifier has one output per class of `dataset`.

    `role` names the config field that pointed here, so that errors say which field to fix.
    """
    path = epath.Path(workdir)
    if not path.exists():
        raise RunError(f"{role}: {workdir} does not exist")
    if not path.is_dir():
        raise RunError(f"{role}: {workdir} is a file, not a run directory")
    try:
        config = read_config(workdir)
    except RunError as e:
        raise RunError(f"{role}: {e}") from None
    if not is_finished(workdir):
        raise RunError(f"{role}: {workdir} has not finished training (no {run_dir.DONE} file)")
    # The same dataset means the same classes in the same order; a name check is the whole check.
    if config.get("dataset") != dataset:
        raise RunError(f"{role}: {workdir} was trained on {config.get('dataset')!r}, this run "
                       f"uses {dataset!r}")
    if model is not None and config.get("model") != model:
        raise RunError(f"{role}: {workdir} is a {config.get('model')}, this run a {model}")
    # The checkpoint, not its config, says how many outputs the model has; it must be one per
    # class of this run's dataset (a checkpoint written under another class count would
    # otherwise fail deep inside the restore).
    num_classes = datasets.info(dataset).num_classes
    try:
        outputs = stored_num_outputs(workdir)
    except checkpointing.DamagedCheckpointError as e:
        raise RunError(f"{role}: {e}") from None
    if outputs != num_classes:
        raise RunError(f"{role}: {workdir} holds a model with {outputs} outputs, this run's "
                       f"dataset {dataset!r} has {num_classes} classes")
    return config


def check_fine_tuning_start(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
    """The run that OE fine-tuning starts from (config.oe.finetune_from), checked before any data
    is loaded or file written. A run that holds a checkpoint of its own resumes from it and
    does not read its start again."""
    start = config.oe.finetune_from if methods.reads(config.method, "oe.finetune_from") else ""
    if start and not checkpointing.has_checkpoint(epath.Path(workdir) / run_dir.CHECKPOINTS):
        check_finished_run(start, role="config.oe.finetune_from", dataset=config.dataset,
                           model=config.model)


def load_finished_model(workdir: str, mesh, *, role: str, dataset: str):
    """(model, variables, config) of a finished run (`check_finished_run`), restored read-only
    onto `mesh`."""
    config = check_finished_run(workdir, role=role, dataset=dataset)
    try:
        model, variables = restore_model(config, workdir, mesh)
    except checkpointing.DamagedCheckpointError as e:
        raise RunError(f"{role}: {e}") from None
    return model, variables, config


def stored_num_outputs(workdir: epath.PathLike) -> int:
    """The number of outputs (classes) of the model in a run's latest checkpoint."""
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / run_dir.CHECKPOINTS, read_only=True)
    try:
        shapes = ckpts.stored_shapes()
    finally:
        ckpts.close()
    return models.classifier_layer(shapes["params"])["bias"][-1]


def latest_step(workdir: epath.PathLike) -> int:
    """The step of the latest checkpoint in `workdir`, read without reading an array;
    DamagedCheckpointError when there is none."""
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / run_dir.CHECKPOINTS, read_only=True)
    try:
        step = ckpts.latest_step()
    finally:
        ckpts.close()
    if step is None:
        raise checkpointing.DamagedCheckpointError(f"{ckpts.directory}: no checkpoint to restore")
    return step


def restore_model(config: ml_collections.ConfigDict, workdir: epath.PathLike, mesh, *,
                  step: int | None = None):
    """(model, variables) of `config` from the checkpoint of `step` in `workdir` (default: the
    latest), finished or not; the variables ({"params", "batch_stats"}) replicated on `mesh`."""
    model = run_model.create_model(config)
    like = run_model.create_state(config, model, mesh).variables
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / run_dir.CHECKPOINTS, read_only=True)
    try:
        return model, ckpts.restore_variables(like, step)
    finally:
        ckpts.close()


def restore_readable_model(config: ml_collections.ConfigDict, workdir: epath.PathLike, mesh
                           ) -> checkpointing.ReadableModel:
    """The variables of `config`'s model from the latest checkpoint in `workdir` whose model
    reads back (`Checkpoints.restore_readable_variables`), replicated on `mesh`: what predict
    writes its predictions from. Read-only, as `restore_model`."""
    like = run_model.create_state(config, run_model.create_model(config), mesh).variables
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / run_dir.CHECKPOINTS, read_only=True)
    try:
        return ckpts.restore_readable_variables(like)
    finally:
        ckpts.close()
