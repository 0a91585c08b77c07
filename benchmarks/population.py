"""R runs trained together in one program against the same R runs one after another.

    python -m benchmarks.population --model=small_cnn --image_size=8 --channels=1 --batch_size=64
    python -m benchmarks.population --model=wrn16_2 --image_size=32 --channels=3 --batch_size=128
    python -m benchmarks.population --model=wrn40_2 --dtype=bfloat16 --runs=1,4 \\
        --batch_size=128 --steps=200                                   # on a GPU or TPU

(from the repository root). Random uint8 images and labels, resident on the devices as the
train command keeps them; each run has its own seed, learning rate and index table. Both ways
run the same steps with the same calls (`--steps_per_call`, 0 = the platform's default), every
program compiled before timing, in one process on the same devices.

Prints one line per R of --runs:
  together_images_per_s    R·steps·batch / seconds of `train_step.make_population_steps`
                           (for R = 1: the single-run program, as reproduce uses then);
  sequential_images_per_s  the same images / seconds of R runs of `make_train_steps` in turn;
  ratio                    together / sequential: above 1, populations pay on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import train_step as benchmarks_train_step
from softlabel_ood import models
from softlabel_ood.training import run_model, train_step


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchmarks_train_step.add_model_arguments(parser)  # --batch_size is per run
    parser.add_argument("--runs", default="1,4,12,36", help="population sizes R to time")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--steps_per_call", type=int, default=0, help="0 = platform default")
    parser.add_argument("--num_train", type=int, default=0, help="images (default: 8 batches)")
    return parser.parse_args(argv)


def _calls(steps: int, per_call: int) -> list[tuple[int, int]]:
    return [(first, min(per_call, steps - first)) for first in range(0, steps, per_call)]


def main(argv=None) -> None:
    args = parse_args(argv)
    per_call = args.steps_per_call or run_model.AUTO_STEPS_PER_CALL.get(
        jax.default_backend(), run_model.AUTO_STEPS_PER_CALL_ACCELERATOR)
    per_call = min(per_call, args.steps)
    shape = (args.image_size, args.image_size, args.channels)
    model = models.create_model(args.model, num_classes=args.num_classes, dropout_rate=0.0,
                                dtype=jax.numpy.dtype(args.dtype))
    config = train_step.StepConfig(method="ls", num_classes=args.num_classes,
                                   mean=(0.5,) * args.channels, std=(0.25,) * args.channels,
                                   compute_dtype=args.dtype)
    mesh = train_step.data_mesh()
    replicated = NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    num_train = args.num_train or 8 * args.batch_size
    data = jax.device_put({
        "image": rng.integers(0, 256, (num_train, *shape), dtype=np.uint8),
        "label": rng.integers(0, args.num_classes, num_train, dtype=np.int32)}, replicated)

    def inputs(seed: int):
        state = train_step.create_train_state(model, config, image_shape=shape, seed=seed,
                                              mesh=mesh)
        hp = train_step.Hyperparams.create(seed=seed, learning_rate=0.05 + 0.001 * seed,
                                           total_steps=10 * args.steps, label_smoothing=0.1)
        index = np.random.default_rng(seed).integers(0, num_train, (args.steps, args.batch_size))
        return state, hp, index.astype(np.int32)

    def on_device(value: int):
        return jax.device_put(np.int32(value), replicated)

    def timed(run, state, hp, feed) -> float:
        """Seconds of `args.steps` steps, after one untimed call that compiles."""
        state, metrics = run(state, hp, None, data, feed, on_device(0), on_device(per_call))
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for first, n in _calls(args.steps, per_call):
            state, metrics = run(state, hp, None, data, feed, on_device(first), on_device(n))
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start

    single = train_step.make_train_steps(model, config, mesh, steps_per_call=per_call,
                                         resident=True)
    feed_sharding = NamedSharding(mesh, P(None, train_step.DATA_AXIS))
    for runs in (int(r) for r in args.runs.split(",")):
        sequential = 0.0
        per_run = [inputs(seed) for seed in range(runs)]
        for state, hp, index in per_run:
            sequential += timed(single, jax.device_put(state, replicated),
                                jax.device_put(hp, replicated),
                                {"index": jax.device_put(index, feed_sharding)})
        if runs == 1:
            together = sequential
        else:
            mesh = mesh
            run = train_step.make_population_steps(model, config, mesh,
                                                   steps_per_call=per_call, population=runs)
            # Fresh states: the sequential timings donated theirs.
            states, hps, indices = zip(*(inputs(seed) for seed in range(runs)), strict=True)
            together = timed(run, train_step.stack(list(states), mesh),
                             train_step.stack(list(hps), mesh),
                             {"index": jax.device_put(np.stack(indices), NamedSharding(
                                 mesh, P(train_step.RUNS_AXIS, None,
                                                 train_step.DATA_AXIS)))})
        images = runs * args.steps * args.batch_size
        print(f"model={args.model} image_size={args.image_size} batch_size={args.batch_size} "
              f"dtype={args.dtype} steps_per_call={per_call} "
              f"platform={jax.default_backend()} devices={jax.device_count()} R={runs} "
              f"together_images_per_s={images / together:.1f} "
              f"sequential_images_per_s={images / sequential:.1f} "
              f"ratio={sequential / together:.3f}", flush=True)


if __name__ == "__main__":
    main()
