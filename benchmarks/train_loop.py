"""The train command's loop against its own bare step, on in-memory synthetic data.

    python -m benchmarks.train_loop --config=configs/digits.py
    python -m benchmarks.train_loop --config=configs/cifar10.py --model=wrn16_2 --num_train=1280
    python -m benchmarks.train_loop --config=configs/cifar10.py --model=wrn40_2 \\
        --compute_dtype=bfloat16 --num_train=50000 --epochs=3          # on a GPU or TPU

(from the repository root). The data are random uint8 images of the config's dataset shape
(digits 8x8x1, fashion_mnist 28x28x1, cifar 32x32x3) with random labels, so nothing is read
from disk; the config's batch size, steps_per_call, log, evaluation and checkpoint intervals
are used as they are, and the flags override them. On an accelerator, install the matching JAX
first (README); the same command runs there unchanged.

Prints one line:
  step_images_per_s  one step per call of the train program (one run, `benchmarks.train_step`)
                     in a Python loop on one batch already on the devices: the step's speed;
  loop_images_per_s  `train_loop.train`, the train command's loop (device-resident data, calls
                     of steps_per_call steps, logs, checkpoints, and a per-epoch evaluation
                     whose test set is one training batch: the forward passes over a real test
                     set are the command's work, not the loop's), from a 1-epoch and a
                     (1 + epochs)-epoch run, both with every program already compiled
                     (each timing is the best of --repeats);
  loop_efficiency    loop_images_per_s / step_images_per_s;
  first_compile_s    compile seconds of the first run in a fresh process with the persistent
                     cache off (every program the loop needs);
  fixed_s            seconds of a warm 1-epoch run that are not its steps (state creation,
                     evaluation, checkpoints, logs): t(1 epoch) - steps / loop rate;
  cache_saved_s      compile seconds that the persistent compilation cache saves a second
                     process (the same loop, run by a child process twice over one cache dir).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import train_step as benchmarks_train_step
from softlabel_ood import configs, methods
from softlabel_ood.data import datasets, run_data
from softlabel_ood.data.datasets import ArrayDataset
from softlabel_ood.training import (
    compilation_cache,
    run_model,
    runs_axis,
    train_feed,
    train_loop,
)

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/<family>.py[:method]")
    parser.add_argument("--model", help="override config.model")
    parser.add_argument("--batch_size", type=int, help="override config.batch_size")
    parser.add_argument("--compute_dtype", choices=("float32", "bfloat16"))
    parser.add_argument("--steps_per_call", type=int, help="override config.steps_per_call")
    parser.add_argument("--device_data_max_mb", type=int, help="0 feeds batches from the host")
    parser.add_argument("--num_train", type=int, default=0,
                        help="synthetic training images (default: 20 batches)")
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs beyond the first")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--step_repeats", type=int, default=20, help="timed bare steps")
    parser.add_argument("--skip_cache", action="store_true",
                        help="do not measure the persistent cache (no child processes)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one run, JSON out
    return parser.parse_args(argv)


def load_config(args):
    path, _, arg = configs.resolve(args.config).partition(":")
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    # Per-epoch evaluation of one training batch's worth of images: the loop's bookkeeping is
    # timed, not the forward passes over a real test set (which the command also runs).
    config.eval_batch_size = config.batch_size
    for field in ("model", "batch_size", "compute_dtype", "steps_per_call", "device_data_max_mb"):
        if getattr(args, field) is not None:
            config[field] = getattr(args, field)
    if methods.needs_teacher(config.method):
        raise SystemExit("benchmark a method without a teacher (ce, ls, oe)")
    return config


def synthetic_data(config, num_train: int) -> run_data.TrainingData:
    info = datasets.info(config.dataset)
    rng = np.random.default_rng(0)

    def make(n, name, split):
        images = rng.integers(0, 256, (n, *info.image_shape), dtype=np.uint8)
        labels = rng.integers(0, info.num_classes, n).astype(np.int32)
        return ArrayDataset(images=images, labels=labels, name=name, split=split)

    outliers = None
    if config.method == "oe":
        outliers = make(max(num_train, 4 * config.oe.batch_size), "outliers", "train")
    return run_data.TrainingData(train=make(num_train, "synthetic", "train"),
                                 test=make(config.batch_size, "synthetic", "test"),
                                 outliers=outliers)


class EventSeconds:
    """Sums the durations JAX reports for one monitoring event."""

    def __init__(self, event: str):
        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(
            lambda name, seconds, **_: self._add(name, event, seconds))

    def _add(self, name, event, seconds):
        if name == event:
            self.total += seconds


def timed_run(config, data, mesh, epochs: int) -> float:
    config = config.copy_and_resolve_references()
    config.num_epochs = epochs
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        state = train_loop.train(config, workdir, data, mesh)
        jax.block_until_ready(state)
        return time.perf_counter() - start


def bare_step_images_per_s(config, data, mesh, repeats: int) -> float:
    model = run_model.create_model(config)
    step_config = run_model.step_config(config)
    state = run_model.create_state(config, model, mesh)
    hp = run_model.hyperparams(config, num_train_examples=len(data.train))
    rows = np.arange(config.batch_size)
    batch = {"image": data.train.images[rows], "label": data.train.labels[rows]}
    if data.outliers is not None:
        batch["outlier_image"] = data.outliers.images[np.arange(config.oe.batch_size)]
    call = benchmarks_train_step.one_step_call(model, step_config, mesh, state, hp, batch)
    seconds = benchmarks_train_step.time_steps(call, warmup=2, steps=repeats)
    return repeats * config.batch_size / seconds


def child(args) -> None:
    """One cold run in this process, with the persistent cache that the parent chose."""
    os.environ[compilation_cache.ENV] = args.child
    compilation_cache.enable()
    saved = EventSeconds(CACHE_SAVED_EVENT)
    compiled = EventSeconds(COMPILE_EVENT)
    config = load_config(args)
    data = synthetic_data(config, args.num_train or 20 * config.batch_size)
    seconds = timed_run(config, data, runs_axis.data_mesh(), 1)
    print(json.dumps({"seconds": seconds, "saved": saved.total, "compiled": compiled.total}))


def cache_saving(argv) -> tuple[float, float]:
    """(seconds saved by the cache in a second process, cold-run seconds - warm-run seconds)."""
    with tempfile.TemporaryDirectory() as cache:
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv,
                                  f"--child={cache}"], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs[1]["saved"], runs[0]["seconds"] - runs[1]["seconds"]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        return child(args)
    jax.config.update("jax_enable_compilation_cache", False)
    compiled = EventSeconds(COMPILE_EVENT)
    config = load_config(args)
    mesh = runs_axis.data_mesh()
    data = synthetic_data(config, args.num_train or 20 * config.batch_size)
    steps_per_epoch = len(data.train) // config.batch_size

    timed_run(config, data, mesh, 1)  # compiles every program of the loop
    first_compile = compiled.total
    # Best of --repeats for every timing: this machine may be shared, and noise only slows.
    one = min(timed_run(config, data, mesh, 1) for _ in range(args.repeats))
    more = min(timed_run(config, data, mesh, 1 + args.epochs) for _ in range(args.repeats))
    # With too few timed steps the difference can drown in noise: then no rate, rather than a
    # made-up one.
    loop_rate = (args.epochs * steps_per_epoch * config.batch_size / (more - one)
                 if more > one else float("nan"))
    fixed = one - steps_per_epoch * config.batch_size / loop_rate
    step_rate = max(bare_step_images_per_s(config, data, mesh, args.step_repeats)
                    for _ in range(args.repeats))
    saved = "n/a"
    if not args.skip_cache:
        saved_s, _ = cache_saving(argv)
        saved = f"{saved_s:.2f}"
    device = jax.local_devices()[0]
    resident = (train_feed.training_bytes(data.train, data.outliers)
                <= config.device_data_max_mb * train_loop.MEGABYTE)
    print(f"step_images_per_s={step_rate:.1f} loop_images_per_s={loop_rate:.1f} "
          f"loop_efficiency={loop_rate / step_rate:.3f} first_compile_s={first_compile:.2f} "
          f"fixed_s={fixed:.2f} cache_saved_s={saved} "
          f"device={device.device_kind.replace(' ', '_')} num_devices={mesh.size} "
          f"model={config.model} dataset={config.dataset} batch_size={config.batch_size} "
          f"dtype={config.compute_dtype} steps_per_call={run_model.steps_per_call(config)} "
          f"resident={resident} "
          f"steps_per_epoch={steps_per_epoch} epochs={args.epochs}")


if __name__ == "__main__":
    main()
