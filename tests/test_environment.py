"""Every report records the versions and the machine behind it (report.md and runs.json)."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys

import flax
import jax
import jaxlib
import numpy as np
import optax

from softlabel_ood.analysis import environment, report, results
from tests.report_helpers import metric_rows, paper_runs
from tests.test_claims import PAPER_LIKE

# The versions the modules themselves report, against which the metadata read is checked.
IMPORTED = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__}


def test_describe_names_the_versions_the_modules_report():
    env = environment.describe()
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    for name, version in IMPORTED.items():
        assert env[name] == version
    assert env["platform"] == platform.platform()
    assert env["devices"].startswith(f"{jax.default_backend()}: {len(jax.devices())} × ")


def test_the_report_records_the_environment(tmp_path):
    runs = paper_runs(seeds=(0,))
    report.write_report(metric_rows(runs, PAPER_LIKE), tmp_path, runs=runs)
    stored = json.loads((tmp_path / "runs.json").read_text())
    for name, version in IMPORTED.items():
        assert stored["environment"][name] == version
    assert stored["environment"]["platform"] == platform.platform()
    assert results.read_runs_json(tmp_path / "runs.json") == runs
    text = (tmp_path / "report.md").read_text()
    environment_section = text[text.index("## Environment"):]
    for name, version in IMPORTED.items():
        assert f"| {name} | {version} |" in environment_section
    assert f"| python | {platform.python_version()} |" in environment_section


def test_runs_json_written_before_the_environment_still_reads(tmp_path):
    runs = paper_runs(seeds=(0,))
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([dataclasses.asdict(r) for r in runs]))
    assert results.read_runs_json(path) == runs
