"""Runs a trained model over every split and writes the predictions directory (DESIGN.md §5).

    python -m softlabel_ood.predict --workdir=<dir> [--config.<field>=<value> ...] [--replace_ood]

The config is the run's stored `config.json`, and the model its latest checkpoint. Overrides may
change only what is evaluated (ood_datasets, dataset_paths, data_dir, num_ood_examples,
eval_batch_size); a field that defines the trained run is refused with exit code 2.
`--config.ood_datasets=...` adds OOD sets to those the predictions directory already has;
with --replace_ood the list replaces them, and the files of the sets left out go with the old
directory, which the new one replaces in one rename.
"""

from __future__ import annotations

import copy
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from jax.experimental import multihost_utils

from softlabel_ood import cli_errors, command_line, models, progress
from softlabel_ood.configs import config_validation
from softlabel_ood.data import datasets, input_pipeline, run_data
from softlabel_ood.training import (
    compilation_cache,
    distributed,
    odin,
    run_model,
    saved_models,
    train_step,
)
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import predictions, saved_runs


def _outputs(eval_fn, variables, ds: datasets.ArrayDataset, mesh, batch_size: int,
             odin_fn=None) -> dict[str, np.ndarray]:
    """Logits, features and (with `odin_fn`) ODIN scores of every example of `ds`, in order,
    on every process."""
    parts = {"logits": [], "features": [], "odin": [], "mask": []}
    for batch in input_pipeline.eval_batches(ds, global_batch_size=batch_size, mesh=mesh):
        # The ODIN step returns the eval step's outputs too, from the same forward pass.
        out = dict((odin_fn or eval_fn)(variables, batch), mask=batch["mask"])
        # Each process holds only its rows of the global batch; gather them (a no-op on one host).
        gathered = multihost_utils.process_allgather(out, tiled=True)
        for key, value in gathered.items():
            parts[key].append(value)
    keep = np.concatenate(parts.pop("mask"))
    if keep.sum() != len(ds.labels):
        raise RuntimeError(f"{ds.name}/{ds.split}: evaluation returned {keep.sum()} rows for "
                           f"{len(ds.labels)} examples")
    return {key: np.concatenate(values)[keep].astype(np.float32)
            for key, values in parts.items() if values}


def write_predictions(config: ml_collections.ConfigDict, workdir: epath.PathLike, model,
                      variables, mesh, *,
                      id_sets: dict[str, datasets.ArrayDataset] | None = None) -> None:
    """Evaluates the ID test and train sets and every OOD set; process 0 writes the files.

    `id_sets` ({"train": ..., "test": ...}) are the ID splits when the caller has them in memory
    already, as training does; otherwise they are loaded.
    """
    step_config = run_model.step_config(config)
    eval_fn = train_step.make_eval_step(model, step_config, mesh)
    # Runs saved before ODIN existed have no odin_pairs in their stored config: the defaults.
    odin_pairs = tuple((float(t), float(e)) for t, e in config.get("odin_pairs",
                                                                   odin.DEFAULT_PAIRS))
    odin_fn = odin.make_odin_step(model, step_config, mesh, odin_pairs) if odin_pairs else None
    id_sets = id_sets or {split: run_data.load_id(config, split) for split in ("test", "train")}
    sets = {
        f"{config.dataset}_test": ("id_test", id_sets["test"]),
        f"{config.dataset}_train": ("id_train", id_sets["train"]),
    }
    sets.update({name: ("ood_test", ds) for name, ds in run_data.load_ood(config).items()})
    splits = {}
    # The run's name on the bar: a grid's worker processes share one log.
    bar = progress.bar(sets.items(), desc=f"{epath.Path(workdir).name} predictions", unit="split",
                    disable=not distributed.is_writer())
    for name, (role, ds) in bar:
        bar.set_postfix_str(name)
        out = _outputs(eval_fn, variables, ds, mesh, config.eval_batch_size, odin_fn)
        splits[name] = predictions.Split(role=role, logits=out["logits"],
                                         features=out["features"], odin=out.get("odin"),
                                         labels=ds.labels.astype(np.int32))
    kernel, bias = models.classifier_head(variables["params"])
    head = predictions.Head(np.asarray(kernel), np.asarray(bias))
    if distributed.is_writer():
        predictions.write(epath.Path(workdir) / "predictions", splits,
                          num_classes=datasets.info(config.dataset).num_classes,
                          run=predictions.RunSummary.from_config(config), head=head,
                          odin_pairs=odin_pairs)


