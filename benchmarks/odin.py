"""What ODIN costs at predict time, per (T, ε) pair, relative to a plain forward pass.

    python -m benchmarks.odin --model=wrn40_2 --batch_size=500 [--steps=10 --dtype=bfloat16]

Times, on one batch of random images and a freshly initialised model, predict's eval program (a
forward pass returning logits and features) and `softlabel_ood.training.odin.make_odin_program`,
which predict runs in its place when ODIN pairs are configured (it returns the eval program's
outputs too), for three sets of pairs: ε = 0 only (T = 1 and T = 1000), one pair with ε > 0, and
`odin.DEFAULT_PAIRS`. Prints one line of `name=value` fields, the ODIN figures as multiples of
the plain forward pass:

    forward_ms        the eval program's time per batch
    odin_eps0_x       the ODIN program with only ε = 0 pairs (the forward pass and softmaxes)
    odin_one_pair_x   one (T, ε > 0) pair: forward, backward for the gradient sign, forward again
    odin_default_x    every default pair (their count is `default_pairs`): what predict costs
                      per batch with the default pairs, against 1 without ODIN
    per_extra_pair_x  (odin_default - odin_one_pair) / (pairs with ε > 0, minus one): the cost of
                      each further ε at the same T

Every figure is the best of --repeats timings of --steps calls after a warm-up call.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import train_step as benchmarks_train_step
from softlabel_ood import models
from softlabel_ood.training import evaluation, odin, runs_axis
from softlabel_ood.training import train_step as ts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchmarks_train_step.add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=10, help="timed calls per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings; the best is kept")
    return parser.parse_args(argv)


def best_seconds_per_call(fn, *args, steps: int, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compiles
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv=None) -> None:
    args = parse_args(argv)
    mesh = runs_axis.data_mesh()
    if args.batch_size % mesh.size:
        raise SystemExit(f"--batch_size={args.batch_size} is not divisible by {mesh.size} devices")
    shape = (args.image_size, args.image_size, args.channels)
    model = models.create_model(args.model, num_classes=args.num_classes,
                                dtype=jnp.dtype(args.dtype))
    config = ts.StepConfig.for_method("ce", num_classes=args.num_classes,
                                      mean=(0.5,) * args.channels, std=(0.25,) * args.channels,
                                      compute_dtype=args.dtype)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    variables = runs_axis.stack([jax.device_put(variables, NamedSharding(mesh, P()))], mesh)
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (args.batch_size, *shape), dtype=np.uint8),
                            NamedSharding(mesh, P()))
    size = {"runs": 1, "batch_size": args.batch_size}

    def timed(program):
        return best_seconds_per_call(program, variables, images, np.int32(0), steps=args.steps,
                                     repeats=args.repeats)

    forward = timed(evaluation.make_eval_program(model, config, mesh, **size))
    perturbed = [p for p in odin.DEFAULT_PAIRS if p[1] > 0]
    sets = {"eps0": ((1.0, 0.0), (1000.0, 0.0)), "one_pair": (perturbed[0],),
            "default": odin.DEFAULT_PAIRS}
    ratios = {name: timed(odin.make_odin_program(model, config, mesh, pairs, **size)) / forward
              for name, pairs in sets.items()}
    per_extra = ((ratios["default"] - ratios["one_pair"]) / (len(perturbed) - 1)
                 if len(perturbed) > 1 else float("nan"))
    device = jax.local_devices()[0]
    print(f"forward_ms={1000 * forward:.2f} odin_eps0_x={ratios['eps0']:.2f} "
          f"odin_one_pair_x={ratios['one_pair']:.2f} odin_default_x={ratios['default']:.2f} "
          f"per_extra_pair_x={per_extra:.2f} default_pairs={len(odin.DEFAULT_PAIRS)} "
          f"device={device.device_kind.replace(' ', '_')} num_devices={mesh.size} "
          f"model={args.model} batch_size={args.batch_size} dtype={args.dtype}")


if __name__ == "__main__":
    main()
