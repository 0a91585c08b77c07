"""A run's directory as other code sees it: its stored config and whether it finished.

    <workdir>/config.json     the resolved config (written when the run starts)
    <workdir>/checkpoints/    orbax checkpoints
    <workdir>/predictions/    the predictions directory (DESIGN.md §5)
    <workdir>/DONE            written last: the run trained to the end and wrote its predictions
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from softlabel_ood.cli_errors import UserError
from softlabel_ood.data import datasets
from softlabel_ood.workdir import atomic_files

CONFIG_FILE = "config.json"
DONE_FILE = "DONE"


class RunError(UserError):
    """Another run's directory cannot serve as a teacher or a starting point."""


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The run's resolved config as JSON data, without the family's experiment grid."""
    data = json.loads(config.to_json_best_effort())
    data.pop("grid", None)
    return data


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
    path = epath.Path(workdir) / CONFIG_FILE
    text = json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n"
    atomic_files.write_text_atomically(path, text)


def read_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise RunError(f"{path}: missing; {workdir} is not a run directory")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("dataset_paths", {}), dict):
        raise RunError(f"{path}: not a run's config (a JSON object of its fields)")
    config = ml_collections.ConfigDict(_lists_to_tuples(data))
    # Runs of earlier versions name only the paths they set; every name is a field now.
    with config.unlocked():
        if "dataset_paths" not in config:
            config.dataset_paths = ml_collections.ConfigDict()
        for name in datasets.NAMES:
            if name not in config.dataset_paths:
                config.dataset_paths[name] = ""
    return config


def _lists_to_tuples(value):
    # JSON has no tuples; config files use them, and only tuples can be overridden by flags.
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def is_finished(workdir: epath.PathLike) -> bool:
    return (epath.Path(workdir) / DONE_FILE).exists()


def mark_finished(workdir: epath.PathLike) -> None:
    atomic_files.write_text_atomically(epath.Path(workdir) / DONE_FILE, "finished\n")
