"""An unfinished run is never scored as if it were finished: `predict` refuses it unless told,
the manifest records the step, and `score` marks it (the commands, end to end)."""

from __future__ import annotations

import json
import shutil

import pytest

from softlabel_ood.workdir import run_dir
from tests.train_helpers import run_module, snapshot

# 256 training examples in batches of 32 are 8 steps an epoch: 2 epochs are 16 steps, with a
# checkpoint every 4 of which orbax keeps the last 3 (8, 12, 16).
TOTAL_STEPS = 16
TINY = ("--config=configs/digits.py", "--config.num_epochs=2", "--config.num_train_examples=256",
        "--config.batch_size=32", "--config.num_ood_examples=64",
        "--config.ood_datasets=('flower_patches','gaussian')",
        "--config.ood_groups.far=('gaussian',)",
        "--config.checkpoint_every_steps=4", "--config.checkpoint_min_seconds=0")


def _manifest(run) -> dict:
    return json.loads((run / "predictions" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run, and a copy cut back to its checkpoint of step 12 as a run killed after
    that checkpoint leaves it: no later checkpoint, no DONE, the finished run's predictions."""
    root = tmp_path_factory.mktemp("unfinished")
    finished = root / "run"
    result = run_module("softlabel_ood.train", *TINY, f"--workdir={finished}", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    cut = root / "cut"
    shutil.copytree(finished, cut)
    shutil.rmtree(cut / "checkpoints" / str(TOTAL_STEPS))
    (cut / run_dir.DONE).unlink()
    return finished, cut


def test_train_records_the_last_step_in_the_manifest(runs):
    finished, _ = runs
    assert _manifest(finished)["checkpoint"] == {"step": TOTAL_STEPS, "total_steps": TOTAL_STEPS}


def test_predict_refuses_an_unfinished_run_in_one_line_and_writes_nothing(runs):
    _, cut = runs
    before = snapshot(cut / "predictions", cut / "checkpoints", cut / run_dir.DONE)
    result = run_module("softlabel_ood.predict", f"--workdir={cut}", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {cut}: unfinished run, its latest checkpoint is step 12 of 16; the train "
        f"command that started it resumes it to the end, or --allow_unfinished writes "
        f"predictions from step 12, marked unfinished")
    assert "predictions:" not in result.stderr  # refused before its progress line
    assert snapshot(cut / "predictions", cut / "checkpoints", cut / run_dir.DONE) \
        == before


@pytest.fixture(scope="module")
def allowed(runs):
    _, cut = runs
    result = run_module("softlabel_ood.predict", f"--workdir={cut}", "--allow_unfinished",
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_allow_unfinished_says_so_and_records_the_step(runs, allowed):
    finished, cut = runs
    assert "cut predictions of an unfinished run (step 12 of 16)" in allowed.stderr
    assert _manifest(cut)["checkpoint"] == {"step": 12, "total_steps": TOTAL_STEPS}
    # The model of step 12, not the finished one: the logits differ.
    import numpy as np
    ours = np.load(cut / "predictions" / "digits_test.npz")["logits"]
    theirs = np.load(finished / "predictions" / "digits_test.npz")["logits"]
    assert ours.shape == theirs.shape
    assert not np.allclose(ours, theirs)


def test_predict_of_a_finished_run_is_not_marked(runs, tmp_path):
    finished, _ = runs
    run = tmp_path / "again"
    shutil.copytree(finished, run)
    result = run_module("softlabel_ood.predict", f"--workdir={run}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "again predictions:" in result.stderr
    assert "unfinished" not in result.stderr
    assert _manifest(run)["checkpoint"] == {"step": TOTAL_STEPS, "total_steps": TOTAL_STEPS}


def test_predict_help_names_the_flag(runs):
    result = run_module("softlabel_ood.predict", f"--workdir={runs[0]}", "--help", timeout=120)
    assert result.returncode == 0
    assert "--allow_unfinished: Writes the predictions of a run whose latest checkpoint" \
        in result.stdout


def _run_sections(markdown: str) -> dict[str, str]:
    parts = markdown.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part for part in parts}


def test_score_marks_unfinished_and_unknown_runs_and_keeps_metrics_csv(runs, allowed, tmp_path):
    finished, cut = runs
    # Predictions of a version that did not record the step: finished with DONE, else unknown.
    old_done, old_unknown = tmp_path / "old_done", tmp_path / "old_unknown"
    for old in (old_done, old_unknown):
        shutil.copytree(finished, old)
        manifest = _manifest(old)
        del manifest["checkpoint"]
        (old / "predictions" / "manifest.json").write_text(json.dumps(manifest))
    (old_unknown / run_dir.DONE).unlink()

    both = run_module("softlabel_ood.score", str(finished), str(cut), str(old_done),
                      str(old_unknown), f"--out={tmp_path / 'both'}", timeout=300)
    assert both.returncode == 0, both.stderr[-3000:]
    assert "cut: unfinished run: predictions from step 12 of 16\n" in both.stderr
    assert ("old_unknown: trained steps unknown: the predictions do not record their "
            "checkpoint and the run directory has no DONE file\n") in both.stderr
    assert not any(line.startswith(("run: unfinished", "run: trained", "old_done: unfinished",
                                    "old_done: trained")) for line in both.stderr.splitlines())
    marked = (tmp_path / "both" / "metrics.md").read_text()
    sections = _run_sections(marked)
    assert sections["cut"].startswith(
        "cut\n\n**Not the finished model's metrics**: unfinished run: predictions from step 12 "
        "of 16.\n\naccuracy ")
    assert "**Not the finished model's metrics**: trained steps unknown" in sections["old_unknown"]
    assert "Not the finished" not in sections["run"] + sections["old_done"]

    # The same predictions, every one marked finished (DONE, no record), under the same names:
    # metrics.csv is the same bytes, and metrics.md differs by the two lines alone.
    unmarked = tmp_path / "unmarked"
    for run in (finished, cut, old_done, old_unknown):
        shutil.copytree(run, unmarked / run.name)
        manifest = _manifest(unmarked / run.name)
        manifest.pop("checkpoint", None)
        (unmarked / run.name / "predictions" / "manifest.json").write_text(json.dumps(manifest))
        (unmarked / run.name / run_dir.DONE).write_text("finished\n")
    plain = run_module("softlabel_ood.score", *(str(unmarked / r.name) for r in (
        finished, cut, old_done, old_unknown)), f"--out={tmp_path / 'plain'}", timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "unfinished run:" not in plain.stderr
    assert "steps unknown" not in plain.stderr
    assert (tmp_path / "plain" / "metrics.csv").read_bytes() == \
        (tmp_path / "both" / "metrics.csv").read_bytes()
    assert (tmp_path / "both" / "metrics.csv").read_text().startswith(
        "run,score,ood,metric,value\n")
    plain_md = (tmp_path / "plain" / "metrics.md").read_text()
    assert [line for line in marked.splitlines() if line not in plain_md.splitlines()] == [
        "**Not the finished model's metrics**: unfinished run: predictions from step 12 of 16.",
        "**Not the finished model's metrics**: trained steps unknown: the predictions do not "
        "record their checkpoint and the run directory has no DONE file."]
