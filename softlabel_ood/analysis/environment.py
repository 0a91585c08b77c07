"""The software and machine behind a report: package versions, Python, platform, devices.

Results move with these versions (a report's tables differ in the second decimal between jax
releases), so every report records them: report.md in its Environment section, runs.json under
`"environment"`. They describe the process that wrote the report; `reproduce` trains and reports
in one process, so for its runs they are also the training environment. Versions are read from
the installed distributions' metadata, so that describing them imports nothing (flax and optax
stay out of a scoring-only process).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

from softlabel_ood import __version__

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    # Linux names the CPU model in /proc/cpuinfo; elsewhere `platform.processor()` may.
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _devices() -> str:
    import jax  # the scoring side's dependency; by the time a report is written it is loaded

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"{jax.default_backend()}: {len(devices)} × {', '.join(kinds)}"


def describe() -> dict[str, str]:
    """softlabel_ood, Python and PACKAGES versions, the platform, the CPU and JAX's devices."""
    return {
        "softlabel_ood": __version__,
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "devices": _devices(),
    }


def markdown(environment: dict[str, str], *, rebuilt_by: str | None = None) -> str:
    """The Environment section of report.md; `rebuilt_by` is the softlabel_ood version that
    rebuilt the report from an earlier one's files (the environment is then that report's)."""
    rows = "\n".join(f"| {name} | {value} |" for name, value in environment.items())
    who = ("The process that wrote this report (for `reproduce`, also the one that trained its "
           "runs; runs skipped as already finished were trained by an earlier one).")
    if rebuilt_by is not None:
        who = (f"The process that scored these runs and first wrote their report (for "
               f"`reproduce`, also the one that trained them). This report.md was rebuilt from "
               f"that report's metrics.csv and runs.json by softlabel_ood {rebuilt_by} "
               f"(`python -m softlabel_ood.analysis.rebuild`); every value is the one scored "
               f"then.")
    if not environment:
        return f"## Environment\n\n{who} Not recorded: the report predates it.\n"
    return f"## Environment\n\n{who}\n\n| | |\n|---|---|\n{rows}\n"
