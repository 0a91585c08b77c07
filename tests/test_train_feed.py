"""softlabel_ood.training.train_feed: device-resident and host feeds carry the input pipeline's
batches."""

from __future__ import annotations

import itertools
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from softlabel_ood.data import input_pipeline as ip
from softlabel_ood.training import runs_axis, train_feed
from tests import jax_processes

_dataset = jax_processes.indexed_dataset


@pytest.fixture(scope="module")
def mesh1():
    return runs_axis.data_mesh(jax.devices()[:1])


def _batches(feed: train_feed.TrainFeed, plan, run: int = 0) -> list[dict]:
    """Every step's batch of run `run` as the train program would see it, gathered on the host."""
    out = []
    for chunk in feed.chunks(plan):
        host = {k: np.asarray(v)[run] for k, v in chunk.feed.items()}
        for i in range(chunk.first, chunk.first + chunk.num_steps):
            if feed.resident:
                data = {k: np.asarray(v) for k, v in feed.data.items()}
                batch = {"image": data["image"][host["index"][i]],
                         "label": data["label"][host["index"][i]]}
                if "outlier_index" in host:
                    batch["outlier_image"] = data["outlier_image"][host["outlier_index"][i]]
            else:
                batch = {k: v[i] for k, v in host.items()}
            out.append(batch)
    return out


