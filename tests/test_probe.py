"""experiment/probe.py: the population size is measured on the grid's own program, never assumed."""

from __future__ import annotations

import json

import jax
import pytest

from softlabel_ood.configs import grid
from softlabel_ood.data import run_data
from softlabel_ood.experiment import populations, probe
from softlabel_ood.training import runs_axis, train_step
from tests.train_helpers import tiny_digits_config


def _fake_rates(monkeypatch, rates: dict[int, float]) -> list[int]:
    """Makes `images_per_second` report `rates`; returns the sizes it was asked for."""
    asked = []

    def fake(config, data, runs, mesh, **_):
        asked.append(runs)
        return rates[runs], 0.1 * runs

    monkeypatch.setattr(probe, "images_per_second", fake)
    monkeypatch.setattr(run_data, "load_training", lambda config: None)
    return asked


LONG = 10**9  # training images of a grid whose compiles are negligible beside its training


@pytest.mark.parametrize(("rates", "largest", "work", "asked", "chosen"), [
    # Larger populations pay: doubled while each is 5% faster than the one chosen before it.
    ({1: 100.0, 2: 150.0, 4: 200.0, 8: 205.0}, 18, LONG, [1, 2, 4, 8], 4),
    # A gain within the noise (4% here) is not taken: it would only cost a larger compile.
    ({1: 100.0, 2: 104.0}, 18, LONG, [1, 2], 1),
    # Slower together (vmapped convolutions on a GPU, say): runs alone.
    ({1: 100.0, 2: 56.0}, 18, LONG, [1, 2], 1),
    # Never more runs per device than the largest group holds.
    ({1: 100.0, 2: 150.0, 4: 300.0}, 3, LONG, [1, 2], 2),
    # A grid of seconds: 8 compiles of 0.1 s each cost more than R = 2 could save by halving
    # its 1 s of training, so R = 2 is not even measured.
    ({1: 100.0, 2: 200.0}, 18, 100, [1], 1),
    # 4 s of training, so R = 2 is measured: 10% faster it takes 3.64 + 8 x 0.2 = 5.24 s
    # against R = 1's 4 + 0.8 = 4.8 s; 3 times faster, 1.33 + 1.6 = 2.93 s, and it is chosen.
    ({1: 100.0, 2: 110.0}, 18, 400, [1, 2], 1),
    ({1: 100.0, 2: 300.0, 4: 310.0}, 18, 400, [1, 2, 4], 2),
])
def test_the_probe_doubles_r_while_it_pays_and_keeps_the_last_that_did(monkeypatch, rates,
                                                                      largest, work, asked,
                                                                      chosen):
    seen = _fake_rates(monkeypatch, rates)
    result = probe.measure(tiny_digits_config(), largest, "the 18 run(s) of ce_seed0's program",
                           work_images=work, programs=8)
    assert seen == asked
    assert result.chosen == chosen
    assert result.images_per_s == {r: rates[r] for r in asked}
    assert f"{chosen} run(s) per device" in result.describe()


def _grid(tmp_path, **grid_fields):
    config = tiny_digits_config()
    config.grid.runs = [grid.run_spec("ce", "ce"), grid.run_spec("ls", "ls", label_smoothing=0.1)]
    config.grid.seeds = (0, 1)
    for key, value in grid_fields.items():
        config.grid[key] = value
    configs = [grid.run_config(config, run, seed, tmp_path) for seed in config.grid.seeds
               for run in config.grid.runs]
    directories = [str(grid.run_dir(tmp_path, run["name"], seed)) for seed in config.grid.seeds
                   for run in config.grid.runs]
    return config.grid, configs, directories, populations.groups(configs, directories)


def test_a_stored_probe_is_read_back_and_an_explicit_size_measures_nothing(tmp_path, monkeypatch):
    g, configs, dirs, groups = _grid(tmp_path)
    assert groups == [[0, 1, 2, 3]]  # ce and ls share one program, across seeds
    asked = _fake_rates(monkeypatch, {1: 100.0, 2: 150.0, 4: 151.0})
    size, result = probe.population_size(g, configs, dirs, groups, tmp_path)
    assert (size, result.chosen) == (2 * jax.local_device_count(), 2)
    stored = json.loads((tmp_path / probe.PROBE_FILE).read_text())
    assert stored["chosen"] == 2
    assert stored["images_per_s"] == {"1": 100.0, "2": 150.0, "4": 151.0}
    # The same grid again on the same kind of device: read back, not measured.
    asked.clear()
    size_again, again = probe.population_size(g, configs, dirs, groups, tmp_path)
    assert (size_again, again, asked) == (size, result, [])
    # A probe made for another grid is measured anew.
    stored["group"] = "other"
    (tmp_path / probe.PROBE_FILE).write_text(json.dumps(stored))
    probe.population_size(g, configs, dirs, groups, tmp_path)
    assert asked == [1, 2, 4]
    # An explicit config.grid.max_population is the size; nothing is measured.
    asked.clear()
    g.max_population = 3
    assert probe.population_size(g, configs, dirs, groups, tmp_path) == (3, None)
    assert asked == []


def test_the_probe_times_the_train_program_that_then_trains_the_grid():
    config = tiny_digits_config()
    data = run_data.load_training(config)
    mesh = runs_axis.data_mesh(jax.local_devices()[:1])
    rate, compile_s = probe.images_per_second(config, data, 2, mesh, min_seconds=0.05)
    assert rate > 0
    assert compile_s > 0
    # The program it compiled is the one the grid's population of 2 runs will call: memoised.
    hits = train_step.make_train_program.cache_info().hits
    probe.images_per_second(config, data, 2, mesh, min_seconds=0.05)
    assert train_step.make_train_program.cache_info().hits > hits
