"""A population's whole job, as `train` and `reproduce`'s workers run it: every check that needs
no data, its teachers, the workdir locks, its data, training (`train_loop`), then each run's
predictions and DONE marker. Each run's files are those of the run trained alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import jax
import ml_collections
from etils import epath

from softlabel_ood.configs import config_validation
from softlabel_ood.data import run_data
from softlabel_ood.training import (
    distributed,
    predicting,
    run_start,
    runs_axis,
    saved_models,
    train_loop,
)
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import predictions, run_dir, saved_runs


def check_inputs(configs: Sequence[ml_collections.ConfigDict],
                 workdirs: Sequence[epath.PathLike]) -> None:
    """What each run reads besides its data, checked before any dataset is loaded or file
    written: its workdir, and the finished run that OE fine-tuning starts from. (A KD teacher
    is checked as it is loaded, also before any data.)"""
    for config, workdir in zip(configs, workdirs, strict=True):
        workdir_lock.check_workdir(workdir)
        saved_runs.refuse_imported(workdir)  # train would write its run over someone's outputs
        predictions.check_replaceable(run_dir.predictions_path(epath.Path(workdir)))
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
            predicting.write_predictions(
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
