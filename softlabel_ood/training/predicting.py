"""A population's trained models evaluated over every split, and their predictions written.

`train` writes them after the last step and `predict` from a run's checkpoint; each run's
predictions directory (DESIGN.md §5) is the one of the run evaluated alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from etils import epath

from softlabel_ood import models, progress
from softlabel_ood.data import datasets, run_data
from softlabel_ood.training import distributed, evaluation, odin, run_model
from softlabel_ood.workdir import predictions, run_dir, trained_steps


def write_predictions(configs: Sequence[ml_collections.ConfigDict],
                      workdirs: Sequence[epath.PathLike], variables, mesh, *,
                      steps: Sequence[int],
                      id_sets: dict[str, datasets.ArrayDataset] | None = None) -> None:
    """Evaluates the ID test and train sets and every OOD set for the runs of a population (one
    run or more, agreeing on their evaluation fields); process 0 writes each run's files.

    `variables` are the runs' {"params", "batch_stats"} stacked on the run axis of `mesh`
    (`runs_axis.stack`): each device group computes its own runs, as training placed them;
    `steps` the step each run's variables were trained to, recorded in its manifest beside the
    run's number of steps. `id_sets` ({"train": ..., "test": ...}) are the ID splits when the
    caller has them in memory already, as training does; otherwise they are loaded.
    """
    config = configs[0]
    model = run_model.create_model(config)
    step_config = run_model.step_config(config)
    # Runs saved before ODIN existed have no odin_pairs in their stored config: the defaults.
    odin_pairs = tuple((float(t), float(e)) for t, e in config.get("odin_pairs",
                                                                   odin.DEFAULT_PAIRS))
    shape = {"runs": len(configs), "batch_size": config.eval_batch_size}
    program = (odin.make_odin_program(model, step_config, mesh, odin_pairs, **shape) if odin_pairs
               else evaluation.make_eval_program(model, step_config, mesh, **shape))
    id_sets = id_sets or {split: run_data.load_id(config, split) for split in ("test", "train")}
    checkpoints = [checkpoint_of(c, step, id_sets["train"])
                   for c, step in zip(configs, steps, strict=True)]
    sets = {
        f"{config.dataset}_test": ("id_test", id_sets["test"]),
        f"{config.dataset}_train": ("id_train", id_sets["train"]),
    }
    sets.update({name: ("ood_test", ds) for name, ds in run_data.load_ood(config).items()})
    splits = [{} for _ in configs]
    bar = progress.bar(sets.items(), desc=_bar_text(workdirs, checkpoints), unit="split",
                       disable=not distributed.is_writer())
    for split_name, (role, ds) in bar:
        bar.set_postfix_str(split_name)
        out = evaluation.outputs(program, variables,
                                 evaluation.resident(ds, mesh, config.eval_batch_size))
        for r, run_splits in enumerate(splits):
            run_splits[split_name] = predictions.Split(
                role=role, logits=out["logits"][r], features=out["features"][r],
                odin_log_ratio=out["odin"][r] if "odin" in out else None,
                labels=ds.labels.astype(np.int32))
    kernels, biases = jax.device_get(models.classifier_head(variables["params"]))
    if distributed.is_writer():
        for r, (run_config, workdir) in enumerate(zip(configs, workdirs, strict=True)):
            predictions.write(epath.Path(workdir) / run_dir.PREDICTIONS, splits[r],
                              num_classes=datasets.info(config.dataset).num_classes,
                              run=predictions.RunSummary.from_config(run_config),
                              head=predictions.Head(kernels[r], biases[r]), odin_pairs=odin_pairs,
                              checkpoint=checkpoints[r])


def _bar_text(workdirs: Sequence[epath.PathLike],
              checkpoints: Sequence[trained_steps.Checkpoint]) -> str:
    # The run's name on the bar: a grid's worker processes share one log.
    text = epath.Path(workdirs[0]).name + (f" and {len(workdirs) - 1} more" if len(workdirs) > 1
                                           else "") + " predictions"
    unfinished = [c for c in checkpoints if not c.finished]
    if unfinished:  # only predict --allow_unfinished gets here, with one run
        text += f" of an unfinished run ({unfinished[0].describe()})"
    return text


def checkpoint_of(config: ml_collections.ConfigDict, step: int,
                  train: datasets.ArrayDataset) -> trained_steps.Checkpoint:
    """The manifest's record of a model trained to `step` by the run of `config` on `train`."""
    return trained_steps.Checkpoint(step=int(step),
                                    total_steps=run_model.total_steps(config, len(train.labels)))
