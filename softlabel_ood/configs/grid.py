"""The experiment grids, as plain data that a config file stores in `config.grid`: the paper's
(`paper_grid`, every family's default) and the soft-label family's (`family_grid`, which
`reproduce --grid=family` puts in its place, `select_grid`).

A grid is `{"seeds": (...), "runs": [run, ...]}`; each run is a dict with
  name       the run's name; its directory is `runs/<name>_seed<seed>`
  method     ce | ls | oe | kd | kd_incorrect
  overrides  config fields to set for this run, e.g. {"label_smoothing": 0.1}
  teacher    name of another run of the grid whose model (same seed) is this run's KD teacher, or ""
  init_from  name of another run (same seed) to fine-tune from, e.g. OE fine-tuning, or ""
Runs are listed teachers first; `validate_grid` checks that order rather than sorting it out itself.
One run of the grid (an entry trained with one seed) is a `RunInfo`, as `reproduce` plans it
and the report reads it back.

How the grid is trained (fields of the grid, not of its runs, so changing them never changes a
run's identity):
  max_population  the most runs trained together in one compiled program (`populations`);
                  0 = measured at grid start (`probe`), 1 = every run alone
  run_devices     devices along the mesh's "runs" axis for a population (0 = as many as
                  divide the population and the devices: whole runs per device first; 1 =
                  each run's batch split over all devices)
  workers         populations trained at the same time, each in its own process (`workers`);
                  0 = automatic (2 on a CPU, 1 on an accelerator or with several JAX processes)
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from etils import epath

from softlabel_ood import methods
from softlabel_ood.cli_errors import UserError

if TYPE_CHECKING:
    import ml_collections


def run_spec(name: str, method: str, *, teacher: str = "", init_from: str = "",
             **overrides) -> dict:
    return {"name": name, "method": method, "overrides": dict(overrides), "teacher": teacher,
            "init_from": init_from}


def run_dir_name(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One run of a grid: one grid entry trained with one seed."""

    run: str  # the run directory's base name: the `run` column of metrics.csv
    entry: str  # the grid entry's name, e.g. "ls0.1"; its seeds share it
    seed: int
    method: str  # a name of `methods`: ce | ls | oe | kd | kd_incorrect | ...
    # The value of the method's strength (`methods.Method.strength`: α, config.label_smoothing,
    # of ls and kd_incorrect), 0 for a method without one.
    strength: float
    teacher: str = ""  # grid name of the KD teacher, or ""
    init_from: str = ""  # grid name of the run it was fine-tuned from, or ""
    directory: str = ""  # the run directory (predictions under it), or "" when not at hand


_SEED_SUFFIX = re.compile(r"_seed(\d+)$")


def grid_name(run_dir_name: str) -> str:
    """`ls0.1_seed2` -> `ls0.1`: the grid entry of a run directory (inverts `run_dir_name`)."""
    return _SEED_SUFFIX.sub("", run_dir_name)


def paper_grid(*, ls_alphas, kd_ls_alpha, incorrect_alpha, seeds,
               oe_finetune: dict | None = None) -> ml_collections.ConfigDict:
    """ce; ls for each alpha; oe; kd from the ce, ls and oe teachers; kd_incorrect from ce and oe.

    `kd_ls_alpha` must be one of `ls_alphas`: the ls teacher is that run of the sweep.
    `incorrect_alpha` is the mass that kd_incorrect puts on the incorrect classes; choosing one
    of `ls_alphas` makes the comparison of claim 3 (uniform vs teacher-shaped incorrect mass) fair.
    `oe_finetune` (config overrides, e.g. the OE reference's {"num_epochs": 10,
    "learning_rate": 0.001}) adds OE fine-tuned from the finished ce run, "oe_ft", as a second
    OE teacher beside OE from scratch, with its kd and kd_incorrect students.
    """
    if kd_ls_alpha not in ls_alphas:
        raise ValueError(f"kd_ls_alpha={kd_ls_alpha} is not one of ls_alphas={ls_alphas}")
    ls_name = {a: f"ls{a:g}" for a in ls_alphas}
    runs = [run_spec("ce", "ce")]
    runs += [run_spec(ls_name[a], "ls", label_smoothing=a) for a in ls_alphas]
    runs += [
        run_spec("oe", "oe"),
        run_spec("kd_ce", "kd", teacher="ce"),
        run_spec(f"kd_{ls_name[kd_ls_alpha]}", "kd", teacher=ls_name[kd_ls_alpha]),
        run_spec("kd_oe", "kd", teacher="oe"),
        run_spec("kdi_ce", "kd_incorrect", teacher="ce", label_smoothing=incorrect_alpha),
        run_spec("kdi_oe", "kd_incorrect", teacher="oe", label_smoothing=incorrect_alpha),
    ]
    if oe_finetune is not None:
        runs += [
            run_spec("oe_ft", "oe", init_from="ce", **oe_finetune),
            run_spec("kd_oe_ft", "kd", teacher="oe_ft"),
            run_spec("kdi_oe_ft", "kd_incorrect", teacher="oe_ft",
                     label_smoothing=incorrect_alpha),
        ]
    return _grid(runs, seeds)


