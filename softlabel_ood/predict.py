"""Runs a trained model over every split and writes the predictions directory (DESIGN.md §5).

    python -m softlabel_ood.predict --workdir=<dir> [--config.ood_datasets=svhn,textures ...]

The config is the run's stored `config.json`; `--config.` overrides change what is evaluated
(for example more OOD sets), never the trained model, which comes from the latest checkpoint.
"""

from __future__ import annotations

import sys

import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from jax.experimental import multihost_utils
from ml_collections import config_flags

from softlabel_ood import (
    cli_errors,
    compilation_cache,
    datasets,
    distributed,
    input_pipeline,
    models,
    odin,
    predictions,
    progress,
    run_data,
    run_model,
    saved_runs,
    train_step,
)


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


def run_summary(config: ml_collections.ConfigDict) -> dict:
    return {
        "dataset": config.dataset, "model": config.model, "method": config.method,
        "alpha": config.label_smoothing, "teacher": config.kd.teacher_workdir,
        "kd_temperature": config.kd.temperature, "kd_weight": config.kd.weight,
        "oe_dataset": config.oe_dataset if config.method == "oe" else "",
        "oe_weight": config.oe.weight, "num_epochs": config.num_epochs, "seed": config.seed,
    }


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
    bar = progress.bar(sets.items(), desc="predictions", unit="split",
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
                          run=run_summary(config), head=head, odin_pairs=odin_pairs)


def predict_from_checkpoint(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
    run_data.check_available(config, training=False)
    mesh = train_step.data_mesh()
    model = run_model.create_model(config)
    variables = saved_runs.restore_variables(config, model, workdir, mesh)
    write_predictions(config, workdir, model, variables, mesh)


def _stored_config_from_argv(argv: list[str]) -> ml_collections.ConfigDict:
    # The overridable config is the run's own, so it must be read before the flags are parsed.
    for i, arg in enumerate(argv):
        if arg.startswith("--workdir="):
            return saved_runs.read_config(arg.split("=", 1)[1])
        if arg == "--workdir" and i + 1 < len(argv):
            return saved_runs.read_config(argv[i + 1])
    raise saved_runs.RunError("--workdir is required")


@cli_errors.exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    compilation_cache.enable()
    predict_from_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    flags.DEFINE_string("workdir", None, "A run directory written by softlabel_ood.train.")
    try:
        config_flags.DEFINE_config_dict("config", _stored_config_from_argv(sys.argv))
    except saved_runs.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    app.run(main)
