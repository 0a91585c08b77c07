"""Trains one run, then writes its predictions (DESIGN.md §4, §5).

    python -m softlabel_ood.train --config=configs/<file>.py[:<argument>] --workdir=<dir> \
        [--config.<field>=<value> ...]

The argument of a config file is the method (ce, ls, oe, kd, kd_incorrect) or oe_finetune. Every
field is checked before any data is loaded or any file written; a bad value ends the command with
exit code 2 and one line. A second command on a workdir in use is refused the same way. Ctrl-C
ends it in one line, `interrupted at step N; the next run resumes from step M` (exit code 130).

`train_and_evaluate(config, workdir)` is the whole job, so that tests, notebooks and the
reproduction driver call exactly what the command line runs. Running it again on the same
workdir resumes from the latest checkpoint, and a finished run only rewrites its predictions.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

import jax
import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from softlabel_ood import cli_errors, command_line, configs, predict
from softlabel_ood.configs import config_validation
from softlabel_ood.data import run_data
from softlabel_ood.training import (
    compilation_cache,
    distributed,
    interruption,
    run_start,
    runs_axis,
    saved_models,
    train_loop,
)
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import predictions, saved_runs

TrainingDivergedError = train_loop.TrainingDivergedError


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    failure, = train_and_evaluate_population([config], [workdir])
    if failure is not None:
        raise failure


def check_inputs(configs: Sequence[ml_collections.ConfigDict],
                 workdirs: Sequence[epath.PathLike]) -> None:
    """What each run reads besides its data, checked before any dataset is loaded or file
    written: its workdir, and the finished run that OE fine-tuning starts from. (A KD teacher
    is checked as it is loaded, also before any data.)"""
    for config, workdir in zip(configs, workdirs, strict=True):
        workdir_lock.check_workdir(workdir)
        predictions.check_replaceable(epath.Path(workdir) / "predictions")
        saved_models.check_fine_tuning_start(config, workdir)


def train_and_evaluate_population(configs: Sequence[ml_collections.ConfigDict],
                                  workdirs: Sequence[epath.PathLike], *, mesh=None
                                  ) -> list[Exception | None]:
    """Trains the runs of a population together (`train_loop.train_population`), then writes
    each run's predictions and DONE marker: each run's files are those of the run trained alone.

    A run that cannot start (its teacher is missing or unfinished) or whose loss diverges does
    not stop the others: the returned list holds each run's failure, or None.
    """
    # Every check that needs no data comes before any dataset is loaded or any file written.
    for config in configs:
        config_validation.check(config, num_devices=jax.device_count())
    check_inputs(configs, workdirs)
    mesh = mesh or runs_axis.data_mesh()
    failures, members, teacher_model = _members(configs, workdirs, mesh)
    if not members:
        return [failures.get(i) for i in range(len(configs))]
    config = members[0][1].config
    run_data.check_available(config)
    # One process per workdir (released when this one ends, killed or not).
    with contextlib.ExitStack() as locks:
        for _, member in members:
            locks.enter_context(workdir_lock.hold(member.workdir, enabled=distributed.is_writer()))
        data = run_data.load_training(config)
        # The OOD sets too (each loaded once per process; predictions reuse them): a file that
        # does not read ends the run before its first step, not after its last.
        run_data.load_ood(config)
        config_validation.check_training_size(config, len(data.train.labels))
        results = train_loop.train_population(
            [m for _, m in members], data, runs_axis.fit_mesh(mesh, len(members)),
            teacher_model=teacher_model)
        done = []
        for (i, member), result in zip(members, results, strict=True):
            if isinstance(result, Exception):
                failures[i] = result
            else:
                done.append((member, result))
        if done:
            predict_mesh = runs_axis.fit_mesh(mesh, len(done))
            predict.write_predictions(
                [m.config for m, _ in done], [m.workdir for m, _ in done],
                runs_axis.stack([state.variables for _, state in done], predict_mesh),
                predict_mesh, steps=[int(jax.device_get(state.step)) for _, state in done],
                id_sets={"train": data.train, "test": data.test})
            if distributed.is_writer():
                for member, _ in done:
                    saved_runs.mark_finished(member.workdir)
    return [failures.get(i) for i in range(len(configs))]


def _members(configs, workdirs, mesh):
    """({index: failure}, [(index, Member)], teacher model) of the runs that can start: teachers
    are read first, so a missing or unfinished one is found before any data is loaded."""
    failures, members, teacher_model = {}, [], None
    for i, (config, workdir) in enumerate(zip(configs, workdirs, strict=True)):
        try:
            model, variables = run_start.load_teacher(config, mesh)
        except saved_runs.RunError as e:
            if len(configs) == 1:
                raise
            failures[i] = e
            continue
        teacher_model = teacher_model or model
        members.append((i, run_start.Member(config, epath.Path(workdir), variables)))
    return failures, members, teacher_model


@interruption.exit_on_interrupt(lambda interrupt: interruption.run_line(flags.FLAGS.workdir,
                                                                      interrupt))
@cli_errors.exit_on_user_error
def main(argv):
    command_line.refuse_positional_arguments(argv)
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    compilation_cache.enable()
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    sys.argv = configs.resolve_argv(sys.argv)  # configs/<file>.py: the packaged file if not here
    config_flags.DEFINE_config_file("config", None, "e.g. configs/cifar10.py:ls")
    flags.DEFINE_string("workdir", None, "Directory of this run (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])
    distributed.define_flags()
    command_line.exit_on_help(
        sys.argv, __doc__, ("config", "workdir", *distributed.FLAG_NAMES),
        lambda: command_line.field_lines(command_line.config_from_file(sys.argv)),
        command_line.config_source(sys.argv))
    app.run(main, flags_parser=command_line.parse_flags)
