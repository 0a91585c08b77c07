"""Trains one run.

    python -m softlabel_ood.train --config=configs/<file>.py[:method] --workdir=<dir>


`train_and_evaluate(config, workdir)` is the whole job, so that tests, notebooks and the
reproduction driver call exactly what the command line runs. Running it again on the same
workdir resumes from the latest checkpoint, and a finished run only rewrites its predictions.
"""

from __future__ import annotations

import sys

import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from softlabel_ood import (
    cli_errors,
    compilation_cache,
    config_validation,
    configs,
    distributed,
    predict,
    run_data,
    run_model,
    saved_runs,
    train_loop,
    train_step,
)

is_finished = saved_runs.is_finished
TrainingDivergedError = train_loop.TrainingDivergedError


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    config_validation.check(config)
    workdir = epath.Path(workdir)
    mesh = train_step.data_mesh()
    # The teacher first: a missing or unfinished teacher is found before any data is loaded.
    teacher = train_loop.load_teacher(config, mesh)
    run_data.check_available(config)
    data = run_data.load_training(config)
    state = train_loop.train(config, workdir, data, mesh, teacher=teacher)
    predict.write_predictions(config, workdir, run_model.create_model(config), state.variables,
                              mesh, id_sets={"train": data.train, "test": data.test})
    if distributed.is_writer():
        saved_runs.mark_finished(workdir)


@cli_errors.exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    compilation_cache.enable()
    try:
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except TrainingDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    sys.argv = configs.resolve_argv(sys.argv)  # configs/<file>.py: the packaged file if not here
    config_flags.DEFINE_config_file("config", None, "e.g. configs/cifar10.py:ls")
    flags.DEFINE_string("workdir", None, "Directory of this run (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