@pytest.mark.parametrize("max_device_bytes", [10**9, 0], ids=["resident", "host"])
def test_feed_holds_the_permuted_examples_and_resumes_exactly(mesh1, max_device_bytes):
    data, outliers = _dataset(30), _dataset(11, name="outliers")
    kwargs = dict(global_batch_size=6, seeds=[9], mesh=mesh1, steps_per_call=4,
                  max_device_bytes=max_device_bytes, outliers=outliers, outlier_batch_size=4)
    feed = train_feed.TrainFeed(data, **kwargs)
    assert feed.resident == (max_device_bytes > 0)
    whole = _batches(feed, [(0, 4), (4, 1), (5, 2), (7, 2)])  # 5 steps per epoch
    ids = list(itertools.islice(ip.train_indices(30, global_batch_size=6, seed=9), 9))
    oe_ids = list(itertools.islice(ip.train_indices(11, global_batch_size=4, seed=9,
                                                    stream=ip.OUTLIER_STREAM), 9))
    assert len(whole) == 9
    for batch, idx, oe_idx in zip(whole, ids, oe_ids, strict=True):
        assert batch["image"].dtype == np.uint8
        assert batch["image"].shape == (6, 4, 4, 1)
        np.testing.assert_array_equal(batch["label"], idx)
        np.testing.assert_array_equal(batch["image"], data.images[idx])
        np.testing.assert_array_equal(batch["outlier_image"], outliers.images[oe_idx])
    # Started at step 4 (a resumed run), cut into other calls: the same batches from step 4 on.
    resumed = _batches(train_feed.TrainFeed(data, **kwargs), [(4, 1), (5, 3), (8, 1)])
    for a, b in zip(whole[4:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("max_device_bytes", [10**9, 0], ids=["resident", "host"])
def test_every_run_of_a_population_gets_the_batches_of_its_own_seed(mesh1, max_device_bytes):
    data = _dataset(30)
    common = dict(global_batch_size=6, mesh=mesh1, steps_per_call=2,
                  max_device_bytes=max_device_bytes)
    population = train_feed.TrainFeed(data, seeds=[3, 7, 3], **common)
    plan = [(0, 2), (2, 2), (4, 1), (5, 2)]
    for run, seed in enumerate([3, 7, 3]):
        alone = _batches(train_feed.TrainFeed(data, seeds=[seed], **common), plan)
        together = _batches(population, plan, run)
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(_batches(population, plan, 0)[0]["label"],
                              _batches(population, plan, 1)[0]["label"])


def test_resident_data_is_placed_once_and_calls_carry_indices_only(mesh1):
    data = _dataset(30)
    feed = train_feed.TrainFeed(data, global_batch_size=6, seeds=[0], mesh=mesh1,
                                steps_per_call=3,
                                max_device_bytes=train_feed.training_bytes(data, None))
    assert feed.resident
    assert set(feed.data) == {"image", "label"}
    assert feed.data["image"].sharding.spec == PartitionSpec()
    chunks = list(feed.chunks([(0, 2), (2, 3), (5, 3)]))
    assert set(chunks[0].feed) == {"index"}
    # One index table per epoch (1 run, 5 steps of 6), shared by the calls of that epoch.
    assert chunks[0].feed["index"].dtype == np.int32
    assert chunks[0].feed["index"].shape == (1, 5, 6)
    assert chunks[0].feed["index"].sharding.spec == PartitionSpec(
        runs_axis.RUNS_AXIS, None, ip.DATA_AXIS)
    assert chunks[1].feed is chunks[0].feed
    assert chunks[2].feed is not chunks[0].feed
    assert [c.first for c in chunks] == [0, 2, 0]
    # One byte over the cap, and the same data goes through the host.
    host = train_feed.TrainFeed(data, global_batch_size=6, seeds=[0], mesh=mesh1,
                                steps_per_call=3,
                                max_device_bytes=train_feed.training_bytes(data, None) - 1)
    assert not host.resident
    assert host.data == {}
    assert set(next(host.chunks([(0, 2)])).feed) == {"image", "label"}


def test_bad_arguments_fail_at_the_first_call(mesh1):
    data = _dataset(10)
    common = dict(seeds=[0], mesh=mesh1, steps_per_call=2, max_device_bytes=10**6)
    with pytest.raises(ValueError, match="outlier_batch_size"):
        train_feed.TrainFeed(data, global_batch_size=2, outliers=data, **common)
    feed = train_feed.TrainFeed(data, global_batch_size=2, **common)
    with pytest.raises(ValueError, match="not consecutive"):
        list(feed.chunks([(0, 2), (3, 1)]))
    with pytest.raises(ValueError, match="longer than 2 steps"):
        list(feed.chunks([(0, 3)]))
    with pytest.raises(ValueError, match="crosses the end of an epoch"):
        list(feed.chunks([(4, 2)]))


_EIGHT_DEVICES = jax_processes.TOY_DATA + textwrap.dedent("""
    from softlabel_ood.data import input_pipeline as ip
    from softlabel_ood.training import train_feed
    out = {"devices": jax.device_count()}
    for cap in (10**6, 0):
        feed = train_feed.TrainFeed(data, global_batch_size=16, seeds=[2], mesh=mesh,
                                    steps_per_call=2, max_device_bytes=cap, outliers=data,
                                    outlier_batch_size=8)
        chunk = next(feed.chunks([(0, 2)]))
        name = "index" if feed.resident else "label"
        first = np.asarray(chunk.feed[name])[0, 0]
        out[f"{cap}_rows_ok"] = first.tolist() == next(
            ip.train_indices(n, global_batch_size=16, seed=2)).tolist()
        out[f"{cap}_shard_shape"] = sorted(
            {s.data.shape[2:3] for s in chunk.feed[name].addressable_shards})
        out[f"{cap}_shard_devices"] = len({s.device for s in chunk.feed[name].addressable_shards})
    for size in (12, 4):
        try:
            train_feed.TrainFeed(data, global_batch_size=size, seeds=[0], mesh=mesh,
                                 steps_per_call=2, max_device_bytes=0)
            out[f"error_{size}"] = None
        except ValueError as e:
            out[f"error_{size}"] = str(e)
    print(json.dumps(out))
""")


def test_feeds_on_eight_devices():
    out = jax_processes.run_on_devices(_EIGHT_DEVICES)
    assert out["devices"] == 8
    for cap in ("1000000", "0"):
        assert out[f"{cap}_rows_ok"]
        assert out[f"{cap}_shard_shape"] == [[2]]  # 2 of the 16 rows of a batch per device
        assert out[f"{cap}_shard_devices"] == 8
    assert "12 is not divisible by the 8 devices" in out["error_12"]
    assert "4 is not divisible by the 8 devices" in out["error_4"]


_ONE_OF_TWO_PROCESSES = jax_processes.DISTRIBUTED_START + jax_processes.TOY_DATA + textwrap.dedent(
    """
    from softlabel_ood.training import train_feed
    out = {}
    for cap in (10**6, 0):
        feed = train_feed.TrainFeed(data, global_batch_size=8, seeds=[2], mesh=mesh,
                                    steps_per_call=1, max_device_bytes=cap)
        chunk = next(feed.chunks([(0, 1)]))
        name = "index" if feed.resident else "label"
        out[str(cap)] = {s.index[2].start: np.asarray(s.data)[0, 0].tolist()
                         for s in chunk.feed[name].addressable_shards}
        if feed.resident:
            out["resident_rows"] = feed.data["label"].addressable_shards[0].data.shape[0]
    print(json.dumps(out))
""")


def test_two_processes_each_feed_their_slice_of_one_global_batch():
    """Real multi-process JAX (2 processes x 2 CPU devices) through jax.distributed."""
    outs = jax_processes.run_two_processes(_ONE_OF_TWO_PROCESSES)
    expected = next(ip.train_indices(40, global_batch_size=8, seed=2)).tolist()
    for cap in ("1000000", "0"):
        held = {int(start): rows for out in outs for start, rows in out[cap].items()}
        assert sorted(held) == [0, 2, 4, 6]
        # Process 0 holds rows 0-3 and process 1 rows 4-7: together, the global batch in order.
        assert sorted(int(k) for k in outs[0][cap]) == [0, 2]
        assert [r for start in sorted(held) for r in held[start]] == expected
    # The resident set is whole on every device of both processes.
    assert [out["resident_rows"] for out in outs] == [40, 40]
