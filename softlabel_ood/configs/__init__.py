"""The config files of the experiment families, shipped inside the package.

The commands take `--config=configs/<family>.py[:<arg>]`; in a clone, `configs/` at the top holds
one-line files that import these. A config path that does not exist, and whose last two parts are
`configs/<file>.py` with `<file>.py` in this directory, names the file here: so the README's
command lines work from any directory after a plain `pip install`. An existing path
always wins, so a user's own `configs/cifar10.py` is read as it is.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

DIRECTORY = pathlib.Path(__file__).resolve().parent
# The experiment families, one config file each (DESIGN.md §8), smallest first.
FAMILIES = ("digits", "fashion_mnist", "fashion_mnist_split", "cifar10", "cifar100")


def resolve(spec: str) -> str:
    """`configs/<file>.py[:<arg>]` -> the packaged file's path (same `:<arg>`), if it must."""
    path, colon, arg = spec.partition(":")
    if os.path.exists(path):
        return spec
    parts = pathlib.PurePath(path).parts
    packaged = DIRECTORY / parts[-1] if parts else None
    if len(parts) >= 2 and parts[-2] == "configs" and packaged.suffix == ".py" \
            and packaged.is_file():
        return f"{packaged}{colon}{arg}"
    return spec


def resolve_argv(argv: Sequence[str], flag: str = "--config") -> list[str]:
    """`argv` with the value of `flag` (`--config=<spec>` or `--config <spec>`) resolved."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith(f"{flag}="):
            out[i] = f"{flag}={resolve(arg.split('=', 1)[1])}"
        elif arg == flag and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out
