"""A run's directory as other code sees it: its stored config, whether it finished, its model.

    <workdir>/config.json     the resolved config (written when the run starts)
    <workdir>/checkpoints/    orbax checkpoints
    <workdir>/predictions/    the predictions directory (DESIGN.md §5)
    <workdir>/DONE            written last: the run trained to the end and wrote its predictions
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from softlabel_ood import atomic_files, checkpointing, datasets, models, run_model
from softlabel_ood.cli_errors import UserError

CONFIG_FILE = "config.json"
DONE_FILE = "DONE"


class RunError(UserError):
    """Another run's directory cannot serve as a teacher or a starting point."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The run's resolved config as JSON data, without the family's experiment grid."""
    data = json.loads(config.to_json_best_effort())
    data.pop("grid", None)
    return data


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
    path = epath.Path(workdir) / CONFIG_FILE
    text = json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n"
    atomic_files.write_text_atomically(path, text)


def read_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{path}: missing; {workdir} is not a run directory")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    config = ml_collections.ConfigDict(_lists_to_tuples(data))
    # Runs of earlier versions name only the paths they set; every name is a field now.
    with config.unlocked():
        for name in datasets.NAMES:
            if name not in config.dataset_paths:
                config.dataset_paths[name] = ""
    return config


def _lists_to_tuples(value):
    # JSON has no tuples; config files use them, and only tuples can be overridden by flags.
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def is_finished(workdir: epath.PathLike) -> bool:
    return (epath.Path(workdir) / DONE_FILE).exists()


def mark_finished(workdir: epath.PathLike) -> None:
    atomic_files.write_text_atomically(epath.Path(workdir) / DONE_FILE, "finished\n")


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
