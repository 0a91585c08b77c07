"""Runs a trained model over every split and writes the predictions directory (DESIGN.md §5).

    python -m softlabel_ood.predict --workdir=<dir> [--config.<field>=<value> ...] [--replace_ood]
                                    [--allow_unfinished]

The config is the run's stored `config.json`, and the model its latest checkpoint. A run whose
latest checkpoint is short of its last step (interrupted training) is refused with exit code 2;
with --allow_unfinished its predictions are written, the progress line says "unfinished", and
the manifest records the step, so that `score` and the report mark them. Overrides may
change only what is evaluated (ood_datasets, dataset_paths, data_dir, num_ood_examples,
eval_batch_size, odin_pairs, odin_selection, ood_groups, pnorm_p: the fields listed below); a
field that defines the trained run is refused with exit code 2. The values it ran with are
recorded in the run's config.json, where `score` reads ood_groups, odin_selection and pnorm_p.
`--config.ood_datasets=...` adds OOD sets to those the predictions directory already has;
with --replace_ood the list replaces them, the files of the sets left out go with the old
directory, which the new one replaces in one rename, and the groups lose them.
"""

from __future__ import annotations

import copy
import sys

import jax
import ml_collections
from absl import app, flags
from etils import epath

from softlabel_ood import cli_errors, command_line
from softlabel_ood.configs import config_validation
from softlabel_ood.data import run_data
from softlabel_ood.training import (
    compilation_cache,
    distributed,
    predicting,
    runs_axis,
    saved_models,
)
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import predictions, run_dir, saved_runs


class UnfinishedRunError(saved_runs.RunError):
    """predict was asked for the predictions of a run that has not trained to its last step."""


def predict_from_checkpoint(config: ml_collections.ConfigDict, workdir: epath.PathLike, *,
                            allow_unfinished: bool = False) -> int:
    """Rewrites the predictions of the run in `workdir` from its latest checkpoint that reads
    back, and returns that checkpoint's step. Later ones that do not read back are named in one
    line and left as they are (DESIGN.md §3).

    UnfinishedRunError, before anything is written, when that checkpoint is short of the
    run's last step, unless `allow_unfinished` (the manifest then records the step). The
    number of steps follows from the ID training set's size, so that set is read first.
    """
    workdir_lock.check_workdir(workdir)
    predictions.check_replaceable(run_dir.predictions_path(epath.Path(workdir)))
    config_validation.check_stored(config, str(run_dir.config_path(epath.Path(workdir))))
    config_validation.check_evaluation(config, num_devices=jax.device_count())
    run_data.check_available(config, training=False)
    mesh = runs_axis.data_mesh()
    with workdir_lock.hold(workdir, enabled=distributed.is_writer()):
        id_sets = {split: run_data.load_id(config, split) for split in ("test", "train")}
        restored = saved_models.restore_readable_model(config, workdir, mesh)
        checkpoint = predicting.checkpoint_of(config, restored.step, id_sets["train"])
        if not checkpoint.finished and not allow_unfinished:
            latest = "latest checkpoint that reads back" if restored.unreadable else \
                "latest checkpoint"
            raise UnfinishedRunError(
                f"{workdir}: unfinished run, its {latest} is {checkpoint.describe()}; the train "
                f"command that started it resumes it to the end, or --allow_unfinished writes "
                f"predictions from step {restored.step:,}, marked unfinished")
        if restored.unreadable and distributed.is_writer():
            print(_fallback_line(workdir, restored), file=sys.stderr)
        predicting.write_predictions([config], [workdir],
                                     runs_axis.stack([restored.variables], mesh), mesh,
                                     steps=[restored.step], id_sets=id_sets)
        if distributed.is_writer():
            _record_evaluation_fields(config, workdir)
    return restored.step


