"""Ctrl-C (SIGINT) ends `train` and `reproduce` in one line that says where the next run resumes,
with exit code 130 (128 + SIGINT, what a shell reports for it), not a KeyboardInterrupt traceback
(DESIGN.md §4).

The line is written once the interrupted training has closed: the checkpoint writes in flight
complete first (`train_loop.train_population`), so the step it names is the one the same command
resumes from, that of the latest checkpoint committed on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from etils import epath

from softlabel_ood.training import checkpointing
from softlabel_ood.workdir import run_dir, saved_runs


def resume_step(workdir: epath.PathLike) -> int:
    """The step a run in `workdir` resumes from: its latest committed checkpoint's, else 0."""
    return checkpointing.latest_saved_step(epath.Path(workdir) / run_dir.CHECKPOINTS) or 0


def run_line(workdir: epath.PathLike, interrupted: KeyboardInterrupt) -> str:
    """`train`'s line. The step reached is the train loop's last completed step; interrupted
    outside the loop (loading data, compiling, writing predictions), the run stood where its
    checkpoint leaves it."""
    resume = resume_step(workdir)
    reached = getattr(interrupted, "step", None)
    return (f"interrupted at step {resume if reached is None else reached}; the next run "
            f"resumes from step {resume}")


def grid_line(run_dirs: Sequence[epath.PathLike]) -> str:
    """`reproduce`'s line: how many of the grid's runs finished, where the same command resumes
    each started one (a run directory without DONE), and how many it trains from step 0."""
    unfinished = [epath.Path(d) for d in run_dirs if not saved_runs.is_finished(d)]
    started = [d for d in unfinished if d.exists()]
    head = f"interrupted with {len(run_dirs) - len(unfinished)} of {len(run_dirs)} runs finished"
    clauses = []
    if started:
        clauses.append("resumes " + ", ".join(f"{d.name} from step {resume_step(d)}"
                                              for d in started))
    if len(started) < len(unfinished):
        clauses.append(f"trains the other {len(unfinished) - len(started)}")
    return f"{head}; the same command " + (" and ".join(clauses) or "writes the report")
