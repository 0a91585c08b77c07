"""The model of a saved run, restored read-only: a KD teacher, an OE fine-tuning start, predict."""

from __future__ import annotations

import ml_collections
from etils import epath

from softlabel_ood import models
from softlabel_ood.data import datasets
from softlabel_ood.training import checkpointing, run_model
from softlabel_ood.workdir.saved_runs import DONE_FILE, RunError, is_finished, read_config


def load_finished_model(workdir: str, mesh, *, role: str, dataset: str):
    """(model, variables, config) of a finished run, restored read-only onto `mesh`.

    `role` names the config field that pointed here, so that errors say which field to fix.
    """
    if not epath.Path(workdir).exists():
        raise RunError(f"{role}: {workdir} does not exist")
    config = read_config(workdir)
    if not is_finished(workdir):
        raise RunError(f"{role}: {workdir} has not finished training (no {DONE_FILE} file)")
    # The same dataset means the same classes in the same order; a name check is the whole check.
    if config.dataset != dataset:
        raise RunError(f"{role}: {workdir} was trained on {config.dataset!r}, this run uses "
                       f"{dataset!r}")
    # The checkpoint, not its config, says how many outputs the model has; it must be one per
    # class of this run's dataset (a checkpoint written under another class count would
    # otherwise fail deep inside the restore).
    num_classes = datasets.info(dataset).num_classes
    outputs = stored_num_outputs(workdir)
    if outputs != num_classes:
        raise RunError(f"{role}: {workdir} holds a model with {outputs} outputs, this run's "
                       f"dataset {dataset!r} has {num_classes} classes")
    model, variables = restore_model(config, workdir, mesh)
    return model, variables, config


def stored_num_outputs(workdir: epath.PathLike) -> int:
    """The number of outputs (classes) of the model in a run's latest checkpoint."""
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / "checkpoints", read_only=True)
    try:
        shapes = ckpts.stored_shapes()
    finally:
        ckpts.close()
    return models.classifier_layer(shapes["params"])["bias"][-1]


def restore_model(config: ml_collections.ConfigDict, workdir: epath.PathLike, mesh):
    """(model, variables) of `config` from the latest checkpoint in `workdir`, finished or not;
    the variables ({"params", "batch_stats"}) replicated on `mesh`."""
    model = run_model.create_model(config)
    like = run_model.create_state(config, model, mesh).variables
    ckpts = checkpointing.Checkpoints(epath.Path(workdir) / "checkpoints", read_only=True)
    try:
        return model, ckpts.restore_variables(like)
    finally:
        ckpts.close()
