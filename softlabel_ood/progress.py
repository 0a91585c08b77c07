"""Progress bars that suit where the output goes: a live bar on a terminal, plain lines in a log.

On a terminal tqdm redraws its line with carriage returns and moves the cursor between nested
bars. Written to a file or a pipe (a job's log, CI, a notebook's captured stream) the same redraws
pile up as megabytes of `\\r` and cursor codes. There a bar prints whole lines instead: one when
it starts, at most one every `LOG_INTERVAL_S` seconds, and one when it closes, each the same text
the terminal bar would show (count, rate, elapsed time, postfix).
"""

from __future__ import annotations

import io
import math
import re
import sys

import tqdm

LOG_INTERVAL_S = 30.0
_lines_only = False  # set by `use_lines`

# ANSI control sequences (tqdm moves the cursor up with ESC [ A to redraw nested bars).
_CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _WholeLines(io.TextIOBase):
    """A stream for tqdm that writes each status it draws as one line, without control codes.

    tqdm draws a status as `\\r<status><padding>` in one write and clears it by overwriting with
    spaces; here each non-blank piece between carriage returns and newlines becomes one line.
    """

    def __init__(self, target):
        super().__init__()
        self._target = target

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", _CONTROL_SEQUENCE.sub("", text)):
            if piece.strip():
                self._target.write(piece.rstrip() + "\n")
        self.flush()
        return len(text)

    def flush(self) -> None:
        self._target.flush()


class _LogBar(tqdm.tqdm):
    """A tqdm bar that draws at most one line every `LOG_INTERVAL_S` seconds, and its last one.

    tqdm redraws on every `set_postfix` (the train loop sets the loss at each log step) and its
    monitor thread redraws stalled bars; both are held back here, not only `update`'s redraws.
    """

    _line_time = -math.inf
    _line_count = None

    def display(self, msg=None, pos=None):
        if msg is not None:  # tqdm clearing the bar: nothing to clear in a log
            return True
        now = self._time()
        closing = self.disable  # close() disables the bar before drawing it a last time
        due = now - self._line_time >= LOG_INTERVAL_S
        if not (due or (closing and self.n != self._line_count)):
            return True
        self._line_time, self._line_count = now, self.n
        return super().display(msg, pos)


def use_lines() -> None:
    """Every later bar of this process prints whole lines, on a terminal too (for processes that
    share one terminal)."""
    global _lines_only
    _lines_only = True


def bar(iterable=None, *, file=None, **kwargs) -> tqdm.tqdm:
    """A `tqdm.tqdm(iterable, **kwargs)` on `file` (default stderr): live on a terminal, else lines.

    The object is a tqdm bar either way, so `update`, `set_postfix`, `close` and `tqdm.write`
    work as usual.
    """
    file = sys.stderr if file is None else file
    if _lines_only or not is_terminal(file):
        # tqdm's monitor thread also refreshes a bar every `maxinterval` seconds; both intervals
        # are the log's, so that a slow bar does not print more often.
        kwargs = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "ascii": True,
                  **kwargs}
        return _LogBar(iterable, file=_WholeLines(file), **kwargs)
    return tqdm.tqdm(iterable, file=file, **kwargs)
