"""notebooks/explore_results.ipynb runs top to bottom as Colab runs it, and offline in a clone.

Colab starts the kernel in an empty directory (/content), with no clone of the repository, and
the notebook installs the package with the `core` extra only. A fresh virtual environment per
test would take minutes, so the core-only import path is proved in the kernel itself instead: a
first cell, added here and not stored in the notebook, makes every top-level module of the
`train` and `tfds` extras unimportable (None in sys.modules) before the notebook's own cells
run, a last cell prints which of them got imported (none may), and the kernel's working
directory is an empty temporary directory (or the notebooks/ folder of a clone).
The package is found on PYTHONPATH, as an installed package would be. The digits job, which
needs the `train` extra, runs as the notebook runs it: in a subprocess, which the blocker does
not reach. The kernel reaches no address but the loopback, as on a machine without network. The
committed Fashion-MNIST report that the notebook opens with is read from this repository over
HTTP on the loopback, as Colab reads it from GitHub, and, as `jupyter-execute
notebooks/explore_results.ipynb` reads it in a clone, from the clone around the notebook.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading

import nbclient
import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

from softlabel_ood.analysis import report
from tests.report_helpers import paper_runs, report_rows, write_predictions
from tests.test_claims import PAPER_LIKE
from tests.train_helpers import REPO

NOTEBOOK = REPO / "notebooks" / "explore_results.ipynb"

# The import names of the distributions in the `train` and `tfds` extras of pyproject.toml.
EXTRA_MODULES = {
    "flax": "flax", "optax": "optax", "orbax-checkpoint": "orbax",
    "ml-collections": "ml_collections",
    "scikit-learn": "sklearn", "tqdm": "tqdm", "tensorboardX": "tensorboardX", "absl-py": "absl",
    "pillow": "PIL", "tensorflow-datasets": "tensorflow_datasets", "tensorflow-cpu": "tensorflow",
    "importlib_resources": "importlib_resources",
}
# matplotlib itself depends on pillow, so PIL is importable with the core extra.
BLOCKED = sorted(set(EXTRA_MODULES.values()) - {"PIL"})

BLOCKER_CELL = f"""
import sys

BLOCKED = {BLOCKED!r}
already = sorted({{m for m in sys.modules if m.split(".")[0] in BLOCKED}})
assert not already, f"imported before the notebook started: {{already}}"
# None in sys.modules is the import system's "not installed": `import x` raises
# ModuleNotFoundError and importlib.util.find_spec("x") returns None, as libraries that probe
# for optional packages (etils probes for tensorflow) expect.
for name in BLOCKED:
    sys.modules[name] = None
"""

# No address but the loopback: what the notebook fetches from the web fails as it does offline.
NETWORK_BLOCKER_CELL = """
import ipaddress
import socket

def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return host == "localhost"

def _guarded(connect):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            raise OSError(f"no network in this test: {address[0]}")
        return connect(self, address)
    return guarded

socket.socket.connect = _guarded(socket.socket.connect)
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)
"""

# What the notebook's cells import last: none of it may come from the train or tfds extras.
IMPORTED_CHECK_CELL = f"""
import sys
print("blocked modules imported:", sorted({{m for m, module in sys.modules.items()
                                            if module is not None
                                            and m.split(".")[0] in {BLOCKED!r}}}))
"""


def _extra_distributions() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return {re.split(r"[<>=\[;]", dep)[0] for name in ("train", "tfds") for dep in extras[name]}


def test_blocked_modules_are_those_of_the_train_and_tfds_extras():
    assert set(EXTRA_MODULES) == _extra_distributions()


def _run_offline(cwd, monkeypatch, **env) -> list:
    """Executes the notebook in `cwd`, core extra only, without network; returns the outputs.
    Of the notebook's parameters only those in `env` are set."""
    for name in ("SOFTLABEL_OOD_RESULTS", "SOFTLABEL_OOD_SUMMARY", "SOFTLABEL_OOD_JOB_ARGS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # stands for the installed package
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cwd.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[:0] = [nbformat.v4.new_code_cell(BLOCKER_CELL),
                    nbformat.v4.new_code_cell(NETWORK_BLOCKER_CELL)]
    nb.cells.append(nbformat.v4.new_code_cell(IMPORTED_CHECK_CELL))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    return outputs


def _text(outputs) -> str:
    return "\n".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/markdown", ""))
                     for out in outputs)


