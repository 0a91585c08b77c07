"""softlabel_ood.data.input_pipeline: order, sharding arithmetic, resume, padding, global arrays."""

from __future__ import annotations

import itertools
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from softlabel_ood.data import input_pipeline as ip
from tests import jax_processes

_dataset = jax_processes.indexed_dataset


@pytest.fixture(scope="module")
def mesh1():
    return jax_processes.one_device_mesh()


def test_step_counts():
    assert ip.steps_per_epoch(50, 8) == 6
    assert ip.num_eval_batches(50, 8) == 7
    assert ip.num_eval_batches(48, 8) == 6
    assert ip.num_eval_batches(0, 8) == 0
    with pytest.raises(ValueError, match="do not fill one global batch"):
        ip.steps_per_epoch(7, 8)
    with pytest.raises(ValueError, match="positive integer"):
        ip.num_eval_batches(7, 0)


def test_epoch_permutation_is_the_documented_generator():
    np.testing.assert_array_equal(ip.epoch_permutation(30, 7, 2),
                                  np.random.default_rng((7, 2)).permutation(30))
    assert not np.array_equal(ip.epoch_permutation(30, 7, 2), ip.epoch_permutation(30, 7, 3))
    assert not np.array_equal(ip.epoch_permutation(30, 7, 2),
                              ip.epoch_permutation(30, 7, 2, stream=ip.OUTLIER_STREAM))


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_processes_together_read_every_example_once_per_epoch(process_count):
    n, batch, seed = 50, 8, 3
    per_epoch = ip.steps_per_epoch(n, batch)
    streams = [
        list(itertools.islice(
            ip.train_indices(n, global_batch_size=batch, seed=seed, process_index=p,
                             process_count=process_count), 2 * per_epoch))
        for p in range(process_count)]
    for epoch in range(2):
        permutation = ip.epoch_permutation(n, seed, epoch)
        seen = []
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            parts = [streams[p][step] for p in range(process_count)]
            assert all(len(part) == batch // process_count for part in parts)
            # Process slices, in process order, are the global batch in permutation order.
            offset = (step - epoch * per_epoch) * batch
            np.testing.assert_array_equal(np.concatenate(parts),
                                          permutation[offset:offset + batch])
            seen.extend(np.concatenate(parts).tolist())
        assert len(seen) == len(set(seen)) == per_epoch * batch  # each used example once
        assert set(seen) == set(permutation[:per_epoch * batch].tolist())
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        ip.train_indices(n, global_batch_size=batch, seed=seed, process_count=3)


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_eval_indices_cover_the_dataset_once_with_padding(process_count):
    n, batch = 37, 8
    per_process = [list(ip.eval_indices(n, global_batch_size=batch, process_index=p,
                                        process_count=process_count))
                   for p in range(process_count)]
    assert {len(batches) for batches in per_process} == {5}  # the same count everywhere
    real = []
    for step in range(5):
        for p in range(process_count):
            indices, mask = per_process[p][step]
            assert indices.shape == mask.shape == (batch // process_count,)
            real.extend(indices[mask].tolist())
            assert (indices[~mask] == 0).all()
    assert real == list(range(n))  # fixed order, every example exactly once


def test_resuming_at_any_step_gives_the_same_indices():
    n, batch = 21, 4  # 5 steps per epoch: the resumed ranges cross epoch boundaries
    whole = list(itertools.islice(ip.train_indices(n, global_batch_size=batch, seed=1), 17))
    for start in (1, 5, 7, 13):
        resumed = itertools.islice(
            ip.train_indices(n, global_batch_size=batch, seed=1, start_step=start), 17 - start)
        for a, b in zip(whole[start:], resumed, strict=True):
            np.testing.assert_array_equal(a, b)


def _host(batch: dict) -> dict:
    return {k: np.asarray(v) for k, v in batch.items()}


def test_eval_batches_pad_and_mask(mesh1):
    data = _dataset(13)
    batches = [_host(b) for b in ip.eval_batches(data, global_batch_size=5, mesh=mesh1)]
    assert len(batches) == ip.num_eval_batches(13, 5) == 3
    last = batches[-1]
    np.testing.assert_array_equal(last["mask"], [True, True, True, False, False])
    assert (last["image"][~last["mask"]] == 0).all()
    assert (last["label"][~last["mask"]] == -1).all()
    images = np.concatenate([b["image"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(images, data.images)
    assert np.concatenate([b["label"][b["mask"]] for b in batches]).tolist() == list(range(13))


def test_bad_arguments_fail_at_the_call(mesh1):
    data = _dataset(10)
    with pytest.raises(ValueError, match="do not fill one global batch"):
        ip.train_indices(10, global_batch_size=16, seed=0)
    with pytest.raises(ValueError, match="'data' axis"):
        ip.eval_batches(data, global_batch_size=2, mesh=Mesh(np.array(jax.devices()[:1]), ("x",)))


_EIGHT_DEVICES = jax_processes.TOY_DATA + textwrap.dedent("""
    from softlabel_ood.data import input_pipeline as ip
    out = {"devices": jax.device_count()}
    evals = list(ip.eval_batches(data, global_batch_size=16, mesh=mesh))
    out["eval_batches"] = len(evals)
    out["eval_real"] = [int(np.asarray(b["mask"]).sum()) for b in evals]
    out["shard_rows"] = sorted({s.data.shape[0] for s in evals[0]["image"].addressable_shards})
    out["shard_devices"] = len({s.device for s in evals[0]["image"].addressable_shards})
    for size in (12, 4):
        try:
            ip.eval_batches(data, global_batch_size=size, mesh=mesh)
            out[f"error_{size}"] = None
        except ValueError as e:
            out[f"error_{size}"] = str(e)
    print(json.dumps(out))
""")


def test_global_arrays_on_eight_devices():
    out = jax_processes.run_on_devices(_EIGHT_DEVICES)
    assert out["devices"] == 8
    assert out["shard_rows"] == [2]
    assert out["shard_devices"] == 8
    assert out["eval_batches"] == 3
    assert out["eval_real"] == [16, 16, 8]
    assert "12 is not divisible by the 8 devices" in out["error_12"]
    assert "4 is not divisible by the 8 devices" in out["error_4"]


_ONE_OF_TWO_PROCESSES = jax_processes.DISTRIBUTED_START + jax_processes.TOY_DATA + textwrap.dedent(
    """
    from softlabel_ood.data import input_pipeline as ip
    evals = list(ip.eval_batches(data, global_batch_size=16, mesh=mesh))
    masks = [np.asarray(s.data).tolist() for b in evals for s in b["mask"].addressable_shards]
    print(json.dumps({"eval_batches": len(evals), "masks": masks}))
""")


def test_two_processes_each_feed_their_slice_of_the_eval_batches():
    """Real multi-process JAX (2 processes x 2 CPU devices) through jax.distributed."""
    outs = jax_processes.run_two_processes(_ONE_OF_TWO_PROCESSES)
    assert [out["eval_batches"] for out in outs] == [3, 3]
    assert sum(sum(m) for out in outs for m in out["masks"]) == 40