def _record_evaluation_fields(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> None:
    """config.json takes the evaluation fields predict ran with (the OOD sets the predictions
    now hold, their groups, pnorm_p, ...), which `score` reads from there; the fields of the
    trained run are config's own, unchanged (`config_with_overrides`)."""
    stored = saved_runs.config_to_dict(read_stored_config(workdir))
    if config_validation.changed_fields(stored, saved_runs.config_to_dict(config)):
        saved_runs.write_config(workdir, config)


def _fallback_line(workdir: epath.PathLike, restored) -> str:
    steps = [step for step, _ in restored.unreadable]
    which = (f"the checkpoint of step {steps[0]} does not" if len(steps) == 1 else
             f"the checkpoints of steps {', '.join(map(str, steps))} do not")
    return (f"{epath.Path(workdir) / run_dir.CHECKPOINTS}: predictions from step {restored.step} "
            f"({which} read back: {restored.unreadable[0][1]})")


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
    # A group given here names only sets these predictions hold (the stored ones may not).
    groups = set()
    for name in changed:
        if name == "ood_groups":  # a run saved before the field existed: every group is new
            groups.update(config.get("ood_groups") or {})
        elif name.startswith("ood_groups."):
            groups.add(name.split(".", 1)[1])
    config_validation.check_groups_evaluated(config, groups)
    for line in _drop_absent_sets(config, given=groups):
        print(line, file=sys.stderr)
    return config


def _drop_absent_sets(config: ml_collections.ConfigDict, *, given: set[str]) -> list[str]:
    """Takes the OOD sets that the predictions will not hold (--replace_ood left them out) out
    of the groups not given on the command line, a line for each group changed (a group given
    there names only sets that are held: `check_groups_evaluated`)."""
    held, lines = set(config.ood_datasets), []
    for group, names in list((config.get("ood_groups") or {}).items()):
        kept = tuple(n for n in names if n in held)
        if group in given or kept == tuple(names):
            continue
        dropped = ", ".join(n for n in names if n not in held)
        # An emptied group stays as () (no group), so that a later --config.ood_groups.<group>
        # can set it again.
        config.ood_groups[group] = kept
        lines.append(f"config.ood_groups.{group}: {dropped} left out with the OOD sets "
                     + (f"--replace_ood replaced; the group is now {kept}" if kept else
                        "--replace_ood replaced; the group named no other set and is now ()"))
    return lines


def _existing_ood_sets(workdir: epath.PathLike,
                       stored: ml_collections.ConfigDict) -> tuple[str, ...]:
    # A manifest that does not validate, or that describes another run than config.json (edited
    # or copied), is refused rather than added to; --replace_ood does not read it, and
    # replaces the directory.
    directory = run_dir.predictions_path(epath.Path(workdir))
    predictions.check_replaceable(directory)
    if not directory.exists():
        return ()
    manifest = predictions.read_manifest(directory)
    predictions.check_run_matches_config(
        directory / predictions.MANIFEST, manifest.get("run", {}),
        saved_runs.config_to_dict(stored), run_dir.config_path(epath.Path(workdir)))
    return tuple(n for n, e in manifest["splits"].items() if e["role"] == "ood_test")


def read_stored_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
    """The run's stored config, with every dataset's path a field that an override can set."""
    return run_data.with_every_dataset_path(saved_runs.read_config(workdir))


def _stored_config_from_argv(argv: list[str]) -> ml_collections.ConfigDict:
    # The overridable config is the run's own, so it must be read before the flags are parsed.
    for i, arg in enumerate(argv):
        workdir = arg.split("=", 1)[1] if arg.startswith("--workdir=") else (
            argv[i + 1] if arg == "--workdir" and i + 1 < len(argv) else None)
        if workdir is not None:
            workdir_lock.check_workdir(workdir)
            return read_stored_config(workdir)
    raise saved_runs.RunError("--workdir is required")


def _help_config() -> tuple[object, str]:
    """The config whose values --help shows, and which one it is in words."""
    try:
        return _stored_config_from_argv(sys.argv), "the run's config.json in --workdir"
    except cli_errors.UserError as e:
        from softlabel_ood.configs import config_base
        why = ("no --workdir was given" if "required" in str(e) else
               "--workdir holds no readable config.json")
        return (config_base.base_config(None),
                f"{command_line.BASE_DEFAULTS}; {why} (--workdir=<run> shows a run's)")


@cli_errors.exit_on_interrupt(lambda _: (
    f"interrupted; {run_dir.predictions_path(epath.Path(flags.FLAGS.workdir))} is whole, the "
    f"old predictions or the new (never a mix), and the same command writes them again"))
@cli_errors.exit_on_user_error
def main(argv):
    command_line.refuse_positional_arguments(argv)
    distributed.initialize_from_flags()
    distributed.quiet_library_logs()
    compilation_cache.enable()
    f = flags.FLAGS
    stored = read_stored_config(f.workdir)
    config = config_with_overrides(stored, f.config, f.workdir, replace_ood=f.replace_ood)
    predict_from_checkpoint(config, f.workdir, allow_unfinished=f.allow_unfinished)


if __name__ == "__main__":
    # Flags are defined only when this module is the command, so that other commands can import it.
    flags.DEFINE_string("workdir", None, "A run directory written by softlabel_ood.train.")
    flags.DEFINE_bool("replace_ood", False,
                      "--config.ood_datasets replaces the OOD sets instead of adding to them.")
    flags.DEFINE_bool("allow_unfinished", False,
                      "Writes the predictions of a run whose latest checkpoint is short of its "
                      "last step (refused otherwise); the manifest records the step.")
    distributed.define_flags()
    help_config, help_source = _help_config()
    command_line.exit_on_help(
        sys.argv, __doc__, ("workdir", "replace_ood", "allow_unfinished",
                            *distributed.FLAG_NAMES),
        lambda: command_line.field_lines(help_config, config_validation.EVALUATION_FIELDS),
        help_source)
    try:
        stored_config = _stored_config_from_argv(sys.argv)
    except cli_errors.UserError as e:
        print(f"error: {cli_errors.one_line(e)}", file=sys.stderr)
        sys.exit(cli_errors.USAGE_EXIT_CODE)
    command_line.define_config_dict(stored_config, sys.argv)
    app.run(main, flags_parser=command_line.parse_flags)
