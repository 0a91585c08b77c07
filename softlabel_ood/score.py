r"""Scores saved predictions: `python -m softlabel_ood.score <run_dir>... --out=<dir>`.

Writes `<out>/metrics.csv` (columns run,score,ood,metric,value; values as fractions) and
`<out>/metrics.md` (per run and score: OOD splits as rows, metrics in percent as columns).
Definitions: softlabel_ood/scoring and docs/scores_and_metrics.md.

Bad input (an unknown run directory, invalid predictions, two runs with the same base name, a
group that names a set the predictions do not hold) ends the command with exit code 2 and a
one-line reason on stderr; every run is read and scored before anything is written, so --out is
left as it was. --out is score's own directory: the new metrics.csv and metrics.md replace it
in one rename, so it may hold nothing else.

Scoring runs on the CPU unless JAX_PLATFORMS or --platform says otherwise: on a TPU VM the
accelerator is usually held by a training process, and the metrics need only a few seconds of CPU.
Its compiled programs go to JAX's persistent compilation cache, as train's do
(SOFTLABEL_OOD_COMPILATION_CACHE, `training/compilation_cache.py`), so that the next call of
the same shapes loads them instead of compiling.
"""

from __future__ import annotations

import os
import sys

from softlabel_ood import cli_errors
from softlabel_ood.scoring import score_records  # no JAX: the platform is chosen first


def _parse(argv):
    parser = cli_errors.ArgumentParser(
        prog="python -m softlabel_ood.score",
        description="Compute OOD detection scores and metrics from saved predictions.")
    parser.add_argument("run_dirs", nargs="+", metavar="run_dir",
                        help="run directories, each holding predictions/manifest.json")
    parser.add_argument("--out", required=True, help="directory for metrics.csv and metrics.md")
    parser.add_argument("--groups", default=None,
                        help="groups of OOD sets whose means metrics.md shows, e.g. "
                             "'near=cifar100;far=svhn,textures' (default: each run's "
                             "config.ood_groups from its config.json)")
    # One flag per score parameter, from the score records (a default of None: not given).
    for parameter in score_records.parameters().values():
        parser.add_argument(f"--{parameter.name}", type=parameter.type, default=None,
                            choices=parameter.choices or None, help=parameter.help)
    parser.add_argument("--platform", default=None,
                        help="JAX platform to score on, e.g. cpu, gpu, tpu (default: "
                             "$JAX_PLATFORMS, else cpu)")
    return parser.parse_args(argv)


def _check_out(out: str) -> None:
    """--out is a directory, or can be made one, that this process may write (checked before
    any scoring, so that a bad --out costs nothing)."""
    from softlabel_ood.scoring import ScoringError, metrics_files

    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ScoringError(f"--out: {out} is a file, not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ScoringError(f"--out: {out} is under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ScoringError(f"--out: {existing} is not writable")
    try:
        metrics_files.check_out_dir(out)
    except ScoringError as e:
        raise ScoringError(f"--out: {e}") from None


def _check_platform(platform: str | None) -> None:
    """The JAX platform starts, or the command says why in one line."""
    import jax

    from softlabel_ood.scoring import ScoringError
    try:
        jax.devices()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScoringError(f"--platform: {platform or os.environ.get('JAX_PLATFORMS')!r} cannot "
                           f"start here ({first})") from None


def _check_not_a_grid(run_dirs) -> None:
    """A reproduce workdir, or its runs/ folder, given in place of its runs: the line says which
    glob names them."""
    from softlabel_ood.scoring import ScoringError
    from softlabel_ood.workdir.run_dir import CONFIG, PREDICTIONS

    def holds_runs(folder):
        # A run directory holds config.json from its start, predictions/ once it has them.
        return os.path.isdir(folder) and any(
            os.path.isfile(os.path.join(folder, name, CONFIG))
            or os.path.isdir(os.path.join(folder, name, PREDICTIONS))
            for name in os.listdir(folder))

    for run_dir in run_dirs:
        if not os.path.isdir(run_dir) or os.path.isdir(os.path.join(run_dir, PREDICTIONS)):
            continue
        for folder in (os.path.join(run_dir, "runs"), run_dir):
            if holds_runs(folder):
                raise ScoringError(
                    f"{os.path.join(run_dir, PREDICTIONS)}: no such predictions directory; "
                    f"{folder} holds run directories: give them as {os.path.join(folder, '*')}")


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    # Chosen before jax is imported: the platform is fixed when jax initializes its backends.
    if args.platform:
        os.environ["JAX_PLATFORMS"] = args.platform
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from softlabel_ood import cli_errors, scoring
    from softlabel_ood.training import compilation_cache
    from softlabel_ood.workdir import trained_steps

    given = {name: getattr(args, name) for name in score_records.parameters()}
    try:
        for name, value in given.items():
            problem = None if value is None else score_records.parameters()[name].problem(value)
            if problem is not None:
                raise scoring.ScoringError(f"--{problem}")
        _check_not_a_grid(args.run_dirs)
        _check_out(args.out)
        _check_platform(args.platform)
        groups = None if args.groups is None else scoring.groups.parse_groups(args.groups)
        # Programs compiled once are loaded by the next invocation: most of a cold call's time.
        compilation_cache.enable()
        report = scoring.score_runs_report(args.run_dirs, progress=True, ood_groups=groups,
                                           **given)
        for run, reasons in report.skipped.items():
            for score, reason in reasons.items():
                print(f"{run}: {score} {reason}", file=sys.stderr)
        for run, notes in report.notes.items():
            for score, note in notes.items():
                print(f"{run}: {score} {note}", file=sys.stderr)
        for run, checkpoint in report.unfinished.items():
            print(f"{run}: {trained_steps.describe(checkpoint)}", file=sys.stderr)
        # Both files are switched in with one rename: a kill or a full disk keeps both old ones.
        scoring.write_metrics(report.rows, args.out, skipped=report.skipped, notes=report.notes,
                              groups=report.groups, unfinished=report.unfinished)
    except (cli_errors.UserError, OSError) as e:
        message = cli_errors.one_line(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return cli_errors.USAGE_EXIT_CODE
    print(f"wrote {os.path.join(args.out, 'metrics.csv')} and "
          f"{os.path.join(args.out, 'metrics.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
