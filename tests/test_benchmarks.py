"""The benchmarks run end to end at tiny sizes and print every figure they document."""

from __future__ import annotations

import math
import re

from tests.train_helpers import run_module

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
