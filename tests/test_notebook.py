"""notebooks/explore_results.ipynb runs top to bottom against a small workdir made here."""

from __future__ import annotations

import nbclient
import nbformat
import pytest

from softlabel_ood import report
from tests.report_helpers import metric_rows, paper_runs, write_predictions
from tests.test_claims import PAPER_LIKE
from tests.train_helpers import REPO

NOTEBOOK = REPO / "notebooks" / "explore_results.ipynb"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    runs = paper_runs(seeds=(0, 1), workdir=root)
    for r in runs:
        write_predictions(root / "runs" / r.run, seed=r.seed, method=r.method)
    report.write_report(metric_rows(runs, PAPER_LIKE), root / "report", runs=runs)
    return root


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_notebook_runs_top_to_bottom(workdir, monkeypatch):
    # The parameters cell reads the results path from this variable; the kernel inherits it.
    monkeypatch.setenv("SOFTLABEL_OOD_RESULTS", str(workdir))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "\n".join(str(out.get("text", "")) + str(out.get("data", {}).get("text/markdown", ""))
                     for out in outputs)
    assert "20 runs in 10 grid entries" in text
    assert "Table 1. Label-smoothing sweep" in text
    assert "### Claim 1: supported" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 4  # α sweep, accuracy/ECE sweep, histograms, ROC curves