def predict_from_checkpoint(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
    """Rewrites the predictions of the run in `workdir` from its latest checkpoint."""
    workdir_lock.check_workdir(workdir)
    config_validation.check_evaluation(config, num_devices=jax.device_count())
    run_data.check_available(config, training=False)
    mesh = train_step.data_mesh()
    with workdir_lock.hold(workdir, enabled=distributed.is_writer()):
        model, variables = saved_models.restore_model(config, workdir, mesh)
        write_predictions(config, workdir, model, variables, mesh)


def config_with_overrides(stored: ml_collections.ConfigDict,
                          requested: ml_collections.ConfigDict, workdir: epath.PathLike, *,
                          replace_ood: bool) -> ml_collections.ConfigDict:
    """The config `predict` runs: the stored one with the evaluation fields of `requested`.

    OOD sets are added to those of the existing predictions directory unless `replace_ood`.
    """
    changed = config_validation.changed_fields(saved_runs.config_to_dict(stored),
                                               saved_runs.config_to_dict(requested))
    for name in changed:
        if name.split(".")[0] not in config_validation.EVALUATION_FIELDS:
            raise config_validation.ConfigError(
                f"config.{name}: defines the trained run and cannot change in predict (only "
                f"{', '.join(sorted(config_validation.EVALUATION_FIELDS))} can); train a new "
                f"run for another value")
    config = copy.deepcopy(requested)
    if not replace_ood:
        existing = _existing_ood_sets(workdir, stored) or tuple(stored.ood_datasets)
        config.ood_datasets = existing + tuple(
            n for n in requested.ood_datasets if n not in existing)
    return config


def _existing_ood_sets(workdir: epath.PathLike,
                       stored: ml_collections.ConfigDict) -> tuple[str, ...]:
    # A manifest that does not validate, or that describes another run than config.json (edited
    # or copied), is refused rather than added to; --replace_ood does not read it, and
    # replaces the directory.
    directory = epath.Path(workdir) / "predictions"
    if not directory.exists():
        return ()
    manifest = predictions.read_manifest(directory)
    predictions.check_run_matches_config(
        directory / predictions.MANIFEST, manifest.get("run", {}),
        saved_runs.config_to_dict(stored), epath.Path(workdir) / saved_runs.CONFIG_FILE)
    return tuple(n for n, e in manifest["splits"].items() if e["role"] == "ood_test")


def _stored_config_from_argv(argv: list[str]) -> ml_collections.ConfigDict:
    # The overridable config is the run's own, so it must be read before the flags are parsed.
    for i, arg in enumerate(argv):
        workdir = arg.split("=", 1)[1] if arg.startswith("--workdir=") else (
            argv[i + 1] if arg == "--workdir" and i + 1 < len(argv) else None)
        if workdir is not None:
            workdir_lock.check_workdir(workdir)
            return saved_runs.read_config(workdir)
    raise saved_runs.RunError("--workdir is required")


def _help_lines() -> list[str]:
    try:
        config = _stored_config_from_argv(sys.argv)
    except cli_errors.UserError:
        from softlabel_ood.configs import config_base
        config = config_base.base_config(None)
    return command_line.field_lines(config, config_validation.EVALUATION_FIELDS)


@cli_errors.exit_on_user_error
def main(argv):
    command_line.refuse_positional_arguments(argv)
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    compilation_cache.enable()
    f = flags.FLAGS
    stored = saved_runs.read_config(f.workdir)
    config = config_with_overrides(stored, f.config, f.workdir, replace_ood=f.replace_ood)
    predict_from_checkpoint(config, f.workdir)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    flags.DEFINE_string("workdir", None, "A run directory written by softlabel_ood.train.")
    flags.DEFINE_bool("replace_ood", False,
                      "--config.ood_datasets replaces the OOD sets instead of adding to them.")
    distributed.define_flags()
    command_line.exit_on_help(sys.argv, __doc__,
                              ("workdir", "replace_ood", *distributed.FLAG_NAMES), _help_lines)
    try:
        stored_config = _stored_config_from_argv(sys.argv)
    except cli_errors.UserError as e:
        print(f"error: {cli_errors.one_line(e)}", file=sys.stderr)
        sys.exit(cli_errors.USAGE_EXIT_CODE)
    command_line.define_config_dict(stored_config, sys.argv)
    app.run(main, flags_parser=command_line.parse_flags)
