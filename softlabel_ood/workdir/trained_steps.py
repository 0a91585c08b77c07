"""How far the model behind a run's predictions was trained (DESIGN.md §5): the manifest's
`"checkpoint": {"step": S, "total_steps": T}`, S the step of the checkpoint the predictions
come from and T the run's number of steps. S < T: an unfinished run's predictions, which
`predict` writes only with --allow_unfinished, `score` and the report mark, and `reproduce`
never reports.

Manifests written before the record existed do not hold it: their predictions count as the
finished model's when the run directory holds DONE (train writes it after the predictions of
the last step), and as of an unknown step otherwise. Imported outputs (`import_outputs`) hold
no record either: they are of the model that their program saved. Needs neither numpy nor the
training side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from softlabel_ood.cli_errors import UserError
from softlabel_ood.workdir import run_summary
from softlabel_ood.workdir.run_dir import DONE

FIELD = "checkpoint"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The checkpoint that predictions come from, and the run's number of steps."""

    step: int
    total_steps: int

    @property
    def finished(self) -> bool:
        return self.step == self.total_steps

    def describe(self) -> str:
        return f"step {self.step:,} of {self.total_steps:,}"

    def to_json(self) -> dict:
        return {"step": self.step, "total_steps": self.total_steps}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(where: str, record, error: type[UserError]) -> Checkpoint:
    """The Checkpoint of a manifest's `checkpoint` object; `error` (one line naming `where` and
    the field) unless it holds integers 0 <= step <= total_steps and total_steps >= 1."""
    if not isinstance(record, Mapping):
        raise error(f"{where}: field '{FIELD}' is {record!r}, expected an object "
                    "{\"step\": S, \"total_steps\": T}")
    total = record.get("total_steps")
    if not _is_int(total) or total < 1:
        raise error(f"{where}: field '{FIELD}.total_steps' is {total!r}, expected an integer >= 1")
    step = record.get("step")
    if not _is_int(step) or not 0 <= step <= total:
        raise error(f"{where}: field '{FIELD}.step' is {step!r}, expected an integer in "
                    f"[0, total_steps = {total}]")
    extra = sorted(set(record) - {"step", "total_steps"})
    if extra:
        raise error(f"{where}: field '{FIELD}' has unknown key {extra[0]!r}")
    return Checkpoint(step=step, total_steps=total)


def unfinished(manifest: Mapping, *, done: bool) -> tuple[bool, Checkpoint | None]:
    """(whether a run's predictions may not be its finished model's, the checkpoint they come
    from when the manifest records it), given whether the run directory holds DONE. A manifest
    without the record is of the finished model with DONE or when the outputs were imported
    (of the model their program gave), else of an unknown step."""
    record = manifest.get(FIELD)
    if record is None:
        return not (done or run_summary.is_imported(manifest.get("run", {}))), None
    checkpoint = Checkpoint(step=record["step"], total_steps=record["total_steps"])
    return not checkpoint.finished, checkpoint


def describe(checkpoint: Checkpoint | None) -> str:
    """What is said of an unfinished run: the step of its predictions, or that it is unknown."""
    if checkpoint is None:
        return (f"trained steps unknown: the predictions do not record their checkpoint and the "
                f"run directory has no {DONE} file")
    return f"unfinished run: predictions from {checkpoint.describe()}"
