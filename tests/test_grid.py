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