def _grid(runs: list[dict], seeds) -> ml_collections.ConfigDict:
    """`config.grid`: the runs and seeds, trained as `max_population`, `run_devices` and
    `workers` measure or choose (0)."""
    # Imported here: `results` reads grid names on the core install, which has no ml_collections.
    import ml_collections

    g = ml_collections.ConfigDict()
    g.seeds = tuple(seeds)
    g.runs = runs
    g.max_population = 0
    g.run_devices = 0
    g.workers = 0
    return g


# The soft-label family (DESIGN.md §8): ls at these α, and each method at its record's default
# strength and at the one stronger setting here, which softens more (each value's reason in §8).
FAMILY_LS_ALPHAS = (0.1, 0.3)
FAMILY_STRONGER = {
    "mixup": {"mixup.alpha": 1.0},
    "cutmix": {"cutmix.prob": 1.0},
    "logitnorm": {"logitnorm.temperature": 0.01},
    "focal": {"focal.gamma": 5.0},
    "confidence_penalty": {"confidence_penalty.beta": 0.5},
}
# The methods whose entries the family report decides (`analysis.family_claims`): ls and these.
FAMILY_METHODS = ("ls", *FAMILY_STRONGER)


def family_entry_name(method: str, values: Mapping[str, float]) -> str:
    """`mixup0.2`, `cutmix1_prob1`: the method and the value of its strength in `values` (its
    hyperparameters' values), then each other field of `values` at a value not its default."""
    record = methods.get(method)
    name = method + (f"{values[record.strength]:g}" if record.strength else "")
    defaults = {h.field: h.default for h in record.hyperparameters}
    return name + "".join(f"_{field.rsplit('.', 1)[-1]}{value:g}"
                          for field, value in values.items()
                          if field != record.strength and value != defaults.get(field))


def _family_entry(method: str, changes: Mapping[str, float]) -> dict:
    """The method at its record's defaults, with `changes`; every value it reads is set, so that
    a --config override cannot leave the entry's name stale."""
    values = {h.field: h.default for h in methods.get(method).hyperparameters}
    values.update(changes)
    return run_spec(family_entry_name(method, values), method, **values)


def family_grid(*, seeds, ls_alphas=FAMILY_LS_ALPHAS,
                stronger: Mapping[str, Mapping[str, float]] | None = None
                ) -> ml_collections.ConfigDict:
    """ce; ls at each of `ls_alphas`; each method of `stronger` (default `FAMILY_STRONGER`) at its
    defaults, then with the changes `stronger` gives it. A method's entries differ only in
    traced hyperparameters, so its sweep shares one compiled program."""
    stronger = FAMILY_STRONGER if stronger is None else stronger
    runs = [run_spec("ce", "ce")]
    runs += [run_spec(f"ls{a:g}", "ls", label_smoothing=a) for a in ls_alphas]
    for method, changes in stronger.items():
        runs += [_family_entry(method, {}), _family_entry(method, changes)]
    return _grid(runs, seeds)


# The grids `reproduce --grid` selects: the config family's own (the paper's), or the family's.
GRIDS = ("paper", "family")


def select_grid(config: ml_collections.ConfigDict, name: str) -> None:
    """Replaces `config.grid`'s runs by those of grid `name` (one of `GRIDS`), keeping its seeds
    and how it is trained (population size, devices, workers)."""
    if name not in GRIDS:
        raise GridError(f"--grid: unknown grid {name!r}; expected one of {', '.join(GRIDS)}")
    if name == "family" and "grid" in config:  # a config without one is refused by validate_grid
        config.grid.runs = list(family_grid(seeds=config.grid.seeds).runs)


_RUN_KEYS = frozenset({"name", "method", "overrides", "teacher", "init_from"})
# Fields the grid sets for every run (`run_config`), with where it takes each from: neither a
# grid entry nor the command line may set them.
OWNED_FIELDS = {"method": "its entry's method in config.grid.runs",
                "seed": "config.grid.seeds",
                "kd.teacher_workdir": "its entry's teacher in config.grid.runs",
                "oe.finetune_from": "its entry's init_from in config.grid.runs"}
_DRIVER_FIELDS = frozenset({*OWNED_FIELDS, "grid"})


class GridError(UserError):
    """`config.grid` cannot be run as given."""


