"""Runs a config family's experiment grid, then scores every run and writes the report.

    python -m softlabel_ood.reproduce --config=configs/digits.py --workdir=/tmp/digits
    python -m softlabel_ood.reproduce --config=configs/digits.py --workdir=/tmp/dfam --grid=family

The grid is `config.grid` (see `softlabel_ood.configs.grid`): for every seed, its runs in the
order listed, each in `<workdir>/runs/<name>_seed<seed>/`. A finished run is skipped and an
unfinished one resumes from its checkpoint, so the same command continues an interrupted
reproduction. Afterwards `<workdir>/report/` holds metrics.csv, report.md and the figures,
switched in as a whole (so it holds nothing else: other files there are refused). --grid=family
runs the soft-label family's grid instead (`grid.family_grid`: ce, ls at two α, and mixup,
CutMix, ... each at its default and a stronger setting) with the config's seeds; give it a
workdir of its own, as its report replaces `<workdir>/report/`. With
--multihost every host runs the same command; only process 0 scores and writes the report.
Ctrl-C ends it with exit code 130 and one line: how many runs finished, and the step that each
started one resumes from.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import jax
import ml_collections
import tqdm
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from softlabel_ood import cli_errors, command_line, configs, methods, scoring
from softlabel_ood.analysis import claims, report, report_inputs, results
from softlabel_ood.configs import config_base, config_validation, grid
from softlabel_ood.data import datasets, run_data
from softlabel_ood.experiment import finished_runs, populations, probe, schedule, workers
from softlabel_ood.training import compilation_cache, distributed, interruption
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import predictions, run_dir, saved_runs, trained_steps
from softlabel_ood.workdir.run_summary import RunSummary


def planned_runs(config: ml_collections.ConfigDict, workdir: epath.PathLike
                 ) -> list[tuple[results.RunInfo, ml_collections.ConfigDict]]:
    """(RunInfo, run config) for every seed and every run of the grid, in training order.

    Everything is checked here, before the first run trains, so that bad input fails at once.
    """
    workdir_lock.check_workdir(workdir)
    report.check_out_dir(epath.Path(workdir) / "report")  # replaced as a whole at the end
    grid.validate_grid(config)
    planned = []
    for seed in config.grid.seeds:
        for run in config.grid.runs:
            c = grid.run_config(config, run, seed, workdir)
            config_validation.check(c)  # fail before the first run rather than hours into the grid
            info = results.RunInfo(
                run=grid.run_dir_name(run["name"], seed), entry=run["name"], seed=seed,
                method=run["method"], strength=RunSummary.from_config(c).strength,
                teacher=run.get("teacher", ""), init_from=run.get("init_from", ""),
                directory=str(grid.run_dir(workdir, run["name"], seed)))
            # A finished run is skipped and reported: it must be this grid's run.
            finished_runs.check_trained_as_planned(info.run, info.directory, c)
            predictions.check_replaceable(run_dir.predictions_path(epath.Path(info.directory)))
            planned.append((info, c))
    # Every set any run reads, looked up once before the first run trains: a missing OOD set
    # would otherwise surface when the first run writes its predictions, after its training.
    sets = {(name, split, path, c.data_dir) for _, c in planned
            for name, split, path in run_data.used_sets(c)}
    for name, split, path, data_dir in sorted(sets):
        datasets.check_available(name, split, path=path, data_dir=data_dir or None)
    return planned


class RunsFailedError(saved_runs.RunError):
    """Some runs of the grid did not finish; the others were trained and scored."""


def cut_grid(config: ml_collections.ConfigDict, workdir: str,
             planned: list[tuple[results.RunInfo, ml_collections.ConfigDict]]
             ) -> tuple[list[list[int]], str | None]:
    """The grid's populations (`populations.form`) and, when config.grid.max_population is 0,
    how their size was chosen (for the report).

    Populations and worker processes are two ways to keep a CPU's cores busy; when several
    workers train side by side (the CPU default) every run trains alone, as measured fastest
    there, and otherwise the probe measures the size."""
    configs = [c for _, c in planned]
    directories = [info.directory for info, _ in planned]
    side_by_side = (not int(config.grid.get("max_population", 0))
                    and workers.count(config.grid) > 1)
    how = (f"1 run per population: {workers.count(config.grid)} worker processes train runs side "
           f"by side (config.grid.workers; 1 measures the population size)") if side_by_side \
        else None
    if all(saved_runs.is_finished(d) for d in directories):
        # Nothing to train, nothing to measure: the report states the size the grid trained with.
        stored = probe.stored(workdir)
        return [[i] for i in range(len(planned))], how or (stored and stored.describe())
    if side_by_side:
        size = 1
    else:
        size, measured = probe.population_size(config.grid, configs, directories,
                                               populations.groups(configs, directories), workdir)
        how = measured and measured.describe()
    if how and distributed.is_writer():
        tqdm.tqdm.write(f"populations: {how}", file=sys.stderr)
    unit = populations.run_devices(int(config.grid.get("run_devices", 0)), size,
                                   jax.local_device_count())
    return populations.form(configs, directories, size, unit=unit), how


# The report's title for each grid of `--grid`, the dataset's name filled in.
TITLES = {"paper": "Soft labels and OOD detection on {dataset}: reproduction report",
          "family": "The soft-label family and OOD detection on {dataset}"}


def run_grid(config: ml_collections.ConfigDict, workdir: str, *,
             rules: claims.ClaimRules | None = None,
             title: str = TITLES["paper"]) -> list[results.RunInfo]:
    """Trains every unfinished run of `config.grid` in populations (`cut_grid`), teachers
    before their students (`schedule`), then scores the finished runs and writes the report.

    A run that fails (its loss diverges, its teacher failed) is reported by name and does not
    stop the others; RunsFailedError names every failed run after the report is written.
    """
    planned = planned_runs(config, workdir)
    cut, how = cut_grid(config, workdir, planned)
    failed = schedule.train(planned, cut, config.grid)
    # Process 0 wrote every run's predictions; the others read them to score.
    distributed.wait_for_all("grid trained")
    runs = [info for info, _ in planned if info.directory not in failed]
    # Predictions of a step short of the run's end (predict --allow_unfinished) are never
    # reported: the run is named with the failed ones.
    unfinished = report_inputs.unfinished_runs(runs)
    failed.update({r.directory: f"not reported: {trained_steps.describe(unfinished[r.run])}"
                   for r in runs if r.run in unfinished})
    runs = [r for r in runs if r.run not in unfinished]
    # Every process scores (the same read-only work), so that none of them sits idle in JAX's
    # shutdown barrier, which has a timeout, while process 0 alone is busy.
    rows = scoring.score_runs_report([r.directory for r in runs], progress=distributed.is_writer()
                                     ).rows
    if distributed.is_writer():
        out = epath.Path(workdir) / "report"
        report.write_report(rows, out, runs=runs, rules=rules,
                            title=title.format(dataset=config.dataset),
                            training={"population size": how} if how else None)
        print(f"report: {out / 'report.md'}")
    if failed:
        raise RunsFailedError(f"{len(failed)} of {len(planned)} runs did not finish: " + "; ".join(
            f"{epath.Path(d).name} {why}" for d, why in failed.items()))
    return runs


def _grid_line(interrupt: KeyboardInterrupt) -> str:
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    return interruption.grid_line([grid.run_dir(workdir, run["name"], seed)
                                   for seed in config.grid.seeds for run in config.grid.runs])


@cli_errors.exit_on_interrupt(_grid_line)
@cli_errors.exit_on_user_error
def main(argv: Sequence[str]) -> None:
    command_line.refuse_positional_arguments(argv)
    if not flags.FLAGS["verbosity"].present:
        # Checkpointing logs several INFO lines per save, which would bury the progress bars;
        # --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    # The grid sets these for every run: an override would be silently replaced.
    grid.check_overrides(config_flags.get_override_values(flags.FLAGS["config"]))
    grid.check_config_argument(config_flags.get_config_filename(flags.FLAGS["config"]),
                               (*methods.names(), config_base.FINETUNE_ARG))
    grid.select_grid(flags.FLAGS.config, flags.FLAGS.grid)  # in place: Ctrl-C's line reads it
    distributed.initialize_from_flags()
    compilation_cache.enable()
    run_grid(flags.FLAGS.config, flags.FLAGS.workdir, title=TITLES[flags.FLAGS.grid])


if __name__ == "__main__":
    # Defined here rather than at import, as in train.py and predict.py: the commands share absl's
    # flag namespace, and importing one module from another must not define a flag twice.
    sys.argv = configs.resolve_argv(sys.argv)  # configs/<file>.py: the packaged file if not here
    config_flags.DEFINE_config_file("config", None, "e.g. configs/digits.py")
    flags.DEFINE_string("workdir", None, "Directory of the whole grid (created if missing).")
    flags.DEFINE_enum("grid", "paper", grid.GRIDS,
                      "paper: the config's grid (the paper's); family: the soft-label family's, "
                      "with the config's seeds (use a workdir of its own)")
    flags.mark_flags_as_required(["config", "workdir"])
    distributed.define_flags()
    command_line.exit_on_help(
        sys.argv, __doc__, ("config", "workdir", "grid", *distributed.FLAG_NAMES),
        lambda: command_line.field_lines(command_line.config_from_file(sys.argv)),
        command_line.config_source(sys.argv))
    app.run(main, flags_parser=command_line.parse_flags)
