"""Bad input ends a command with exit code 2 and one line that says what is wrong."""

from __future__ import annotations

import functools
import sys


def user_errors() -> tuple[type[Exception], ...]:
    # Imported here so that each command pays only for the modules it already uses.
    from softlabel_ood import config_validation, datasets, predictions, saved_runs
    return (config_validation.ConfigError, datasets.DatasetError, predictions.PredictionsError,
            saved_runs.RunError, FileNotFoundError)


def exit_on_user_error(main):
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapped
