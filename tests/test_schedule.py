"""The grid's progress lines: numbered in the order runs end, whichever worker ends them."""

from __future__ import annotations

import re

from softlabel_ood import reproduce
from softlabel_ood.configs import grid
from softlabel_ood.experiment import schedule
from tests.train_helpers import tiny_digits_config


class LastStartedEndsFirst:
    """A stand-in for `workers.Pool` whose populations end in the reverse order of their
    start, as a short run in the second worker outruns a long one in the first."""

    def __init__(self, size: int):
        self.size, self.running = size, []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    @property
    def busy(self):
        return bool(self.running)

    @property
    def full(self):
        return len(self.running) >= self.size

    def start(self, population, configs, workdirs, grid):
        self.running.append((population, len(configs)))

    def finished(self):
        population, runs = self.running.pop()
        yield population, [None] * runs, 1.0


def test_progress_lines_count_runs_in_the_order_they_end(tmp_path, monkeypatch, capsys):
    config = tiny_digits_config()
    config.grid.seeds = (0,)
    config.grid.workers = 2
    config.grid.runs = [grid.run_spec("ce", "ce"),
                        grid.run_spec("ls0.2", "ls", label_smoothing=0.2),
                        grid.run_spec("kd_ce", "kd", teacher="ce")]
    planned = reproduce.planned_runs(config, str(tmp_path))
    monkeypatch.setattr(schedule.workers, "Pool", LastStartedEndsFirst)
    assert schedule.train(planned, [[0], [1], [2]], config.grid) == {}
    lines = re.findall(r"^\[.*$", capsys.readouterr().err, re.M)
    # ce and ls0.2 start together and ls0.2 ends first; kd_ce starts once its teacher ce ends.
    assert lines == ["[1/3] ls0.2_seed0 (ls): trained in 1 s",
                     "[2/3] ce_seed0 (ce): trained in 1 s",
                     "[3/3] kd_ce_seed0 (kd): trained in 1 s"]
