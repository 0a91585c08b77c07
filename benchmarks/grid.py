"""Where a grid's time goes: `reproduce` in this process, phase by phase, against the step.

    python -m benchmarks.grid --config=configs/digits.py
    python -m benchmarks.grid --config=configs/fashion_mnist.py                # on a GPU
    python -m benchmarks.grid --config=configs/fashion_mnist.py --config.grid.seeds=0,

(from the repository root; further `--config.<field>=<value>` flags reach the grid's config,
and `--workdir` keeps the grid, default a temporary directory). The grid is trained in this
process (`config.grid.workers` = 1), with the persistent compilation cache off unless
--cache, and timed by wrapping the functions of each phase; time in a phase nested in another
counts for the inner one only. Afterwards the step's own rate is measured on the same data
and shapes: the train program of one run (`experiment/probe.images_per_second`) for --seconds.

Prints one line of `name=value` fields:
  wall_s              the whole grid: training, predictions, scoring and the report
  <phase>_s           data (loading, generating), probe (choosing the population size),
                      compile (XLA compiles, wherever they happen), init (states, restores,
                      teachers), training (the train loop's calls, per-epoch evaluation
                      included), checkpoints (saving), predictions, scoring, report, other
  train_images        images the train steps passed through the model (ID batches and OE
                      outliers; a KD teacher's forward passes are extra work not counted)
  grid_images_per_s   train_images / (training_s + checkpoints_s)
  step_images_per_s   the train program of one run, alone on the device
  grid_efficiency     grid_images_per_s / step_images_per_s: how close the grid's training
                      comes to the step's speed
  wall_efficiency     train_images / wall_s / step_images_per_s: the same for the whole grid
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys
import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from softlabel_ood import configs, reproduce, scoring
from softlabel_ood.analysis import report
from softlabel_ood.data import datasets, run_data
from softlabel_ood.experiment import probe
from softlabel_ood.training import (
    checkpointing,
    compilation_cache,
    predicting,
    run_start,
    runs_axis,
    train_loop,
)

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
PHASES = ("data", "probe", "compile", "init", "training", "checkpoints", "predictions",
          "scoring", "report")


class PhaseClock:
    """Wall time by phase, each phase's time exclusive of the phases nested in it."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.stack = []  # [phase, start of its current exclusive stretch]
        jax.monitoring.register_event_duration_secs_listener(self._compiled)

    def _compiled(self, event, seconds, **_):
        if event == COMPILE_EVENT:
            self.seconds["compile"] += seconds
            if self.stack:  # the compile happened inside the current phase: not its time
                self.seconds[self.stack[-1][0]] -= seconds

    @contextlib.contextmanager
    def phase(self, name: str):
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1][0]] += now - self.stack[-1][1]
        self.stack.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            self.seconds[name] += now - self.stack.pop()[1]
            if self.stack:
                self.stack[-1][1] = now

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def instrument(clock: PhaseClock) -> None:
    clock.wrap(datasets, "load", "data")
    clock.wrap(reproduce.probe, "population_size", "probe")
    clock.wrap(run_start, "initial_states", "init")
    clock.wrap(run_start, "load_teacher", "init")
    clock.wrap(train_loop.Population, "__init__", "init")
    clock.wrap(train_loop.Population, "dispatch", "training")
    clock.wrap(train_loop.Population, "drain", "training")
    clock.wrap(checkpointing.Checkpoints, "save", "checkpoints")
    clock.wrap(checkpointing.Checkpoints, "close", "checkpoints")
    clock.wrap(predicting, "write_predictions", "predictions")
    clock.wrap(scoring, "score_runs_report", "scoring")
    clock.wrap(report, "write_report", "report")


def main(argv) -> None:
    config = flags.FLAGS.config
    config.grid.workers = 1  # every phase in this process, where the clock sees it
    if flags.FLAGS.cache:
        compilation_cache.enable()
    clock = PhaseClock()
    instrument(clock)
    with contextlib.ExitStack() as stack:
        workdir = flags.FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        start = time.perf_counter()
        runs = reproduce.run_grid(config, workdir)
        wall = time.perf_counter() - start
    planned = {info.run: c for info, c in reproduce.planned_runs(config, workdir or ".")}
    images = sum(probe.train_images(planned[r.run]) for r in runs)
    first = planned[runs[0].run]
    step_rate, _ = probe.images_per_second(first, run_data.load_training(first), 1,
                                           runs_axis.data_mesh(jax.local_devices()[:1]),
                                           min_seconds=flags.FLAGS.seconds)
    seconds = {name: clock.seconds[name] for name in PHASES}
    seconds["other"] = wall - sum(seconds.values())
    grid_rate = images / (seconds["training"] + seconds["checkpoints"])
    device = jax.local_devices()[0]
    print(f"wall_s={wall:.1f} " + " ".join(f"{k}_s={v:.1f}" for k, v in seconds.items()) +
          f" train_images={images} grid_images_per_s={grid_rate:.0f} "
          f"step_images_per_s={step_rate:.0f} grid_efficiency={grid_rate / step_rate:.3g} "
          f"wall_efficiency={images / wall / step_rate:.3g} runs={len(runs)} "
          f"platform={jax.default_backend()} device={device.device_kind.replace(' ', '_')}",
          flush=True)


if __name__ == "__main__":
    sys.argv = configs.resolve_argv(sys.argv)
    config_flags.DEFINE_config_file("config", None, "e.g. configs/fashion_mnist.py")
    flags.DEFINE_string("workdir", "", "where the grid is trained (default: a temporary dir)")
    flags.DEFINE_bool("cache", False, "use the persistent compilation cache")
    flags.DEFINE_float("seconds", 3.0, "timed seconds of the step's own rate")
    flags.mark_flags_as_required(["config"])
    app.run(main)
