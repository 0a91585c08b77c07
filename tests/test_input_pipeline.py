"""softlabel_ood.input_pipeline: order, sharding arithmetic, resume, padding, global arrays."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from softlabel_ood import input_pipeline as ip
from softlabel_ood.datasets import ArrayDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dataset(n: int, shape=(4, 4, 1), name="toy") -> ArrayDataset:
    # Every image holds its own index, so a batch says which examples it carries.
    images = (np.arange(n, dtype=np.uint32)[:, None, None, None] % 251 * np.ones(shape)
              ).astype(np.uint8)
    return ArrayDataset(images=images, labels=np.arange(n, dtype=np.int32), name=name,
                        split="train")


@pytest.fixture(scope="module")
def mesh1():
    return Mesh(np.array(jax.devices()[:1]), (ip.DATA_AXIS,))


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


def test_train_batches_hold_the_permuted_examples_and_resume_exactly(mesh1):
    data = _dataset(30)
    outliers = _dataset(11, name="outliers")
    kwargs = dict(global_batch_size=6, seed=9, mesh=mesh1, outliers=outliers,
                  outlier_batch_size=4)
    whole = [_host(b) for b in itertools.islice(ip.train_batches(data, **kwargs), 9)]
    ids = list(itertools.islice(ip.train_indices(30, global_batch_size=6, seed=9), 9))
    oe_ids = list(itertools.islice(ip.train_indices(11, global_batch_size=4, seed=9,
                                                    stream=ip.OUTLIER_STREAM), 9))
    for batch, idx, oe_idx in zip(whole, ids, oe_ids, strict=True):
        assert batch["image"].dtype == np.uint8
        assert batch["image"].shape == (6, 4, 4, 1)
        assert batch["label"].dtype == np.int32
        np.testing.assert_array_equal(batch["label"], idx)
        np.testing.assert_array_equal(batch["image"], data.images[idx])
        np.testing.assert_array_equal(batch["outlier_image"], outliers.images[oe_idx])
    resumed = [_host(b) for b in
               itertools.islice(ip.train_batches(data, start_step=4, **kwargs), 5)]
    for a, b in zip(whole[4:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    plain = next(ip.train_batches(data, global_batch_size=6, seed=9, mesh=mesh1))
    assert set(plain) == {"image", "label"}
    assert plain["image"].sharding.spec == PartitionSpec(ip.DATA_AXIS)


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
    with pytest.raises(ValueError, match="outlier_batch_size"):
        ip.train_batches(data, global_batch_size=2, seed=0, mesh=mesh1, outliers=data)
    with pytest.raises(ValueError, match="do not fill one global batch"):
        ip.train_batches(data, global_batch_size=16, seed=0, mesh=mesh1)
    with pytest.raises(ValueError, match="'data' axis"):
        ip.eval_batches(data, global_batch_size=2, mesh=Mesh(np.array(jax.devices()[:1]), ("x",)))


_EIGHT_DEVICES = textwrap.dedent("""
    import json, itertools
    import jax, numpy as np
    from jax.sharding import Mesh
    from softlabel_ood import input_pipeline as ip
    from softlabel_ood.datasets import ArrayDataset

    mesh = jax.make_mesh((8,), ("data",))
    n = 40
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    data = ArrayDataset(images, np.arange(n, dtype=np.int32), "toy", "train")
    out = {"devices": jax.device_count()}
    batch = next(ip.train_batches(data, global_batch_size=16, seed=2, mesh=mesh, outliers=data,
                                  outlier_batch_size=8))
    idx = next(ip.train_indices(n, global_batch_size=16, seed=2))
    out["labels_ok"] = np.asarray(batch["label"]).tolist() == idx.tolist()
    out["images_ok"] = bool((np.asarray(batch["image"]) == images[idx]).all())
    out["shard_rows"] = sorted({s.data.shape[0] for s in batch["image"].addressable_shards})
    out["shard_devices"] = len({s.device for s in batch["image"].addressable_shards})
    out["outlier_shape"] = list(batch["outlier_image"].shape)
    evals = list(ip.eval_batches(data, global_batch_size=16, mesh=mesh))
    out["eval_batches"] = len(evals)
    out["eval_real"] = [int(np.asarray(b["mask"]).sum()) for b in evals]
    for size in (12, 4):
        try:
            ip.train_batches(data, global_batch_size=size, seed=0, mesh=mesh)
            out[f"error_{size}"] = None
        except ValueError as e:
            out[f"error_{size}"] = str(e)
    print(json.dumps(out))
""")


def test_global_arrays_on_eight_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", _EIGHT_DEVICES], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert out["labels_ok"]
    assert out["images_ok"]
    assert out["shard_rows"] == [2]
    assert out["shard_devices"] == 8
    assert out["outlier_shape"] == [8, 2, 2, 3]
    assert out["eval_batches"] == 3
    assert out["eval_real"] == [16, 16, 8]
    assert "12 is not divisible by the 8 devices" in out["error_12"]
    assert "4 is not divisible by the 8 devices" in out["error_4"]


_ONE_OF_TWO_PROCESSES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[1]))
    from softlabel_ood import input_pipeline as ip
    from softlabel_ood.datasets import ArrayDataset

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    n = 40
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    data = ArrayDataset(images, np.arange(n, dtype=np.int32), "toy", "train")
    batch = next(ip.train_batches(data, global_batch_size=8, seed=2, mesh=mesh))
    rows = {s.index[0].start: np.asarray(s.data).tolist()
            for s in batch["label"].addressable_shards}
    evals = list(ip.eval_batches(data, global_batch_size=16, mesh=mesh))
    masks = [np.asarray(s.data).tolist() for b in evals for s in b["mask"].addressable_shards]
    print(json.dumps({"rows": rows, "eval_batches": len(evals), "masks": masks}))
""")


def test_two_processes_each_feed_their_slice_of_one_global_batch():
    """Real multi-process JAX (2 processes x 2 CPU devices) through jax.distributed."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-c", _ONE_OF_TWO_PROCESSES, str(i), str(port)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    expected = next(ip.train_indices(40, global_batch_size=8, seed=2)).tolist()
    held = {int(start): rows for out in outs for start, rows in out["rows"].items()}
    assert sorted(held) == [0, 2, 4, 6]
    # Process 0 holds rows 0-3 and process 1 rows 4-7: together, the global batch in order.
    assert sorted(int(k) for k in outs[0]["rows"]) == [0, 2]
    assert [r for start in sorted(held) for r in held[start]] == expected
    assert [out["eval_batches"] for out in outs] == [3, 3]
    assert sum(sum(m) for out in outs for m in out["masks"]) == 40
