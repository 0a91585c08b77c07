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

import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from softlabel_ood import cli_errors, command_line, configs
from softlabel_ood.training import (
    compilation_cache,
    distributed,
    interruption,
    population_job,
    train_loop,
)

TrainingDivergedError = train_loop.TrainingDivergedError


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
    """One run trained (`population_job.train_and_evaluate_population` of one config)."""
    failure, = population_job.train_and_evaluate_population([config], [workdir])
    if failure is not None:
        raise failure


@cli_errors.exit_on_interrupt(lambda interrupt: interruption.run_line(flags.FLAGS.workdir,
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
