"""grid: the paper's experiment grid as plain data."""

from __future__ import annotations

import pytest

from softlabel_ood.configs import grid


def _paper_grid(**kwargs):
    kwargs = {"ls_alphas": (0.1, 0.3), "kd_ls_alpha": 0.3, "incorrect_alpha": 0.1,
              "seeds": [4, 5], **kwargs}
    return grid.paper_grid(**kwargs)


def _summary(g):
    return [(r["name"], r["method"], r["teacher"], r["init_from"], r["overrides"])
            for r in g.runs]


def test_run_spec_holds_its_overrides_apart():
    assert grid.run_spec("kd_x", "kd", teacher="x", label_smoothing=0.2) == {
        "name": "kd_x", "method": "kd", "overrides": {"label_smoothing": 0.2}, "teacher": "x",
        "init_from": ""}
    assert grid.run_dir_name("ls0.1", 3) == "ls0.1_seed3"


def test_paper_grid_lists_every_run_teachers_first():
    g = _paper_grid()
    assert g.seeds == (4, 5)
    assert (g.max_population, g.run_devices, g.workers) == (0, 0, 0)
    assert _summary(g) == [
        ("ce", "ce", "", "", {}),
        ("ls0.1", "ls", "", "", {"label_smoothing": 0.1}),
        ("ls0.3", "ls", "", "", {"label_smoothing": 0.3}),
        ("oe", "oe", "", "", {}),
        ("kd_ce", "kd", "ce", "", {}),
        ("kd_ls0.3", "kd", "ls0.3", "", {}),
        ("kd_oe", "kd", "oe", "", {}),
        ("kdi_ce", "kd_incorrect", "ce", "", {"label_smoothing": 0.1}),
        ("kdi_oe", "kd_incorrect", "oe", "", {"label_smoothing": 0.1}),
    ]


def test_oe_finetune_adds_a_second_oe_teacher_and_its_students():
    g = _paper_grid(oe_finetune={"num_epochs": 10, "learning_rate": 0.001})
    assert _summary(g)[:9] == _summary(_paper_grid())
    assert _summary(g)[9:] == [
        ("oe_ft", "oe", "", "ce", {"num_epochs": 10, "learning_rate": 0.001}),
        ("kd_oe_ft", "kd", "oe_ft", "", {}),
        ("kdi_oe_ft", "kd_incorrect", "oe_ft", "", {"label_smoothing": 0.1}),
    ]


def test_an_ls_teacher_outside_the_sweep_is_refused():
    with pytest.raises(ValueError, match=r"kd_ls_alpha=0\.7 is not one of"):
        _paper_grid(kd_ls_alpha=0.7)


@pytest.mark.parametrize("name", ["ce", "ls0.1", "kd_ls0.3", "kdi_oe_ft", "run_seed"])
def test_grid_name_inverts_the_run_directory_name(name):
    for seed in (0, 7, 12):
        assert grid.grid_name(grid.run_dir_name(name, seed)) == name


def test_family_grid_sets_each_method_at_its_default_and_its_stronger_setting():
    g = grid.family_grid(seeds=(0, 1, 2), stronger={"mixup": {"mixup.alpha": 1.0},
                                                    "cutmix": {"cutmix.prob": 1.0}})
    assert g.seeds == (0, 1, 2)
    # Every value the method reads is set: the name cannot go stale under a --config override.
    assert [(r["name"], r["method"], r["overrides"]) for r in g.runs] == [
        ("ce", "ce", {}),
        ("ls0.1", "ls", {"label_smoothing": 0.1}),
        ("ls0.3", "ls", {"label_smoothing": 0.3}),
        ("mixup0.2", "mixup", {"mixup.alpha": 0.2}),
        ("mixup1", "mixup", {"mixup.alpha": 1.0}),
        ("cutmix1", "cutmix", {"cutmix.alpha": 1.0, "cutmix.prob": 0.5}),
        ("cutmix1_prob1", "cutmix", {"cutmix.alpha": 1.0, "cutmix.prob": 1.0}),
    ]
    assert grid.family_grid(seeds=(0,), ls_alphas=(0.2,), stronger={}).runs[1]["name"] == "ls0.2"


def test_the_default_family_grid_has_every_family_method_twice():
    names = [r["name"] for r in grid.family_grid(seeds=(0,)).runs]
    assert names[:3] == ["ce", "ls0.1", "ls0.3"]
    for method in grid.FAMILY_METHODS[1:]:
        assert len([r for r in grid.family_grid(seeds=(0,)).runs if r["method"] == method]) == 2


def test_select_grid_keeps_the_seeds_and_how_the_grid_trains():
    from tests.train_helpers import tiny_digits_config

    config = tiny_digits_config()
    config.grid.seeds = (7,)
    config.grid.workers = 1
    grid.select_grid(config, "paper")
    assert [r["name"] for r in config.grid.runs][:2] == ["ce", "ls0.1"]
    assert "oe" in [r["name"] for r in config.grid.runs]
    grid.select_grid(config, "family")
    assert [r["name"] for r in config.grid.runs] == [
        r["name"] for r in grid.family_grid(seeds=(7,)).runs]
    assert (config.grid.seeds, config.grid.workers) == ((7,), 1)
    grid.validate_grid(config)
    with pytest.raises(grid.GridError, match=r"^--grid: unknown grid 'fam'; expected one of "
                                             r"paper, family$"):
        grid.select_grid(config, "fam")


def test_a_method_s_family_entries_share_one_compiled_program(tmp_path):
    from softlabel_ood.configs import config_validation
    from softlabel_ood.training import run_model
    from tests.train_helpers import tiny_digits_config

    config = tiny_digits_config()
    grid.select_grid(config, "family")
    keys = {}
    for run in config.grid.runs:
        c = grid.run_config(config, run, 0, tmp_path)
        config_validation.check(c)
        keys.setdefault(run["method"], set()).add(run_model.population_key(c))
    assert all(len(k) == 1 for k in keys.values())
    assert keys["ce"] == keys["ls"]  # ce is label smoothing at α = 0
    assert len(set().union(*keys.values())) == len(keys) - 1  # one program per other method
