"""Outputs that belong together switch together: a process killed after any rename of score's
metrics files or of reproduce's report leaves the whole old directory or the whole new one,
never a new metrics.csv beside an old metrics.md or report.md.

Each case forks a writer that kills itself (SIGKILL) right after its k-th rename (the first,
and each rename of the switch), once with Linux's atomic exchange and once without it (two
renames, between which a kill is repaired by the next write)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from softlabel_ood import scoring
from softlabel_ood.analysis import environment, report
from softlabel_ood.scoring import MetricRow
from softlabel_ood.workdir import atomic_files
from tests.report_helpers import metric_rows, paper_runs
from tests.test_claims import PAPER_LIKE

# The forked writer only writes files (the report's environment is stubbed): no JAX runs in it.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


def _renames_then_kill(write, kill_after: int | None, exchange: bool) -> int:
    """Runs `write` in a forked process that is killed right after its `kill_after`-th rename
    (None: never); returns how many renames it made (when not killed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into pytest
        try:
            os.close(read_end)
            count = [0]

            def counted(rename):
                def wrapped(*args, **kwargs):
                    result = rename(*args, **kwargs)
                    count[0] += 1
                    if count[0] == kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return result
                return wrapped

            os.rename, os.replace = counted(os.rename), counted(os.replace)
            real_exchange = atomic_files._exchange
            atomic_files._exchange = counted(real_exchange) if exchange else (lambda a, b: False)
            write()
            os.write(write_end, str(count[0]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    renames = os.read(read_end, 32)
    os.close(read_end)
    if kill_after is None:
        assert os.WIFEXITED(status), "the writer failed"
        assert renames, "the writer failed"
        return int(renames)
    assert os.WIFSIGNALED(status), "the writer was not killed where asked"
    assert os.WTERMSIG(status) == signal.SIGKILL
    return kill_after


def _contents(directory, names) -> tuple | None:
    if not directory.exists():
        return None
    return tuple((directory / name).read_bytes() for name in names)


def _exchange_works(tmp_path) -> bool:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        return atomic_files._exchange(tmp_path / "a", tmp_path / "b")
    finally:
        (tmp_path / "a").rmdir()
        (tmp_path / "b").rmdir()


def _check_kills(tmp_path, write_old, write_new, out, names, exchange, *, all_renames=True):
    """Writes old, then kills a writing of new after its renames (`all_renames`: each; else the
    first and the last, the switch): `out` holds old or new whole, or nothing (between two
    renames), and the repair that the next write starts with leaves a whole one."""
    if exchange and not _exchange_works(tmp_path):
        pytest.skip("this file system has no atomic exchange of two directories (renameat2)")
    write_old()
    old = _contents(out, names)
    saved = tmp_path / "old_copy"
    shutil.copytree(out, saved)
    renames = _renames_then_kill(write_new, None, exchange)
    new = _contents(out, names)
    assert new != old
    # The switch is the last rename (an exchange) or the last three (aside, in, back).
    kills = range(1, renames + 1) if all_renames else \
        sorted({1, *range(max(1, renames - (1 if exchange else 3) + 1), renames + 1)})
    for k in kills:
        shutil.rmtree(out)
        shutil.copytree(saved, out)
        _renames_then_kill(write_new, k, exchange)
        seen = _contents(out, names)
        assert seen in (old, new) or (seen is None and not exchange), (k, renames)
        atomic_files.remove_stale_temporaries(out)  # what the next write does first
        assert _contents(out, names) in (old, new), (k, renames)
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name], (k, renames)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two_renames"])
def test_score_metrics_files_switch_together(tmp_path, exchange):
    out = tmp_path / "work" / "out"
    out.parent.mkdir()

    def write(runs):
        return lambda: scoring.write_metrics(
            [MetricRow(run, "msp", "noise", "auroc", 0.5 + i / 10) for i, run in enumerate(runs)],
            out)

    _check_kills(tmp_path, write(["a"]), write(["a", "b"]), out, ("metrics.csv", "metrics.md"),
                 exchange)


def test_reproduce_report_switches_as_a_whole(tmp_path, monkeypatch):
    # One way of switching (the machine's): both are the code that score's test runs both ways.
    # Each write renders the figures (seconds), so the writer is killed after its first rename
    # (inside the new directory) and after each rename of the switch.
    monkeypatch.setattr(environment, "describe", lambda: {"python": "3"})  # no JAX in the fork
    out = tmp_path / "work" / "report"
    out.parent.mkdir()
    runs = paper_runs(seeds=(0,))

    def write(shift):
        rows = [MetricRow(r.run, r.score, r.ood, r.metric, r.value - shift)
                for r in metric_rows(runs, PAPER_LIKE)]
        return lambda: report.write_report(rows, out, runs=runs)

    _check_kills(tmp_path, write(0.0), write(0.01), out,
                 ("metrics.csv", "metrics.md", "runs.json", "report.md", "alpha_sweep_auroc.png"),
                 _exchange_works(tmp_path), all_renames=False)