def _images(outputs) -> list:
    return [out for out in outputs if "image/png" in out.get("data", {})]


# The committed report's verdicts, as its README states them (8.16 ± 2.17 points lost from α = 0
# to 0.5, every seed losing; kd_incorrect from the OE teacher 12.94 ± 2.10 above ls).
SUMMARY_LINES = (
    "- **Claim 1** (label smoothing hurts softmax-based detection as α grows, accuracy kept): "
    "**not supported**: ce (α = 0) − ls (α = 0.5) = +8.16 ± 2.17 points (noise threshold 2.17, "
    "seeds +++)",
    "- **Claim 2** (a kd student inherits its teacher's OOD behaviour): **supported**",
    "kd_incorrect-from-oe − ls (α = 0.3) = +12.94 ± 2.10 points",
)


def _opens_with_the_summary(outputs, source: str) -> None:
    """The notebook's first output says where the committed report was read, then come its
    summary and its two figures."""
    assert outputs[0]["text"] == f"summary: {source}\n"
    summary = outputs[1]["data"]["text/markdown"]
    assert all(line in summary for line in SUMMARY_LINES)
    assert ["image/png" in out.get("data", {}) for out in outputs[2:4]] == [True, True]


@pytest.fixture
def served_repository():
    """The repository over HTTP on localhost: the committed report as Colab fetches it."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    runs = paper_runs(seeds=(0, 1), workdir=root)
    for r in runs:
        write_predictions(root / "runs" / r.run, seed=r.seed, method=r.method)
    report.write_report(report_rows(runs, PAPER_LIKE), root / "report", runs=runs)
    return root


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_notebook_reads_results_made_elsewhere_with_the_core_extra(workdir, tmp_path,
                                                                  monkeypatch, served_repository):
    # As in Colab: an empty directory, no clone, the report fetched from the web.
    summary_url = f"{served_repository}/docs/results/fashion_mnist"
    outputs = _run_offline(tmp_path / "content", monkeypatch, SOFTLABEL_OOD_RESULTS=str(workdir),
                           SOFTLABEL_OOD_SUMMARY=summary_url)
    _opens_with_the_summary(outputs, f"fetched from {summary_url}")
    text = _text(outputs)
    assert f"reading results from {workdir}" in text
    assert "20 runs in 10 grid entries" in text
    assert "Table 1. Label-smoothing sweep" in text
    assert "### Claim 1: supported" in text
    assert "blocked modules imported: []" in text
    # The summary's claims and α sweep; then α sweep, accuracy/ECE sweep, histograms, ROC curves.
    assert len(_images(outputs)) == 6
    assert list((tmp_path / "content").iterdir()) == []  # reading writes nothing


def test_notebook_runs_in_a_clone_offline_with_the_digits_job(tmp_path, monkeypatch):
    # `jupyter-execute notebooks/explore_results.ipynb` in a clone without network: the kernel
    # starts in the notebook's folder, the summary is the clone's committed report, and with
    # RESULTS unset the notebook runs the README's main job, whole: no environment variable is
    # set (about 1.5 minutes on 2 cores). A clone of the report's two files and an empty
    # notebooks/, so that the job writes under tmp_path.
    clone = tmp_path / "clone"
    committed = clone / "docs" / "results" / "fashion_mnist"
    committed.mkdir(parents=True)
    for name in ("metrics.csv", "runs.json"):
        shutil.copy(REPO / "docs" / "results" / "fashion_mnist" / name, committed / name)
    outputs = _run_offline(clone / "notebooks", monkeypatch)
    _opens_with_the_summary(outputs, f"docs/results/fashion_mnist of the clone at {clone}")
    text = _text(outputs)
    assert "$ python -m softlabel_ood.reproduce --config=configs/digits.py --workdir=digits" in text
    assert "kdi_oe_seed2 (kd_incorrect): trained" in text
    assert re.search(r"^\[36/36\] \S+ \(\S+\): trained", text, re.M)  # k counts runs ended
    assert "\r" not in text  # the job's progress arrives as plain lines
    assert "36 runs in 12 grid entries" in text
    assert "Table 2. Teachers and students" in text
    assert "blocked modules imported: []" in text
    assert (clone / "notebooks" / "digits" / "report" / "report.md").is_file()
    assert len(_images(outputs)) == 6
