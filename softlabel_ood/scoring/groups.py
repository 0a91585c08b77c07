"""Named groups of OOD sets (e.g. near and far, as OpenOOD v1.5 groups them) and their means.

A config family names its groups in `config.ood_groups` ({group: (OOD set, ...)}); a run stores
them in `<run_dir>/config.json`, where `score` and the report find them. A group's mean is the
unweighted mean of a metric over the group's OOD sets that were scored; a group none of whose
sets was scored has no mean. Groups need not cover every OOD set, and may overlap.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from softlabel_ood.scoring.metrics import ScoringError

Groups = dict[str, tuple[str, ...]]
CONFIG_FILE = "config.json"  # saved_runs.CONFIG_FILE, named here so scoring needs no flax


def _checked(groups, where: str) -> Groups:
    if not isinstance(groups, Mapping):
        raise ScoringError(f"{where}: ood_groups is {groups!r}, expected {{group: [OOD set, ...]}}")
    out = {}
    for name, members in groups.items():
        if not isinstance(name, str) or not name or isinstance(members, str) \
                or not isinstance(members, list | tuple) \
                or not all(isinstance(m, str) and m for m in members):
            raise ScoringError(f"{where}: ood_groups entry {name!r}: {members!r} is not a list "
                               "of OOD set names")
        out[name] = tuple(members)
    return out


def read_groups(run_dir) -> Groups:
    """The run's `ood_groups` from its stored config; {} when it has none."""
    path = pathlib.Path(os.fspath(run_dir)) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScoringError(f"{path}: not valid JSON ({e})") from None
    return _checked(config.get("ood_groups") or {}, str(path)) if isinstance(config, dict) else {}


def parse_groups(text: str) -> Groups:
    """`near=cifar100,tin;far=svhn,textures` -> {"near": ("cifar100", "tin"), ...}."""
    groups = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, members = part.partition("=")
        members = tuple(filter(None, (m.strip() for m in members.split(","))))
        if not sep or not name.strip() or not members:
            raise ScoringError(f"--groups: {part!r} is not <group>=<OOD set>[,<OOD set>...]")
        groups[name.strip()] = members
    return groups


def group_means(values: Mapping[str, float], groups: Mapping[str, tuple[str, ...]]
                ) -> dict[str, float]:
    """{group: mean of values over the group's members present in `values`}."""
    out = {}
    for name, members in groups.items():
        present = [values[m] for m in members if m in values]
        if present:
            out[name] = float(np.mean(present))
    return out
