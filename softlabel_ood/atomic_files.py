"""Files written under a temporary name and renamed, so that a reader never sees half a file.

Standard library only: the predictions format and the scoring module use it and must load with
numpy and jax alone.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import BinaryIO


def write_atomically(path: os.PathLike | str, write: Callable[[BinaryIO], object]) -> None:
    """Calls `write` on a temporary file beside `path`, then renames it to `path`."""
    path = pathlib.Path(os.fspath(path))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)  # replaces an existing file, atomically on POSIX
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomically(path: os.PathLike | str, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))
