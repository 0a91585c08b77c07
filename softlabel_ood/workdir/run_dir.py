"""The names in a run directory, and the one reader of its stored config (DESIGN.md §2, §5).

    <run>/config.json                  the resolved config (written when the run starts;
                                       predict records the evaluation fields it ran with)
    <run>/checkpoints/                 orbax checkpoints
    <run>/metrics.jsonl, tensorboard/  the training metrics log
    <run>/predictions/manifest.json    the predictions directory (DESIGN.md §5) and its manifest
    <run>/DONE                         written last: the run trained to the end and wrote its
                                       predictions
    <run>/.lock                        held while a command works in the directory

Python's standard library only, so that scoring and analysis read run directories on a laptop.
A run directory may be local (str, os.PathLike) or any path object with `read_text` and `/`
(etils' epath.Path, for buckets); it is used as it is given.
"""

from __future__ import annotations

import json
import os
import pathlib

from softlabel_ood.cli_errors import UserError

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
METRICS_LOG = "metrics.jsonl"
TENSORBOARD = "tensorboard"
PREDICTIONS = "predictions"
MANIFEST = "manifest.json"  # in PREDICTIONS
DONE = "DONE"
LOCK = ".lock"


class RunError(UserError):
    """A run directory, or its stored config, cannot be read as one."""


def _path(directory):
    # epath.Path (a bucket) keeps its own type; anything else is a local path.
    return directory if hasattr(directory, "read_text") else pathlib.Path(os.fspath(directory))


def config_path(directory):
    return _path(directory) / CONFIG


def predictions_path(directory):
    return _path(directory) / PREDICTIONS


def is_finished(directory) -> bool:
    """The run trained to its last step and wrote its predictions (it holds DONE)."""
    return (_path(directory) / DONE).exists()


def read_config(directory, *, missing_ok: bool = False) -> dict:
    """The run's stored config as JSON data: {field: value}, nested for dotted fields.

    A run saved before a field existed lacks it: the reader of each field gives its default
    for old runs. RunError, one line naming the file, when config.json is missing (unless
    `missing_ok`, which gives {}), is not JSON, names a key twice (JSON keeps the last one
    silently) or is not an object of fields."""
    path = config_path(directory)
    if not path.exists():
        if missing_ok:
            return {}
        raise RunError(f"{path}: missing; {directory} is not a run directory")
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_object_without_repeats)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    except RunError as e:
        raise RunError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: not a run's config (a JSON object of its fields)")
    return data


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise RunError(f"the key {next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)
