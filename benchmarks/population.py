"""R runs trained together in one program against the same runs one after another.

    python -m benchmarks.population --config=configs/digits.py --runs=1,2,4
    python -m benchmarks.population --config=configs/fashion_mnist.py --runs=1,2,4,8
    python -m benchmarks.population --config=configs/cifar10.py --model=wrn40_2 \\
        --compute_dtype=bfloat16 --runs=1,2,4 --seconds=5          # on a GPU or TPU

(from the repository root). What `reproduce`'s probe measures (`experiment/probe.py`), on
synthetic uint8 images of the config's dataset shape, resident on one device as the train
command keeps them: the train program of R runs (`training/runs_axis`: each run's own steps,
unrolled), each R timed over at least --seconds after a first call that compiles.

Prints one line per R of --runs:
  images_per_s  R·steps·batch / seconds of the program of R runs;
  ratio         images_per_s / images_per_s of R = 1 (the same runs in turn, each in the program
                of one run): above 1, populations pay on this machine;
  compile_s     seconds of the first call of the program of R runs.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import train_loop as benchmarks_train_loop
from softlabel_ood.experiment import probe
from softlabel_ood.training import run_model, runs_axis


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/<family>.py[:method]")
    parser.add_argument("--model", help="override config.model")
    parser.add_argument("--batch_size", type=int, help="override config.batch_size (per run)")
    parser.add_argument("--compute_dtype", choices=("float32", "bfloat16"))
    parser.add_argument("--steps_per_call", type=int, help="override config.steps_per_call")
    parser.add_argument("--runs", default="1,2,4", help="population sizes R to time")
    parser.add_argument("--num_train", type=int, default=0, help="images (default: 20 batches)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per R")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.device_data_max_mb = None
    config = benchmarks_train_loop.load_config(args)
    data = benchmarks_train_loop.synthetic_data(config, args.num_train or 20 * config.batch_size)
    mesh = runs_axis.data_mesh(jax.local_devices()[:1])
    alone = None
    for runs in (int(r) for r in args.runs.split(",")):
        rate, compile_s = probe.images_per_second(config, data, runs, mesh,
                                                  min_seconds=args.seconds)
        alone = alone or rate
        print(f"model={config.model} dataset={config.dataset} batch_size={config.batch_size} "
              f"dtype={config.compute_dtype} steps_per_call={run_model.steps_per_call(config)} "
              f"platform={jax.default_backend()} R={runs} images_per_s={rate:.1f} "
              f"ratio={rate / alone:.3f} compile_s={compile_s:.1f}", flush=True)


if __name__ == "__main__":
    main()
