"""Training throughput of the jitted train step on random data.

    python -m benchmarks.train_step --model=wrn40_2 --batch_size=128 [--steps=20 --dtype=bfloat16]

(from the repository root; `python benchmarks/train_step.py ...` works once the package is
installed, e.g. `pip install -e .`).

Prints one line, `images_per_sec=<float> device=<kind> num_devices=<n> ...`: images per second over
`--steps` timed steps (ce, with augmentation and the OE reference optimizer), after warm-up steps
that include the compilation. The batch is split over all local devices.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from softlabel_ood import models
from softlabel_ood.training import runs_axis
from softlabel_ood.training import train_step as ts


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and input flags that the step, ODIN and population benchmarks share."""
    parser.add_argument("--model", required=True, help="wrn40_2, wrn16_2, resnet18, small_cnn...")
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed, compile included")
    parser.add_argument("--dropout_rate", type=float, default=0.3)
    return parser.parse_args(argv)


def one_step_call(model, config: ts.StepConfig, mesh, state, hparams, batch: dict):
    """`call()`: one train step of one run on `batch` (host arrays), everything already on the
    devices: the train program with R = 1 and one host-fed step per call, as the step alone
    costs it. The state is carried (donated) from call to call."""
    program = ts.make_train_program(model, config, mesh, runs=1, steps_per_call=1)
    feed = jax.device_put({k: np.asarray(v)[None, None] for k, v in batch.items()},
                          NamedSharding(mesh, P(runs_axis.RUNS_AXIS, None, runs_axis.DATA_AXIS)))
    carried = {"states": runs_axis.stack([state], mesh)}
    hps = runs_axis.stack([hparams], mesh)
    first, count = jax.device_put((np.int32(0), np.int32(1)), NamedSharding(mesh, P()))

    def call():
        carried["states"], metrics = program(carried["states"], hps, None, {}, feed, first, count)
        return metrics

    return call


def time_steps(call, *, warmup: int, steps: int) -> float:
    """Seconds of `steps` calls of `call` (`one_step_call`), after `warmup` untimed calls (the
    first compiles)."""
    for _ in range(warmup):
        metrics = call()
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        metrics = call()
    jax.block_until_ready(metrics)
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    mesh = runs_axis.data_mesh()
    if args.batch_size % mesh.size:
        raise SystemExit(f"--batch_size={args.batch_size} is not divisible by {mesh.size} devices")
    image_shape = (args.image_size, args.image_size, args.channels)
    model = models.create_model(args.model, num_classes=args.num_classes,
                                dropout_rate=args.dropout_rate, dtype=jnp.dtype(args.dtype))
    total_steps = args.warmup_steps + args.steps
    config = ts.StepConfig.for_method("ce", num_classes=args.num_classes,
                                      mean=(0.5,) * args.channels, std=(0.25,) * args.channels,
                                      compute_dtype=args.dtype)
    state = ts.create_train_state(model, config, image_shape=image_shape, seed=0, mesh=mesh)
    hparams = ts.Hyperparams.create(seed=0, learning_rate=0.1, total_steps=total_steps)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (args.batch_size, *image_shape), dtype=np.uint8),
             "label": rng.integers(0, args.num_classes, args.batch_size).astype(np.int32)}
    call = one_step_call(model, config, mesh, state, hparams, batch)
    seconds = time_steps(call, warmup=args.warmup_steps, steps=args.steps)

    device = jax.local_devices()[0]
    print(f"images_per_sec={args.steps * args.batch_size / seconds:.1f} "
          f"device={device.device_kind.replace(' ', '_')} num_devices={mesh.size} "
          f"model={args.model} batch_size={args.batch_size} dtype={args.dtype} "
          f"steps={args.steps} step_ms={1000 * seconds / args.steps:.1f}")


if __name__ == "__main__":
    main()
