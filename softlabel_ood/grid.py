"""The paper's experiment grid, as plain data that a config file stores in `config.grid`.

A grid is `{"seeds": (...), "runs": [run, ...]}`; each run is a dict with
  name       the run's name; its directory is `runs/<name>_seed<seed>`
  method     ce | ls | oe | kd | kd_incorrect
  overrides  config fields to set for this run, e.g. {"label_smoothing": 0.1}
  teacher    name of another run of the grid whose model (same seed) is this run's KD teacher, or ""
  init_from  name of another run (same seed) to fine-tune from, e.g. OE fine-tuning, or ""
Runs are listed teachers first; `reproduce` checks that order rather than sorting it out itself.

How the grid is trained (fields of the grid, not of its runs, so changing them never changes a
run's identity):
  max_population  the most runs trained together in one compiled program (`populations`);
                  0 = automatic by platform, 1 = every run alone
  run_devices     devices along the mesh's "runs" axis for a population (1 = each run's batch
                  split over all devices; larger values give devices whole runs)
"""

from __future__ import annotations

import ml_collections


def run_spec(name: str, method: str, *, teacher: str = "", init_from: str = "",
             **overrides) -> dict:
    return {"name": name, "method": method, "overrides": dict(overrides), "teacher": teacher,
            "init_from": init_from}


def run_dir_name(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"


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
    g = ml_collections.ConfigDict()
    g.seeds = tuple(seeds)
    g.runs = runs
    g.max_population = 0
    g.run_devices = 1
    return g
