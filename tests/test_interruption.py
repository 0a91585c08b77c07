"""Ctrl-C (SIGINT) ends `reproduce` in one line (exit code 130) that says which runs finished and
where each started one resumes, its worker processes stopped after their checkpoint writes;
`train`'s line is tested with its resume in tests/test_train_resume.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from softlabel_ood.training import interruption
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import saved_runs
from tests.train_helpers import REPO, sigint_as_in_a_terminal


def _run_dir(root, name, *, steps=(), done=False, partial=None):
    directory = root / name
    (directory / "checkpoints").mkdir(parents=True)
    for step in steps:
        (directory / "checkpoints" / str(step)).mkdir()
    if partial is not None:  # a checkpoint being written: orbax's temporary name
        (directory / "checkpoints" / f"{partial}.orbax-checkpoint-tmp-1733500000").mkdir()
    if done:
        saved_runs.mark_finished(directory)
    return directory


def test_the_lines_name_the_latest_committed_checkpoints(tmp_path):
    finished = _run_dir(tmp_path, "ce_seed0", steps=(300, 315), done=True)
    resumed = _run_dir(tmp_path, "ls0.1_seed0", steps=(8, 16), partial=24)
    no_checkpoint = _run_dir(tmp_path, "ls0.2_seed0")
    not_started = tmp_path / "ls0.3_seed0"
    runs = [finished, resumed, no_checkpoint, not_started, tmp_path / "ls0.4_seed0"]
    assert interruption.grid_line(runs) == (
        "interrupted with 1 of 5 runs finished; the same command resumes ls0.1_seed0 from step "
        "16, ls0.2_seed0 from step 0 and trains the other 2")
    assert interruption.grid_line([not_started]) == (
        "interrupted with 0 of 1 runs finished; the same command trains the other 1")
    assert interruption.grid_line([finished]) == (
        "interrupted with 1 of 1 runs finished; the same command writes the report")

    class Stopped(KeyboardInterrupt):
        step = 21

    assert interruption.run_line(resumed, Stopped()) == \
        "interrupted at step 21; the next run resumes from step 16"
    # Outside the train loop (loading data, writing predictions) the run stands at its checkpoint.
    assert interruption.run_line(finished, KeyboardInterrupt()) == \
        "interrupted at step 315; the next run resumes from step 315"
    assert interruption.run_line(not_started, KeyboardInterrupt()) == \
        "interrupted at step 0; the next run resumes from step 0"


# Four runs in two worker processes: ce and ls train side by side, then kd_ce (reading ce) and
# ls0.4; 30 epochs of 8 steps with a checkpoint every 8 steps, so that training is under way long
# enough to be interrupted between checkpoints.
GRID = textwrap.dedent("""
    from softlabel_ood.configs import grid
    from tests.train_helpers import tiny_digits_config

    def get_config():
        # Runs of 960 steps, ls's twice as many: when ce ends, ls is still training, with a
        # checkpoint, however fast the steps are (cached programs), and not at its last step.
        c = tiny_digits_config(num_epochs=120, checkpoint_every_steps=8, log_every_steps=8,
                               ood_datasets=("gaussian",))
        c.grid.seeds = (0,)
        c.grid.runs = [grid.run_spec("ce", "ce"),
                       grid.run_spec("ls", "ls", label_smoothing=0.2, num_epochs=240),
                       grid.run_spec("kd_ce", "kd", teacher="ce"),
                       grid.run_spec("ls4", "ls", label_smoothing=0.4)]
        c.grid.workers = 2
        c.grid.max_population = 1
        return c
""")


def _latest(run_dir) -> int | None:
    steps = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=None)


def test_reproduce_interrupted_is_one_line_and_leaves_no_worker(tmp_path):
    config_file = tmp_path / "grid.py"
    config_file.write_text(GRID)
    workdir = tmp_path / "work"
    runs = [workdir / "runs" / f"{name}_seed0" for name in ("ce", "ls", "kd_ce", "ls4")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "softlabel_ood.reproduce", f"--config={config_file}",
         f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=sigint_as_in_a_terminal)
    # Once a run finished and another one training has saved a checkpoint.
    deadline = time.time() + 400
    while proc.poll() is None and time.time() < deadline and not (
            any(saved_runs.is_finished(r) for r in runs) and
            any(r.exists() and not saved_runs.is_finished(r) and _latest(r) for r in runs)):
        time.sleep(0.02)
    assert proc.poll() is None, "the grid ended before a run was interrupted: make its runs longer"
    proc.send_signal(signal.SIGINT)  # to the parent alone, which passes it to its workers
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    finished = [r for r in runs if saved_runs.is_finished(r)]
    started = [r for r in runs if r.exists() and r not in finished]
    assert finished, stderr[-3000:]
    assert started, stderr[-3000:]
    resumes = ", ".join(f"{r.name} from step {_latest(r) or 0}" for r in started)
    expected = (f"interrupted with {len(finished)} of 4 runs finished; the same command resumes "
                f"{resumes}")
    if len(finished) + len(started) < 4:
        expected += f" and trains the other {4 - len(finished) - len(started)}"
    assert last == expected
    for run in started:
        # The workers completed their checkpoint writes and ended: nothing half-written, and no
        # process holds the run's workdir.
        assert not [p for p in (run / "checkpoints").glob("*") if not p.name.isdigit()]
        with workdir_lock.hold(run):
            pass
