"""A mistyped epoch count: refused once the training set's size is known when its last step
number would not fit an int32 (DESIGN.md §8), and otherwise started without building anything
whose size grows with the epoch count (a list of 2³¹ one-step calls held gigabytes before the
first step)."""

from __future__ import annotations

import contextlib
import itertools
import signal

import jax
import pytest

from softlabel_ood import train
from softlabel_ood.configs import digits
from softlabel_ood.data import run_data
from softlabel_ood.training import runs_axis, train_feed, train_loop
from tests import jax_processes
from tests.train_helpers import refusal

MAX_INT32 = 2**31 - 1


@contextlib.contextmanager
def within(seconds: int):
    """Fails the block if it runs longer than `seconds` (SIGALRM), rather than letting a
    regression hold the machine for minutes."""
    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_epoch_count_past_the_int32_step_limit_is_refused_before_the_workdir(tmp_path,
                                                                               capsys):
    config = digits.get_config("ce")
    num_train = len(run_data.load_training(config).train.labels)
    steps_per_epoch = num_train // config.batch_size  # full batches, by hand
    limit = MAX_INT32 // steps_per_epoch
    assert limit * steps_per_epoch <= MAX_INT32 < (limit + 1) * steps_per_epoch
    config.num_epochs = limit + 1
    workdir = tmp_path / "run"
    with within(60):  # the data's load and the check; no compile, no step
        line = refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir)))
    assert line == (f"error: config.num_epochs: {limit + 1} is not allowed; expected at most "
                    f"{limit}: {steps_per_epoch} steps an epoch ({num_train} training examples "
                    f"of digits), and the last step number is an int32")
    assert not workdir.exists()


def test_a_plan_of_two_to_the_31_one_step_calls_starts_at_once():
    # digits at 10⁸ epochs (21 steps each: 2.1·10⁹ steps, within the int32 limit) on a CPU.
    with within(5):
        plan = train_loop.chunk_plan(0, MAX_INT32, 1, (21, 100, 1000))
        assert list(itertools.islice(plan, 3)) == [(0, 1), (1, 1), (2, 1)]


@pytest.mark.parametrize("max_device_bytes", [10**9, 0], ids=["resident", "host"])
def test_the_feed_of_such_a_plan_starts_at_once(max_device_bytes):
    data = jax_processes.indexed_dataset(10)
    feed = train_feed.TrainFeed(data, global_batch_size=2, seeds=[0],
                                mesh=runs_axis.data_mesh(jax.devices()[:1]), steps_per_call=1,
                                max_device_bytes=max_device_bytes)
    with within(5):
        chunks = feed.chunks(train_loop.chunk_plan(0, MAX_INT32, 1, (feed.steps_per_epoch,)))
        assert [(c.start, c.num_steps) for c in itertools.islice(chunks, 3)] == \
            [(0, 1), (1, 1), (2, 1)]
