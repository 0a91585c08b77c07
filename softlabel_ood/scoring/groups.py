"""Named groups of OOD sets (e.g. near and far, as OpenOOD v1.5 groups them) and their means.

A config family names its groups in `config.ood_groups` ({group: (OOD set, ...)}); a run stores
them in `<run_dir>/config.json`, where `score` and the report find them, and `score --groups`
replaces them. A group's mean is the unweighted mean of a metric over the group's OOD sets.
Groups need not cover every OOD set, and may overlap; a group with no sets is no group. Every
set a group names must be an OOD set of each run scored (`check_groups`): a group that names
another set would otherwise get the mean of some of its sets under its name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.workdir import run_dir as run_dir_lib

Groups = dict[str, tuple[str, ...]]


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
        if members:  # `--config.ood_groups.<group>=()` removes a group
            out[name] = tuple(members)
    return out


def groups_of(config: Mapping, run_dir) -> Groups:
    """The `ood_groups` of a stored config (`run_dir.read_config`); {} when it names none (a run
    saved before the field existed)."""
    return _checked(config.get("ood_groups") or {}, str(run_dir_lib.config_path(run_dir)))


def read_groups(run_dir) -> Groups:
    """The run's `ood_groups` from its stored config; {} when it has none."""
    return groups_of(run_dir_lib.read_config(run_dir, missing_ok=True), run_dir)


def parse_groups(text: str) -> Groups:
    """`near=cifar100,tin;far=svhn,textures` -> {"near": ("cifar100", "tin"), ...}."""
    groups = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, members = part.partition("=")
        name = name.strip()
        members = tuple(filter(None, (m.strip() for m in members.split(","))))
        if not sep or not name or not members:
            raise ScoringError(f"--groups: {part!r} is not <group>=<OOD set>[,<OOD set>...]")
        if name in groups:
            raise ScoringError(f"--groups: group {name!r} is named twice")
        if len(set(members)) != len(members):
            raise ScoringError(f"--groups: group {name!r} names "
                               f"{next(m for m in members if members.count(m) > 1)!r} twice")
        groups[name] = members
    if not groups:
        raise ScoringError(f"--groups: {text!r} names no group; expected "
                           "<group>=<OOD set>[,<OOD set>...][;...]")
    return groups


def check_groups(groups: Mapping[str, tuple[str, ...]], splits: Mapping[str, str], *,
                 run: str, where: str) -> None:
    """ScoringError unless every set that `groups` names is an OOD split of the run whose
    predictions hold `splits` ({split name: role}); `where` says where the groups came from."""
    oods = [name for name, role in splits.items() if role == "ood_test"]
    for group, members in groups.items():
        if len(set(members)) != len(members):
            raise ScoringError(f"{where}: group {group!r} names "
                               f"{next(m for m in members if members.count(m) > 1)!r} twice")
        for member in members:
            role = splits.get(member)
            if role == "ood_test":
                continue
            what = (f"the {role} split of run {run}; a group holds OOD sets" if role else
                    f"which the predictions of run {run} do not hold (OOD sets: "
                    f"{', '.join(oods) or 'none'})")
            raise ScoringError(f"{where}: group {group!r} names {member!r}, {what}")


def group_means(values: Mapping[str, float], groups: Mapping[str, tuple[str, ...]]
                ) -> dict[str, float]:
    """{group: mean of values over the group's members present in `values`}."""
    out = {}
    for name, members in groups.items():
        present = [values[m] for m in members if m in values]
        if present:
            out[name] = float(np.mean(present))
    return out
