"""Runs a config family's experiment grid, then scores every run and writes the report.

    python -m softlabel_ood.reproduce --config=configs/digits.py --workdir=/tmp/digits

The grid is `config.grid` (see `softlabel_ood.experiment.grid`): for every seed, its runs in the
order listed, each in `<workdir>/runs/<name>_seed<seed>/`. A finished run is skipped and an
unfinished one resumes from its checkpoint, so the same command continues an interrupted
reproduction. Afterwards `<workdir>/report/` holds metrics.csv, report.md and the figures,
switched in as a whole (so it holds nothing else: other files there are refused). With
--multihost every host runs the same command; only process 0 scores and writes the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import ml_collections
import tqdm
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from softlabel_ood import cli_errors, command_line, configs, progress, scoring
from softlabel_ood.analysis import claims, report, results
from softlabel_ood.configs import config_validation
from softlabel_ood.data import datasets, run_data
from softlabel_ood.experiment import grid, populations, workers
from softlabel_ood.training import compilation_cache, distributed
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import saved_runs


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
                run=grid.run_dir_name(run["name"], seed), name=run["name"], seed=seed,
                method=run["method"], alpha=float(c.label_smoothing),
                teacher=run.get("teacher", ""), init_from=run.get("init_from", ""),
                directory=str(grid.run_dir(workdir, run["name"], seed)))
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


def run_grid(config: ml_collections.ConfigDict, workdir: str, *,
             rules: claims.ClaimRules | None = None) -> list[results.RunInfo]:
    """Trains every unfinished run of `config.grid` in populations (`populations.form`), up to
    `config.grid.workers` populations at a time (`workers`), then scores the finished runs and
    writes the report.

    A population starts once the runs it reads (teachers, fine-tuning starts) are done. A run
    that fails (its loss diverges, its teacher failed) is reported by name and does not stop the
    others; RunsFailedError names every failed run after the report is written.
    """
    planned = planned_runs(config, workdir)
    configs = [c for _, c in planned]
    directories = [info.directory for info, _ in planned]
    groups = populations.form(configs, directories, populations.max_population(config.grid))
    writer = distributed.is_writer()
    failed: dict[str, str] = {}  # run directory -> why it failed
    unresolved = set(directories)  # runs not yet skipped, trained or failed
    bar = progress.bar(total=len(planned), desc="grid", unit="run", disable=not writer)

    def say(i: int, what: str) -> None:
        if writer:
            info = planned[i][0]
            tqdm.tqdm.write(f"[{i + 1}/{len(planned)}] {info.run} ({info.method}): {what}",
                            file=sys.stderr)

    def resolve(i: int, what: str | None = None) -> None:
        unresolved.discard(directories[i])
        bar.update(1)
        if what:
            say(i, what)

    def ready(group: list[int]) -> bool:
        return not any(p in unresolved for i in group for p in populations.inputs(configs[i]))

    def to_train(group: list[int]) -> list[int]:
        """The runs of `group` to train; the others are skipped or fail here, and say so."""
        todo = []
        for i in group:
            if saved_runs.is_finished(directories[i]):
                resolve(i, "skipped, already finished")
            elif broken := [p for p in populations.inputs(configs[i]) if p in failed]:
                failed[directories[i]] = f"not trained: {epath.Path(broken[0]).name} failed"
                resolve(i, failed[directories[i]])
            else:
                todo.append(i)
        return todo

    pending = list(range(len(groups)))  # populations not started, by index into groups
    training: dict[int, tuple[list[int], dict[int, bool]]] = {}  # population -> (runs, resumed)
    with workers.Pool(workers.count(config.grid)) as pool:
        while pending or pool.busy:
            while pending and not pool.full:
                population = next((p for p in pending if ready(groups[p])), None)
                if population is None:  # every pending population reads a run still training
                    break
                pending.remove(population)
                if not (todo := to_train(groups[population])):
                    continue
                bar.set_postfix_str(", ".join(planned[i][0].run for i in todo[:3])
                                    + (", ..." if len(todo) > 3 else ""))
                training[population] = (todo, {i: (epath.Path(directories[i]) / "checkpoints")
                                              .exists() for i in todo})
                # Every process takes part in training; each decides the same way whether to
                # skip, because the DONE marker lives in the shared workdir.
                pool.start(population, [configs[i] for i in todo],
                           [directories[i] for i in todo], config.grid)
            if not pool.busy:
                if pending:  # cannot happen: runs are listed, and so trained, before readers
                    raise RuntimeError(f"populations {pending} read runs that are never trained")
                continue  # every population left was skipped
            for population, outcomes, seconds in pool.finished():
                todo, resumed = training.pop(population)
                together = f" (together with {len(todo) - 1} more)" if len(todo) > 1 else ""
                for i, failure in zip(todo, outcomes, strict=True):
                    if failure is not None:
                        failed[directories[i]] = f"failed: {failure}"
                        resolve(i, failed[directories[i]])
                    else:
                        resolve(i, f"{'resumed and trained' if resumed[i] else 'trained'} in "
                                   f"{seconds:.0f} s{together}")
    bar.close()

    # Process 0 wrote every run's predictions; the others read them to score.
    distributed.wait_for_all("grid trained")
    runs = [info for info, _ in planned if info.directory not in failed]
    # Every process scores (the same read-only work), so that none of them sits idle in JAX's
    # shutdown barrier, which has a timeout, while process 0 alone is busy.
    rows = scoring.score_runs_report([r.directory for r in runs], progress=writer).rows
    if writer:
        out = epath.Path(workdir) / "report"
        report.write_report(rows, out, runs=runs, rules=rules,
                            title=f"Soft labels and OOD detection on {config.dataset}: "
                                  f"reproduction report")
        print(f"report: {out / 'report.md'}")
    if failed:
        raise RunsFailedError(f"{len(failed)} of {len(planned)} runs did not finish: " + "; ".join(
            f"{epath.Path(d).name} {why}" for d, why in failed.items()))
    return runs


@cli_errors.exit_on_user_error
def main(argv: Sequence[str]) -> None:
    command_line.refuse_positional_arguments(argv)
    if not flags.FLAGS["verbosity"].present:
        # Checkpointing logs several INFO lines per save, which would bury the progress bars;
        # --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    distributed.initialize_from_flags()
    compilation_cache.enable()
    run_grid(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Defined here rather than at import, as in train.py and predict.py: the commands share absl's
    # flag namespace, and importing one module from another must not define a flag twice.
    sys.argv = configs.resolve_argv(sys.argv)  # configs/<file>.py: the packaged file if not here
    config_flags.DEFINE_config_file("config", None, "e.g. configs/digits.py")
    flags.DEFINE_string("workdir", None, "Directory of the whole grid (created if missing).")
    flags.mark_flags_as_required(["config", "workdir"])
    distributed.define_flags()
    app.run(main, flags_parser=command_line.parse_flags)
