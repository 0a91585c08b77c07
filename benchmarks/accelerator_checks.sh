#!/bin/bash
# The accelerator figures that docs/performance.md and docs/reproduction.md quote, in one script
# sized to fit a 15-minute lease of one GPU (each check has its own time limit; together at most
# 9 minutes).
#
#     benchmarks/accelerator_checks.sh OUT_DIR           # on the GPU or TPU machine
#     benchmarks/accelerator_checks.sh OUT_DIR --smoke   # tiny sizes, no time limits: checks the
#                                                        # script on a CPU
#
# From the repository root, with JAX for the accelerator installed and this package importable
# (`pip install -e .`, or PYTHONPATH=. with the requirements installed). FASHION_MNIST names the
# folder of the Fashion-MNIST IDX files (default: Debian's /usr/share/datasets/fashion-mnist; the
# test of --smoke writes small ones, 256 training and 60 test images, and names their folder).
# Each check writes OUT_DIR/<check>.log; the lines to read are the benchmarks' result lines.
#
# 1. fashion_mnist_grid   benchmarks.grid: the Fashion-MNIST grid (36 runs) with every default,
#                         its phases, grid_efficiency against the step and its wall time;
# 2. population_wrn40_2   benchmarks.population: wrn40_2, bfloat16, batch 128 per run, R = 1, 2, 4
#                         on one device (what the probe of `max_population = 0` measures);
# 3. digits_grid          the README's main job on fresh workdirs, with every default and with
#                         runs alone (grid.max_population=1): its wall time each way;
# 4. train_loop_wrn40_2   benchmarks.train_loop: the train command's loop against its own step on
#                         50,000 CIFAR-shaped images, bfloat16.
# The CIFAR-10 grid's projected hours follow from check 2 (docs/reproduction.md says how).
set -u
out=${1:?usage: benchmarks/accelerator_checks.sh OUT_DIR [--smoke]}
smoke=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
fashion_mnist=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}

if [ "$smoke" = "--smoke" ]; then
  fm=(--config.num_epochs=1 --config.num_train_examples=256 --config.num_ood_examples=32
      --config.grid.seeds=0, "--config.odin_pairs=((1.0, 0.0),)" --seconds=0.1)
  wrn=(--config=configs/digits.py --runs=1,2 --seconds=0.1 --num_train=256)
  loop=(--config=configs/digits.py --num_train=64 --epochs=1 --repeats=1 --skip_cache)
  grid_overrides=(--config.num_epochs=1 --config.grid.seeds=0, --config.num_train_examples=128
                  --config.num_ood_examples=32)
else
  fm=()
  wrn=(--config=configs/cifar10.py --model=wrn40_2 --compute_dtype=bfloat16 --runs=1,2,4
       --seconds=3 --num_train=2560)
  loop=(--config=configs/cifar10.py --model=wrn40_2 --compute_dtype=bfloat16 --num_train=50000
        --epochs=1 --repeats=1 --skip_cache)
  grid_overrides=()
fi

check() {  # check NAME SECONDS COMMAND...: runs COMMAND under a time limit, logging to NAME.log
  local name=$1 limit=$2
  shift 2
  # The limits fit the full sizes into a lease; --smoke checks the script, not the machine's
  # speed, so it runs each check to its end (timeout 0 sets no limit).
  if [ "$smoke" = "--smoke" ]; then
    limit=0
    echo "== $name (no time limit): $*"
  else
    echo "== $name (limit ${limit} s): $*"
  fi
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "   exit $? after ${SECONDS} s in all"
  grep -E "ratio=|wall_s=|loop_efficiency=|populations:" "$out/$name.log" | sed 's/^/   /' ||
    tail -n 4 "$out/$name.log" | sed 's/^/   /'
}

grid() {  # grid MAX_POPULATION: the digits grid on a fresh workdir, timed
  local workdir
  workdir=$(mktemp -d)
  local start=$SECONDS
  $py -m softlabel_ood.reproduce --config=configs/digits.py --workdir="$workdir" \
    --config.grid.max_population="$1" "${grid_overrides[@]}" > /dev/null || return
  echo "digits grid max_population=$1 wall_s=$((SECONDS - start))"
  rm -rf "$workdir"
}
export -f grid
export py

$py -c "import jax; print('devices:', jax.devices())"
check fashion_mnist_grid 300 $py -m benchmarks.grid --config=configs/fashion_mnist.py \
  --config.dataset_paths.fashion_mnist="$fashion_mnist" "${fm[@]}"
check population_wrn40_2 150 $py -m benchmarks.population "${wrn[@]}"
check digits_grid 120 bash -c "$(declare -p grid_overrides); grid 0; grid 1"
check train_loop_wrn40_2 90 $py -m benchmarks.train_loop "${loop[@]}"
