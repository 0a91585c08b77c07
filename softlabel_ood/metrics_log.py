"""Training metrics to `<workdir>/metrics.jsonl` and TensorBoard event files (process 0 only).

A resumed run rewinds the JSON-lines file to its checkpoint's step first, so the file reads as
one uninterrupted run: lines that a killed run logged after its last checkpoint are dropped.
"""

from __future__ import annotations

import json

from etils import epath
from tensorboardX import SummaryWriter

from softlabel_ood import atomic_files

JSONL_FILE = "metrics.jsonl"


def _parse(line: str) -> dict | None:
    """A logged record, or None for a line that a killed process left half-written."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


class MetricsLog:
    def __init__(self, workdir: epath.PathLike, *, resume_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.path = epath.Path(workdir) / JSONL_FILE
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if (record := _parse(line)) is not None and record["step"] <= resume_step]
            atomic_files.write_text_atomically(self.path, "".join(f"{k}\n" for k in kept))
        self._file = self.path.open("a")
        self._writer = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._writer.close()
