"""runs.json checked as it is read: each field of its type and range, and the runs it names
those of metrics.csv, so that a file edited by hand is refused in one line naming the file and
the field (DESIGN.md §4), never read into a report that is silently wrong.

`{"environment": {...}, "runs": [...], "report": {...}}` (`results.write_runs_json`); the list of
runs alone in reports written before the environment was recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from etils import epath

from softlabel_ood import methods
from softlabel_ood.cli_errors import UserError


class RunsFileError(UserError):
    """A runs.json that is not one `results.write_runs_json` writes."""


# field -> (what it must be, its check); `run`, `entry`, `seed`, `method` and `strength` required.
_RUN_FIELDS = {
    "run": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "entry": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "seed": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    # Empty for a run whose outputs were imported (`import_outputs`): no method of this package.
    "method": (f"one of {', '.join(methods.names())} (or empty)",
               lambda v: v == "" or v in methods.names()),
    "strength": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "teacher": ("a string", lambda v: isinstance(v, str)),
    "init_from": ("a string", lambda v: isinstance(v, str)),
    "directory": ("a string", lambda v: isinstance(v, str)),
}
_REQUIRED = ("run", "entry", "seed", "method", "strength")
# The names reports written before the strength of any method was recorded gave two fields:
# `name` (the grid entry) and `alpha` (α of ls and kd_incorrect, 0 for the others).
_OLD_NAMES = {"name": "entry", "alpha": "strength"}
_OLD_FIELDS = {
    "name": _RUN_FIELDS["entry"],
    "alpha": ("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1),
}
_ODIN_FIELDS = {
    "index": ("an integer", lambda v: _is_int(v)),
    "temperature": ("a number > 0", lambda v: _is_number(v) and v > 0),
    "epsilon": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "epsilons": ("a list of numbers", lambda v: _numbers(v)),
    "id_train_means": ("a list of numbers", lambda v: _numbers(v)),
    "selection": ("'id_train' or 'fixed'", lambda v: v in ("id_train", "fixed")),
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _numbers(value) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def read(path: epath.PathLike, run_fields: Iterable[str] = tuple(_RUN_FIELDS)) -> dict:
    """The checked contents of a runs.json, as `{"runs": [...], ...}` for a list-only one.

    `run_fields` are the keys a run may have (`results.RunInfo`'s fields); those this module
    knows are checked for type and range."""
    path = epath.Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunsFileError(f"{path}: not valid JSON ({e})") from None
    data = {"runs": data} if isinstance(data, list) else data
    if not isinstance(data, dict):
        raise RunsFileError(f"{path}: expected an object with 'runs' (or a list of runs), got "
                            f"{type(data).__name__}")
    if not isinstance(data.get("runs"), list) or not data["runs"]:
        raise RunsFileError(f"{path}: field 'runs' must be a non-empty list of runs")
    seen = set()
    fields = {name: _RUN_FIELDS.get(name, ("any value", lambda v: True)) for name in run_fields}
    for i, entry in enumerate(data["runs"]):
        old = isinstance(entry, dict) and any(key in entry for key in _OLD_NAMES)
        _check_fields(path, f"runs[{i}]", entry, _old_fields(fields) if old else fields,
                      tuple(map(_old_name, _REQUIRED)) if old else _REQUIRED)
        data["runs"][i] = {_OLD_NAMES.get(key, key): value for key, value in entry.items()}
        entry = data["runs"][i]
        if entry["run"] in seen:
            raise RunsFileError(f"{path}: field 'runs[{i}].run' is {entry['run']!r}, which an "
                                f"earlier run has")
        seen.add(entry["run"])
    environment = data.get("environment", {})
    if not isinstance(environment, dict) or not all(
            isinstance(v, str) for v in environment.values()):
        raise RunsFileError(f"{path}: field 'environment' must be an object of strings")
    if "report" in data:
        _check_record(path, data["report"])
    return data


def _old_fields(fields: Mapping) -> dict:
    """`fields` under the names of the old reports, with their old checks."""
    return {_old_name(key): _OLD_FIELDS.get(_old_name(key), check)
            for key, check in fields.items()}


def _old_name(key: str) -> str:
    return next((old for old, new in _OLD_NAMES.items() if new == key), key)


def _check_fields(path, where: str, entry, fields: Mapping, required: Iterable[str]) -> None:
    if not isinstance(entry, dict):
        raise RunsFileError(f"{path}: field '{where}' must be an object, got "
                            f"{type(entry).__name__}")
    for key in required:
        if key not in entry:
            raise RunsFileError(f"{path}: field '{where}.{key}' is missing")
    for key, value in entry.items():
        if key not in fields:
            raise RunsFileError(f"{path}: field '{where}.{key}' is not a field of runs.json "
                                f"(expected {', '.join(fields)})")
        expected, ok = fields[key]
        if not ok(value):
            raise RunsFileError(f"{path}: field '{where}.{key}' is {value!r}, expected "
                                f"{expected}")


def _check_record(path, record) -> None:
    """The "report" record (`results.ReportRecord`)."""
    if not isinstance(record, dict):
        raise RunsFileError(f"{path}: field 'report' must be an object, got "
                            f"{type(record).__name__}")
    for key in ("title", "dataset", "knn_k"):
        if not isinstance(record.get(key, ""), str):
            raise RunsFileError(f"{path}: field 'report.{key}' is {record[key]!r}, expected a "
                                f"string")
    groups = record.get("ood_groups", {})
    if not isinstance(groups, dict) or not all(_strings(m) for m in groups.values()):
        raise RunsFileError(f"{path}: field 'report.ood_groups' must map each group to a list "
                            f"of OOD sets")
    pairs = record.get("odin_pairs", {})
    if not isinstance(pairs, dict):
        raise RunsFileError(f"{path}: field 'report.odin_pairs' must be an object")
    for run, pair in pairs.items():
        _check_fields(path, f"report.odin_pairs.{run}", pair, _ODIN_FIELDS,
                      ("index", "temperature", "epsilon"))
    entropy = record.get("id_entropy", {})
    if not isinstance(entropy, dict) or not all(
            _is_number(h) and h >= 0 for h in entropy.values()):
        raise RunsFileError(f"{path}: field 'report.id_entropy' must map each run to a finite "
                            f"number >= 0 (its mean softmax entropy in nats)")


def check_matches_metrics(path, data: dict, metrics_path, rows) -> None:
    """The runs of runs.json are those of metrics.csv, and what its record names per run or
    per OOD set is among them."""
    runs = [entry["run"] for entry in data["runs"]]
    in_metrics = list(dict.fromkeys(row.run for row in rows))
    unknown = [run for run in in_metrics if run not in runs]
    if unknown:
        raise RunsFileError(f"{metrics_path}: run {unknown[0]!r} is not among the runs of {path}")
    unscored = [run for run in runs if run not in in_metrics]
    if unscored:
        raise RunsFileError(f"{path}: run {unscored[0]!r} has no row in {metrics_path}")
    record = data.get("report", {})
    for field in ("odin_pairs", "id_entropy"):
        for run in record.get(field, {}):
            if run not in runs:
                raise RunsFileError(f"{path}: field 'report.{field}' names run {run!r}, which "
                                    f"'runs' does not")
    ood_sets = {row.ood for row in rows if row.ood}
    for group, members in record.get("ood_groups", {}).items():
        for member in members:
            if member not in ood_sets:
                raise RunsFileError(f"{path}: field 'report.ood_groups.{group}' names "
                                    f"{member!r}, which no row of {metrics_path} scores")
