"""Training metrics to `<workdir>/metrics.jsonl` and TensorBoard event files (process 0 only).

A resumed run rewinds the JSON-lines file and the TensorBoard event files to its checkpoint's
step first, so that both read as one uninterrupted run: what a killed run logged after its last
checkpoint is dropped (and a record it left half-written).
"""

from __future__ import annotations

import json
import struct

from etils import epath
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

from softlabel_ood.workdir import atomic_files, run_dir


def _parse(line: str) -> dict | None:
    """A logged record, or None for a line that a killed process left half-written."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


def _event_records(data: bytes):
    """(raw record, step) of each complete record of a TensorBoard event file.

    The file is a TFRecord stream: length (uint64), its CRC (uint32), the serialized Event,
    the Event's CRC (uint32). A record cut short by a killed process ends the stream.
    """
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            return
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        yield data[offset:end], event.step
        offset = end


def rewind_event_files(directory: epath.PathLike, step: int) -> None:
    """Drops the TensorBoard events logged after `step` from every event file in `directory`."""
    directory = epath.Path(directory)
    if not directory.is_dir():
        return
    for path in directory.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        kept = b"".join(raw for raw, event_step in _event_records(data) if event_step <= step)
        if kept != data:
            atomic_files.write_atomically(path, lambda f, kept=kept: f.write(kept))


class MetricsLog:
    def __init__(self, workdir: epath.PathLike, *, resume_step: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        self.path = epath.Path(workdir) / run_dir.METRICS_LOG
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if (record := _parse(line)) is not None and record["step"] <= resume_step]
            atomic_files.write_text_atomically(self.path, "".join(f"{k}\n" for k in kept))
        tensorboard = epath.Path(workdir) / run_dir.TENSORBOARD
        rewind_event_files(tensorboard, resume_step)
        self._file = self.path.open("a")
        # One event file per start of the run, named by its first step: two starts within the
        # same second would otherwise share a file name, and the second truncate the first.
        self._writer = SummaryWriter(str(tensorboard), filename_suffix=f".from_step{resume_step}")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with atomic_files.naming(self.path):
            self._file.write(json.dumps({"step": step, **metrics}) + "\n")
            self._file.flush()
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._writer.close()