def _flat_keys(config: Mapping, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if isinstance(value, Mapping):
            keys |= _flat_keys(value, f"{prefix}{key}.")
    return keys


def validate_grid(config: ml_collections.ConfigDict) -> None:
    """Raises GridError naming the first problem of `config.grid`."""
    if "grid" not in config:
        raise GridError("config.grid: missing; this config file defines no experiment grid")
    g = config.grid
    seeds = list(g.get("seeds", ()))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"config.grid.seeds: {seeds!r} must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"config.grid.seeds: {seeds!r} repeats a seed")
    for key, least in (("max_population", 0), ("run_devices", 0), ("workers", 0)):
        value = g.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise GridError(f"config.grid.{key}: {value!r} must be an integer >= {least}")
    runs = list(g.get("runs", ()))
    if not runs:
        raise GridError("config.grid.runs: empty; the grid has no runs")
    fields = _flat_keys(config.to_dict())
    earlier: dict[str, str] = {}  # name -> method of the runs listed so far
    for i, run in enumerate(runs):
        where = f"config.grid.runs[{i}]"
        if not isinstance(run, Mapping):
            raise GridError(f"{where}: {run!r} is not a dict (use "
                            f"softlabel_ood.configs.grid.run_spec)")
        missing, extra = {"name", "method"} - set(run), set(run) - _RUN_KEYS
        if missing or extra:
            raise GridError(f"{where}: missing keys {sorted(missing)}" if missing else
                            f"{where}: unknown keys {sorted(extra)}; known: {sorted(_RUN_KEYS)}")
        name, method = run["name"], run["method"]
        if not isinstance(name, str) or not name or "/" in name or name != name.strip():
            raise GridError(f"{where}: name {name!r} is not a plain directory name")
        where = f"config.grid.runs[{i}] ({name})"
        if name in earlier:
            raise GridError(f"{where}: duplicate run name {name!r}")
        if method not in methods.BY_NAME:
            raise GridError(f"{where}: unknown method {method!r}; expected one of "
                            f"{methods.names()}")
        teacher, init_from = run.get("teacher", ""), run.get("init_from", "")
        if methods.needs_teacher(method) and not teacher:
            raise GridError(f"{where}: method {method} needs a teacher")
        if teacher and not methods.needs_teacher(method):
            raise GridError(f"{where}: teacher {teacher!r} given, but method {method} uses none")
        for key, ref in (("teacher", teacher), ("init_from", init_from)):
            if ref and ref not in earlier:
                raise GridError(f"{where}: {key} {ref!r} must name a run listed before it")
        for key in run.get("overrides", {}) or {}:
            if key in _DRIVER_FIELDS:
                raise GridError(f"{where}: overrides may not set {key}; the driver sets it")
            if key not in fields:
                raise GridError(f"{where}: overrides field {key!r} is not a config field")
        earlier[name] = method


def check_overrides(overridden: Iterable[str]) -> None:
    """GridError naming the first of the `--config.<field>` overrides given that sets a field
    the grid sets for every run (`OWNED_FIELDS`): it would be silently replaced."""
    for name in overridden:
        owner = next((f for f in OWNED_FIELDS if name == f or name.startswith(f + ".")), None)
        if owner is not None:
            raise GridError(f"config.{name}: the grid sets it for every run, from "
                            f"{OWNED_FIELDS[owner]}; change the grid instead (train runs one "
                            f"run with the values given)")


def check_config_argument(config_file: str, method_arguments: Iterable[str]) -> None:
    """GridError when `--config=<file>:<arg>` names a method (`method_arguments`): the grid
    sets each run's method, so the argument would be silently ignored."""
    path, colon, arg = config_file.rpartition(":")
    if colon and path and arg in set(method_arguments):
        raise GridError(f"--config={config_file}: the grid sets each run's method, from its "
                        f"entry in config.grid.runs, so ':{arg}' would be ignored; drop it "
                        f"(train runs one run of {arg})")


def run_dir(workdir: epath.PathLike, name: str, seed: int) -> epath.Path:
    return epath.Path(workdir) / "runs" / run_dir_name(name, seed)


def run_config(config: ml_collections.ConfigDict, run: Mapping, seed: int,
               workdir: epath.PathLike) -> ml_collections.ConfigDict:
    """The config of one run: the family config without its grid, with the run's settings."""
    c = copy.deepcopy(config)
    with c.unlocked():
        del c["grid"]
    try:
        c.update_from_flattened_dict(dict(run.get("overrides", {}) or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise GridError(f"config.grid run {run['name']!r}: overrides: {e}") from None
    c.method = run["method"]
    c.seed = seed
    # Teacher and starting point are the same seed's runs, so seeds stay independent replicas.
    c.kd.teacher_workdir = str(run_dir(workdir, run["teacher"], seed)) if run.get("teacher") else ""
    c.oe.finetune_from = (str(run_dir(workdir, run["init_from"], seed))
                          if run.get("init_from") else "")
    return c
