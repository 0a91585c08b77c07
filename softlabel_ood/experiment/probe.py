"""How many runs one device trains at once, measured on the grid's own program at grid start.

Whether R runs in one program train faster than the same runs in turn depends on the model, the
shapes and the platform: on a 2-core CPU, small models gain from running independent runs side
by side; on a GPU, a WideResNet step already fills the device, and more runs per program only
cost compile time. So `config.grid.max_population = 0` measures it: the train program of the
grid's largest group of runs that share one (the label-smoothing sweep), on its real data and
shapes, at R = 1, 2, 4, ... runs on one device, each timed over a few calls after its compile
(the first call's seconds). What is compared is the grid's training time at R runs per
program: its training images over the measured rate, plus the compiles of its programs at that
size (a train and a predictions program per group of runs sharing one), so that a small grid,
whose runs take seconds, is not cut into populations whose compiles cost more than they save.
Each R must be `MIN_GAIN` faster than the one chosen before it to be chosen in its place; the
first that is not ends the search, and none is tried when R = 2 could not pay even by halving
the training time. So the choice is never slower than runs alone by more than the noise of the
measurement. The programs stay compiled: the chosen one trains the grid.

The result is written to `<workdir>/population_probe.json` and read back when the same grid is
run again on the same kind of devices, so that a resumed reproduction cuts the grid as before
without measuring again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from softlabel_ood import methods
from softlabel_ood.data import run_data
from softlabel_ood.training import run_model, runs_axis, train_feed, train_loop, train_step
from softlabel_ood.workdir import atomic_files

PROBE_FILE = "population_probe.json"
MIN_GAIN = 1.05  # a larger population must be 5% faster than the best smaller one
MIN_SECONDS = 0.5  # timed per candidate, after its compile
MIN_CALLS = 3


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    chosen: int  # runs per device
    images_per_s: dict[int, float]  # R -> training images per second of R runs on one device
    compile_s: dict[int, float]  # R -> seconds of the first call (the compile)
    platform: str
    device_kind: str
    group: str  # the run whose group was measured, and its size

    def describe(self) -> str:
        rates = ", ".join(f"R={r}: {v:,.0f} images/s" for r, v in self.images_per_s.items())
        return (f"{self.chosen} run(s) per device, measured on {self.group} ({self.platform}, "
                f"{self.device_kind}): {rates}")

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        for key in ("images_per_s", "compile_s"):
            data[key] = {str(r): v for r, v in data[key].items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> ProbeResult:
        data = dict(data)
        for key in ("images_per_s", "compile_s"):
            data[key] = {int(r): float(v) for r, v in data[key].items()}
        return cls(**data)


def images_per_second(config: ml_collections.ConfigDict, data: run_data.TrainingData,
                      runs: int, mesh, *, min_seconds: float = MIN_SECONDS
                      ) -> tuple[float, float]:
    """(images/s, seconds of the first call) of `runs` runs of `config`'s train program on
    `mesh`, from fresh states: the first call compiles, the next ones are timed (at least
    MIN_CALLS calls and `min_seconds`, at most the run's steps)."""
    model = run_model.create_model(config)
    step_config = run_model.step_config(config)
    per_call = run_model.steps_per_call(config)
    num_train = len(data.train.labels)
    seeds = list(range(runs))
    feed = train_feed.TrainFeed(
        data.train, global_batch_size=config.batch_size, seeds=seeds, mesh=mesh,
        steps_per_call=per_call, max_device_bytes=config.device_data_max_mb * train_loop.MEGABYTE)
    program = train_step.make_train_program(model, step_config, mesh, runs=runs,
                                            steps_per_call=per_call)
    image_shape = data.train.images.shape[1:]
    states = runs_axis.stack([train_step.create_train_state(
        model, step_config, image_shape=image_shape, seed=s, mesh=mesh) for s in seeds], mesh)
    hparams = runs_axis.stack([run_model.hyperparams(config, num_train_examples=num_train)
                               for _ in seeds], mesh)
    plan = train_loop.chunk_plan(0, run_model.total_steps(config, num_train), per_call,
                                 (feed.steps_per_epoch,))
    timed_steps, started = 0, time.perf_counter()
    for i, chunk in enumerate(feed.chunks(plan)):
        states, metrics = program(states, hparams, None, feed.data, chunk.feed,
                                  np.int32(chunk.first), np.int32(chunk.num_steps))
        jax.block_until_ready(metrics)
        if i == 0:
            compile_s, started = time.perf_counter() - started, time.perf_counter()
            continue
        timed_steps += chunk.num_steps
        seconds = time.perf_counter() - started
        if i >= MIN_CALLS and seconds >= min_seconds:
            break
    return runs * timed_steps * config.batch_size / seconds, compile_s


def train_images(config: ml_collections.ConfigDict) -> int:
    """Images one run's train steps pass through the model (ID batches and OE outliers)."""
    num_train = len(run_data.load_id(config, "train").labels)
    per_step = config.batch_size + (config.oe.batch_size if methods.needs_outliers(config.method)
                                    else 0)
    return run_model.total_steps(config, num_train) * per_step


def measure(config: ml_collections.ConfigDict, largest: int, group: str, *,
            work_images: int, programs: int) -> ProbeResult:
    """Times R = 1, 2, 4, ... (at most `largest`) runs of `config` on this process's first
    device and chooses the R that trains `work_images` fastest, counting the compile of
    `programs` programs of that size (module docstring)."""
    mesh = runs_axis.data_mesh(jax.local_devices()[:1])
    data = run_data.load_training(config)
    rates, compiles = {}, {}

    def seconds(r: int) -> float:  # the grid's training at R runs per program, compiles included
        return work_images / rates[r] + programs * compiles[r]

    best, runs = 1, 1
    while runs <= largest:
        rates[runs], compiles[runs] = images_per_second(config, data, runs, mesh)
        if runs > 1 and MIN_GAIN * seconds(runs) > seconds(best):
            break  # within noise of the best, or slower: larger R would only cost compile time
        if runs == 1 and work_images / rates[1] / 2 < (programs + 2) * compiles[1]:
            # R = 2 could at most halve the training, which its compiles (the grid's programs
            # and its own measurement, each about twice R = 1's) would outweigh.
            break
        best, runs = runs, runs * 2
    # Every process trains the same populations: process 0's measurement decides.
    chosen = int(multihost_utils.broadcast_one_to_all(np.int32(best)))
    device = jax.local_devices()[0]
    return ProbeResult(chosen, rates, compiles, jax.default_backend(), device.device_kind, group)


def population_size(grid: ml_collections.ConfigDict,
                    configs: Sequence[ml_collections.ConfigDict], directories: Sequence[str],
                    groups: Sequence[Sequence[int]], workdir: epath.PathLike
                    ) -> tuple[int, ProbeResult | None]:
    """The most runs in one population: `config.grid.max_population`, or for 0 the probe's
    runs per device times the devices (the probe read back from `workdir` when it was made for
    the same grid on the same kind of devices)."""
    if int(grid.get("max_population", 0)):
        return int(grid.max_population), None
    largest = max(groups, key=len)
    group = f"the {len(largest)} run(s) of {epath.Path(directories[largest[0]]).name}'s program"
    path = epath.Path(workdir) / PROBE_FILE
    result = _read(path, group)
    if result is None:
        # Each group of runs compiles its train program and its predictions program.
        result = measure(configs[largest[0]], max(1, len(largest) // jax.local_device_count()),
                         group, work_images=sum(train_images(c) for c in configs),
                         programs=2 * len(groups))
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_files.write_text_atomically(path, json.dumps(result.to_json(), indent=1))
    return result.chosen * jax.local_device_count(), result


def stored(workdir: epath.PathLike) -> ProbeResult | None:
    """The probe a grid's workdir holds, if any (whatever it was measured on)."""
    try:
        return ProbeResult.from_json(json.loads((epath.Path(workdir) / PROBE_FILE).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read(path: epath.Path, group: str) -> ProbeResult | None:
    """The probe stored at `path`, if it was made for `group` on this kind of device."""
    if not path.exists():
        return None
    try:
        result = ProbeResult.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError):
        return None  # unreadable: measured again, and written anew
    device = jax.local_devices()[0]
    same = (result.platform, result.device_kind, result.group) == (
        jax.default_backend(), device.device_kind, group)
    return result if same else None
