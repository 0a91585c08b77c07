"""Bad input ends a command with exit code 2 and one line that says what is wrong.

Every module's input errors derive from `UserError`, so that a command catches one type and the
list of what counts as the user's mistake lives with the code that detects it. Standard library
only: the predictions format and the scoring side import it and must load without flax.
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys

USAGE_EXIT_CODE = 2
INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for Ctrl-C

# A write that fails for one of these reasons is the environment's fault, not the program's:
# reported in one line (the files written before are intact, see atomic_files), not as a traceback.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                                 errno.ENOENT, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                                 errno.EEXIST})


class UserError(ValueError):
    """A command's input (a flag, a config field, a file it reads) that no run can use."""


def one_line(error: BaseException) -> str | None:
    """The one-line message of an error a command reports without a traceback, else None."""
    if isinstance(error, UserError):
        return " ".join(str(error).split("\n"))
    if isinstance(error, FileNotFoundError) and error.errno is None:
        return str(error)  # raised with a message of ours, e.g. "<path>: no such file"
    if isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS:
        where = error.filename or "output"
        return f"{where}: {error.strerror}"
    return None


def exit_on_user_error(main):
    """Wraps a command's main: a user error prints `error: <line>` to stderr and exits 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UserError, OSError) as e:
            message = one_line(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(USAGE_EXIT_CODE)
    return wrapped


def exit_on_interrupt(line):
    """Wraps a command's main: Ctrl-C (KeyboardInterrupt) prints `line(interrupt)` to stderr, one
    line that says what the command left, and exits with INTERRUPT_EXIT_CODE, not a traceback."""
    def wrap(main):
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt as interrupt:
                print(line(interrupt), file=sys.stderr, flush=True)
                sys.exit(INTERRUPT_EXIT_CODE)
        return wrapped
    return wrap


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a flag error (unknown, missing, of the wrong type) as one line, exit code 2,
    without argparse's usage block: the usage is what `--help` prints."""

    def error(self, message: str):
        print(f"error: {message} (--help lists the flags)", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
