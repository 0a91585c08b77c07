"""A run's stored config as a ConfigDict, for the training side, and its DONE marker.

What the directory holds is named in `run_dir`, which also reads config.json as JSON data.
"""

from __future__ import annotations

import json

import ml_collections
from etils import epath

from softlabel_ood.workdir import atomic_files, run_dir, run_summary
from softlabel_ood.workdir.run_dir import RunError


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """The run's resolved config as JSON data, without the family's experiment grid."""
    data = json.loads(config.to_json_best_effort())
    data.pop("grid", None)
    return data


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
    text = json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n"
    atomic_files.write_text_atomically(epath.Path(workdir) / run_dir.CONFIG, text)


def read_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
    """The stored config as the run's ConfigDict (`run_dir.read_config`'s errors). Runs of
    earlier versions may lack fields; `run_data.with_every_dataset_path` fills the paths."""
    refuse_imported(epath.Path(workdir))
    data = run_dir.read_config(epath.Path(workdir))
    if not isinstance(data.get("dataset_paths", {}), dict):
        raise RunError(f"{run_dir.config_path(epath.Path(workdir))}: field 'dataset_paths' is "
                       f"{data['dataset_paths']!r}, expected an object (a path per dataset)")
    return ml_collections.ConfigDict(_lists_to_tuples(data))


def refuse_imported(workdir: epath.PathLike) -> None:
    """RunError for a directory of imported outputs (`import_outputs`): its config.json holds
    only their OOD groups, and there is no model to predict with, teach or fine-tune, and no
    run for `train` to write over them."""
    workdir = epath.Path(workdir)
    manifest = run_dir.predictions_path(workdir) / run_dir.MANIFEST
    try:
        run = json.loads(manifest.read_text()).get("run", {})
    except (OSError, ValueError, AttributeError):
        return  # no manifest, or one that its own reader reports
    if isinstance(run, dict) and run_summary.is_imported(run):
        raise RunError(f"{workdir}: holds imported outputs (import_outputs), not a run trained "
                       "here: there is no model to predict with, teach or fine-tune")


def _lists_to_tuples(value):
    # JSON has no tuples; config files use them, and only tuples can be overridden by flags.
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def is_finished(workdir: epath.PathLike) -> bool:
    return run_dir.is_finished(epath.Path(workdir))


def mark_finished(workdir: epath.PathLike) -> None:
    atomic_files.write_text_atomically(epath.Path(workdir) / run_dir.DONE, "finished\n")
