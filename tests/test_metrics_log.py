"""softlabel_ood.workdir.metrics_log: a resumed run's logs read as one uninterrupted run."""

from __future__ import annotations

import json
import struct

from tensorboardX.proto import event_pb2

from softlabel_ood.workdir import metrics_log, run_dir


def test_metrics_log_rewinds_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    lines = ['{"step": 4, "train_loss": 1.0}', '{"step": 8, "train_loss": 0.5}',
             '{"step": 12, "train_loss": 0.4}', '{"step": 1']  # the last write was cut short
    (tmp_path / run_dir.METRICS_LOG).write_text("\n".join(lines))
    log = metrics_log.MetricsLog(tmp_path, resume_step=8, enabled=True)
    log.write(12, {"train_loss": 0.3})
    log.close()
    records = [json.loads(line) for line in (tmp_path / run_dir.METRICS_LOG).read_text()
               .splitlines()]
    assert records == [{"step": 4, "train_loss": 1.0}, {"step": 8, "train_loss": 0.5},
                       {"step": 12, "train_loss": 0.3}]


def _events(directory) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the event files, read with the TFRecord framing
    written out here (uint64 length, uint32 CRC, Event, uint32 CRC) as an independent reader."""
    found = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            found += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
    return sorted(found)


def test_tensorboard_events_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    log = metrics_log.MetricsLog(tmp_path, resume_step=0, enabled=True)
    for step in (4, 8, 12, 16):
        log.write(step, {"train_loss": 1.0 / step})
    log.close()
    # A killed run also leaves a record cut short at the end of its file.
    event_file = next((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with open(event_file, "ab") as f:
        f.write(struct.pack("<Q", 50) + b"\0" * 7)
    log = metrics_log.MetricsLog(tmp_path, resume_step=8, enabled=True)
    log.write(12, {"train_loss": 0.5})
    log.close()
    assert _events(tmp_path / "tensorboard") == [
        (4, "train_loss", 0.25), (8, "train_loss", 0.125), (12, "train_loss", 0.5)]
