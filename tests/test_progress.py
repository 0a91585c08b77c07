"""progress.bar: a live tqdm bar on a terminal, plain lines without control codes elsewhere."""

from __future__ import annotations

import io
import subprocess
import sys

import tqdm

from softlabel_ood import progress
from tests.report_helpers import write_predictions
from tests.train_helpers import REPO


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _nested_bars(out):
    """A grid bar holding run bars, as reproduce and the train loop draw them."""
    grid = progress.bar(range(3), file=out, desc="grid", unit="run")
    for i in grid:
        grid.set_postfix_str(f"run{i}")
        steps = progress.bar(total=200, file=out, desc=f"run{i}", unit="step")
        for _ in range(20):
            steps.update(10)
            steps.set_postfix(loss="0.1234")  # tqdm redraws on every postfix
        tqdm.tqdm.write(f"run{i}: trained", file=out)
        steps.close()
    grid.close()


def test_a_log_gets_whole_lines_without_control_codes():
    out = io.StringIO()
    _nested_bars(out)
    text = out.getvalue()
    assert "\r" not in text
    assert "\x1b" not in text
    lines = text.splitlines()
    # Within LOG_INTERVAL_S each bar draws its first and its last line only.
    assert lines[0].startswith("grid:   0%")
    for i in range(3):
        run_lines = [line for line in lines if line.startswith(f"run{i}:")]
        assert len(run_lines) == 3, run_lines  # 0/200, the message, 200/200
        assert run_lines[0].startswith(f"run{i}:   0%")
        assert run_lines[1] == f"run{i}: trained"
        assert "200/200" in run_lines[2]
        assert "loss=0.1234" in run_lines[2]
    assert "3/3" in lines[-1]
    assert lines[-1].startswith("grid: 100%")
    assert len(lines) == 1 + 3 * 3 + 1


def test_a_log_gets_a_line_per_interval(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])  # the clock tqdm reads
    out = io.StringIO()
    bar = progress.bar(total=100, file=out, desc="steps")
    for _ in range(100):
        now[0] += 7.0
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # 700 s of updates 7 s apart, a line once 30 s have passed (every 5th update, 35 s): the
    # first line and 20 more, the last at 100/100, which closing the bar does not repeat.
    assert len(lines) == 1 + 20, lines
    assert [line.split("|")[0] for line in lines[:3]] == ["steps:   0%", "steps:   5%",
                                                          "steps:  10%"]
    assert lines[-1].startswith("steps: 100%")


def test_a_terminal_gets_tqdms_live_bar():
    out = _Terminal()
    bar = progress.bar(total=5, file=out, desc="steps")
    bar.update(5)
    bar.close()
    assert "\r" in out.getvalue()  # redrawn in place


def test_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    bar = progress.bar(total=5, file=out, disable=True)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_the_score_command_logs_plain_lines(tmp_path):
    for seed in (0, 1):
        write_predictions(tmp_path / f"run{seed}", seed=seed, method="ce")
    result = subprocess.run(
        [sys.executable, "-m", "softlabel_ood.score", str(tmp_path / "run0"),
         str(tmp_path / "run1"), f"--out={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "scoring runs: 100%" in result.stderr
    assert "\r" not in result.stderr
    assert "\x1b" not in result.stderr
