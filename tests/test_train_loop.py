"""softlabel_ood.training.train_loop: how steps are cut into calls, and the loop's host-side
bookkeeping."""

from __future__ import annotations

import json

import pytest

from softlabel_ood.data import run_data
from softlabel_ood.training import checkpointing, run_model, runs_axis, train_loop
from tests.train_helpers import tiny_digits_config


def test_calls_are_cut_at_every_boundary():
    # 10 steps per epoch, logs every 4, checkpoints every 7, at most 3 steps per call.
    plan = list(train_loop.chunk_plan(0, 20, 3, (4, 10, 7)))
    assert plan == [(0, 3), (3, 1), (4, 3), (7, 1), (8, 2), (10, 2), (12, 2), (14, 2), (16, 3),
                    (19, 1)]
    starts = [s for s, _ in plan]
    assert starts == sorted(starts)
    assert sum(n for _, n in plan) == 20
    for start, n in plan:
        for period in (4, 10, 7):  # no call crosses a boundary
            assert (start // period) == ((start + n - 1) // period)


def test_a_resumed_run_cuts_its_steps_as_an_uninterrupted_one():
    whole = list(train_loop.chunk_plan(0, 50, 8, (20, 12, 9)))
    for start, _ in whole:
        assert list(train_loop.chunk_plan(start, 50, 8, (20, 12, 9))) == \
            [c for c in whole if c[0] >= start]


def test_one_step_per_call_and_nothing_left_to_do():
    assert list(train_loop.chunk_plan(3, 6, 1, (100,))) == [(3, 1), (4, 1), (5, 1)]
    assert list(train_loop.chunk_plan(6, 6, 4, (2,))) == []
    with pytest.raises(ValueError, match="steps_per_call"):
        train_loop.chunk_plan(0, 6, 0, (2,))


def test_steps_per_call_zero_chooses_by_platform():
    assert run_model.steps_per_call(tiny_digits_config("ce", steps_per_call=7)) == 7
    # The tests run on CPU, where one step per call is the measured choice.
    assert run_model.steps_per_call(tiny_digits_config("ce", steps_per_call=0)) == 1


@pytest.mark.parametrize(("steps_per_call", "max_mb"), [(3, 2048), (3, 0), (1, 0)])
def test_logs_are_the_same_however_the_steps_are_fed(steps_per_call, max_mb, tmp_path):
    """metrics.jsonl holds the same records for any steps_per_call and either feed."""
    def records(workdir, **overrides):
        config = tiny_digits_config("ce", num_epochs=2, **overrides)
        data = run_data.load_training(config)
        train_loop.train(config, workdir, data, runs_axis.data_mesh())
        return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]

    reference = records(tmp_path / "reference", steps_per_call=1)
    other = records(tmp_path / "other", steps_per_call=steps_per_call, device_data_max_mb=max_mb)
    assert [sorted(r) for r in other] == [sorted(r) for r in reference]
    assert [r["step"] for r in other] == [r["step"] for r in reference]
    for a, b in zip(reference, other, strict=True):
        for key, value in a.items():
            assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (a["step"], key)


@pytest.mark.parametrize(("min_seconds", "kept"), [(0.0, [8, 12, 16]), (3600.0, [16])])
def test_checkpoints_wait_for_checkpoint_min_seconds(min_seconds, kept, tmp_path):
    """Every 4 steps of 16 when no wait is asked (orbax keeps the latest 3); with an hour's wait,
    the final step alone: a run of seconds is not checkpointed every few steps."""
    config = tiny_digits_config("ce", checkpoint_every_steps=4, checkpoint_min_seconds=min_seconds)
    data = run_data.load_training(config)
    train_loop.train(config, tmp_path, data, runs_axis.data_mesh())
    saved = checkpointing.Checkpoints(tmp_path / "checkpoints", read_only=True)
    assert sorted(saved.all_steps()) == kept
    saved.close()
