"""The benchmarks run end to end at tiny sizes and print every figure they document."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np

from tests import idx_files
from tests.train_helpers import REPO, run_module

FIELDS = ("step_images_per_s", "loop_images_per_s", "loop_efficiency", "first_compile_s",
          "fixed_s", "cache_saved_s")


def test_train_loop_benchmark_prints_its_figures():
    result = run_module("benchmarks.train_loop", "--config=configs/digits.py",
                        "--num_train=256", "--epochs=1", "--repeats=1", "--step_repeats=2")
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r"(\w+)=(\S+)", line))
    # Timings at these sizes are noise; what is checked is that every figure is there and
    # that the ratio is the ratio of the two rates it names (nan when the loop's was untimeable).
    figures = {field: float(values[field]) for field in FIELDS}
    assert figures["step_images_per_s"] > 0
    assert figures["first_compile_s"] > 0
    efficiency = figures["loop_images_per_s"] / figures["step_images_per_s"]
    assert math.isclose(figures["loop_efficiency"], efficiency, rel_tol=1e-2) or (
        math.isnan(figures["loop_efficiency"]) and math.isnan(efficiency))
    assert values["resident"] == "True"
    assert values["steps_per_call"] == "1"


def test_train_step_benchmark_prints_images_per_second():
    result = run_module("benchmarks.train_step", "--model=small_cnn", "--batch_size=16",
                        "--image_size=8", "--channels=1", "--steps=2", "--warmup_steps=1")
    assert result.returncode == 0, result.stderr[-2000:]
    values = dict(re.findall(r"(\w+)=(\S+)", result.stdout.strip().splitlines()[-1]))
    assert float(values["images_per_sec"]) > 0
    assert values["model"] == "small_cnn"


def test_scoring_benchmark_agrees_with_its_reference_on_every_score():
    result = run_module("benchmarks.scoring", "--runs=2", "--ood_splits=2", "--examples=300",
                        "--classes=5", "--feature_dim=32", "--train_examples=200", "--repeats=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 runs x 10 scores x 2 OOD splits = 40 pairs" in result.stdout
    assert result.stdout.count("results identical to within") == 4
    assert "FAIL" not in result.stdout


def test_scoring_benchmark_end_to_end_times_the_command_against_the_loop():
    result = run_module("benchmarks.scoring", "--end_to_end", "--runs=2", "--ood_splits=2",
                        "--examples=300", "--classes=5", "--repeats=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 runs x 5 scores x 2 OOD splits = 20 pairs" in result.stdout
    for label in ("1 run", "2 runs"):
        assert f"{label}: python -m softlabel_ood.score, a fresh process each" in result.stdout
    ratios = re.findall(r"ratio \(loop / score\): (\S+)x cold, (\S+)x warm", result.stdout)
    assert len(ratios) == 2
    assert all(float(r) > 0 for pair in ratios for r in pair)
    # metrics.csv of the command agrees with the loop's numbers, value for value.
    assert result.stdout.count("values of metrics.csv: ") == 2
    assert "FAIL" not in result.stdout


def test_odin_benchmark_prints_its_figures():
    result = run_module("benchmarks.odin", "--model=small_cnn", "--batch_size=16",
                        "--image_size=8", "--channels=1", "--steps=1", "--repeats=1")
    assert result.returncode == 0, result.stderr[-2000:]
    values = dict(re.findall(r"(\w+)=(\S+)", result.stdout.strip().splitlines()[-1]))
    for field in ("forward_ms", "odin_eps0_x", "odin_one_pair_x", "odin_default_x",
                  "per_extra_pair_x"):
        assert math.isfinite(float(values[field])), field
    assert float(values["forward_ms"]) > 0
    assert values["default_pairs"] == "7"


def test_population_benchmark_prints_one_ratio_per_population_size():
    result = run_module("benchmarks.population", "--config=configs/digits.py", "--runs=1,2",
                        "--seconds=0.05", "--num_train=256")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    rates = []
    for line, runs in zip(lines, (1, 2), strict=True):
        values = dict(re.findall(r"(\w+)=(\S+)", line))
        assert int(values["R"]) == runs
        assert float(values["compile_s"]) > 0
        rates.append(float(values["images_per_s"]))
        assert rates[-1] > 0
        # The ratio is against the first line's R = 1: the same runs in turn.
        assert math.isclose(float(values["ratio"]), rates[-1] / rates[0], rel_tol=1e-2)
    assert dict(re.findall(r"(\w+)=(\S+)", lines[0]))["ratio"] == "1.000"


def test_grid_benchmark_accounts_for_the_whole_grid(tmp_path):
    result = run_module("benchmarks.grid", "--config=configs/digits.py", "--seconds=0.05",
                        f"--workdir={tmp_path}", "--config.num_epochs=1",
                        "--config.num_train_examples=128", "--config.num_ood_examples=32",
                        "--config.grid.seeds=0,", "--config.grid.max_population=2")
    assert result.returncode == 0, result.stderr[-3000:]
    values = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.e+-]+)(?=\s|$)",
                                                 result.stdout.strip().splitlines()[-1])}
    phases = ("data", "probe", "compile", "init", "training", "checkpoints", "predictions",
              "scoring", "report", "other")
    # The phases split the wall time: each is a share of it, and together they are all of it.
    assert math.isclose(sum(values[f"{p}_s"] for p in phases), values["wall_s"], rel_tol=1e-3,
                         abs_tol=0.2)
    for phase in ("training", "predictions", "compile", "scoring", "report"):
        assert values[f"{phase}_s"] > 0, phase
    assert values["probe_s"] == 0  # an explicit max_population measures nothing
    # 12 runs of 2 steps of 64 images (the OE run adds 2 x 128 outliers): 12 x 128 + 256.
    assert values["train_images"] == 12 * 2 * 64 + 2 * 128
    # Three significant digits, and the rates to the image/s: 1% holds however slow the grid.
    assert math.isclose(values["grid_efficiency"],
                        values["grid_images_per_s"] / values["step_images_per_s"], rel_tol=1e-2)
    assert (tmp_path / "report" / "report.md").exists()


def test_accelerator_checks_script_runs_every_check_at_tiny_sizes(tmp_path):
    """benchmarks/accelerator_checks.sh --smoke: each check exits 0 and prints its figures, so a
    short accelerator lease is not spent on a broken script. Nothing here depends on how fast
    the machine is: --smoke sets no time limit, and only what the checks printed is read."""
    # Small Fashion-MNIST IDX files (every class in both splits) for the Fashion-MNIST grid, so
    # the real IDX reader runs on any machine, with or without Debian's package.
    fashion_mnist = tmp_path / "fashion_mnist"
    idx_files.write_idx_folder(fashion_mnist, np.random.default_rng(0), counts=(256, 60))
    out_dir = tmp_path / "out"
    result = subprocess.run(
        ["bash", "benchmarks/accelerator_checks.sh", str(out_dir), "--smoke"], cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, "FASHION_MNIST": str(fashion_mnist)},
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    checks = ("fashion_mnist_grid", "population_wrn40_2", "digits_grid", "train_loop_wrn40_2")
    for check in checks:
        assert f"== {check} (no time limit)" in out, out
        assert (out_dir / f"{check}.log").exists()
    assert out.count("   exit 0 after") == len(checks), out
    assert f"--config.dataset_paths.fashion_mnist={fashion_mnist} " in out, out
    assert re.search(r"grid_efficiency=.* runs=12 ", out), out
    assert "R=2 images_per_s=" in out
    assert re.search(r"digits grid max_population=0 wall_s=\d+", out), out
    assert re.search(r"digits grid max_population=1 wall_s=\d+", out), out
    assert "loop_efficiency=" in out
