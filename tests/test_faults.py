"""Faults of the disk and of stored files end in one line with exit code 2, naming the file,
and leave no partial output: a dataset file that does not read (before the first step), a disk
that fills while a checkpoint or the metrics are written, a checkpoint whose metadata is
garbage, a checkpoint whose optimizer state does not read; a latest checkpoint that does not
read back gives way to the one before it."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from softlabel_ood import predict, scoring, train
from softlabel_ood.training import checkpointing, run_model, runs_axis
from softlabel_ood.workdir import predictions as predictions_lib
from softlabel_ood.workdir import run_dir, saved_runs
from tests.report_helpers import write_predictions
from tests.train_helpers import refusal, run_module, snapshot, tiny_digits_config

TINY_RUN = textwrap.dedent("""
    from tests.train_helpers import tiny_digits_config

    def get_config(arg=None):
        return tiny_digits_config("ce", num_epochs=1)
""")


@pytest.fixture
def finished(finished_tiny_run):
    """A finished tiny ce run (conftest.py), shared: copied before any change."""
    return finished_tiny_run


@pytest.fixture
def small_disk(tmp_path):
    """mount(kib): a tmpfs of that size under tmp_path, unmounted after the test; the test is
    skipped where mounting is not permitted (it needs root, or CAP_SYS_ADMIN)."""
    mounted = []

    def mount(kib: int):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        try:
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs",
                                     str(point)], capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("a full disk is made by mounting a small tmpfs: no mount command here")
        if result.returncode:
            pytest.skip("a full disk is made by mounting a small tmpfs, which is not permitted "
                        f"here ({result.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


# Local OOD sets that cannot serve, each with the one line that names it: found by opening the
# path (the first three) or by loading its images (the last), before the first step either way.
_BAD_LOCAL_SETS = {
    "pickled_objects_npy": (
        lambda p: np.save(p / "images.npy", np.array([{"image": 1}, None], dtype=object)),
        "images.npy", "cannot read {path}: Array can't be memory-mapped: Python objects in "
                      "dtype."),
    "empty_folder": (lambda p: (p / "images").mkdir(), "images",
                     "folder {path} holds no image files (.png, .jpg, .jpeg, .bmp, .gif, .ppm, "
                     ".webp, .tif, .tiff)"),
    "garbage_png": (lambda p: (p / "image.png").write_bytes(b"not a png"), "image.png",
                    "{path} is neither a folder of images nor a .npy/.npz file"),
    "folder_with_a_garbage_png": (
        lambda p: ((p / "images").mkdir(), (p / "images" / "a.png").write_bytes(b"not a png")),
        "images", "cannot read {path}: cannot identify image file '{path}/a.png'"),
}


@pytest.mark.parametrize("case", list(_BAD_LOCAL_SETS))
def test_an_ood_set_that_does_not_read_ends_train_before_its_first_step(case, tmp_path):
    make, name, message = _BAD_LOCAL_SETS[case]
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    path, workdir = data / name, tmp_path / "run"
    result = run_module(
        "softlabel_ood.train", "--config=configs/digits.py", f"--workdir={workdir}",
        "--config.num_epochs=1", "--config.num_train_examples=64", "--config.batch_size=32",
        "--config.ood_datasets=('gaussian','local_images')",
        "--config.ood_groups.near=()", "--config.ood_groups.far=('gaussian',)",
        f"--config.dataset_paths.local_images={path}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        "error: local_images/test: " + message.format(path=path)], result.stderr[-3000:]
    assert not workdir.exists()  # no checkpoint, no config.json, no lock: nothing


@pytest.mark.parametrize("case", ["garbage_png", "folder_with_a_garbage_png"])
def test_an_ood_set_that_does_not_read_leaves_predict_s_run_as_it_was(case, finished, tmp_path,
                                                                      capsys):
    make, name, message = _BAD_LOCAL_SETS[case]
    make(tmp_path)
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    before = snapshot(run)
    config = saved_runs.read_config(run)
    config.ood_datasets = (*config.ood_datasets, "local_images")
    config.dataset_paths.local_images = str(tmp_path / name)
    line = refusal(capsys, lambda: predict.predict_from_checkpoint(config, run))
    assert line == "error: local_images/test: " + message.format(path=tmp_path / name)
    assert snapshot(run) == before


def _kib(directory) -> int:
    """The space `directory` takes on a tmpfs: its files rounded up to 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4 for p in directory.rglob("*") if p.is_file())


def test_a_disk_that_fills_during_training_ends_in_one_line(finished, small_disk, tmp_path):
    # Room for the run's small files and its first checkpoint, not for its second: the write of
    # step 8 fails in orbax's background threads.
    checkpoint = _kib(finished / "checkpoints" / "4")
    disk = small_disk(checkpoint + checkpoint // 2 + 48)
    workdir = disk / "run"
    config_file = tmp_path / "tiny_run.py"
    config_file.write_text(TINY_RUN)
    result = run_module("softlabel_ood.train", f"--config={config_file}", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if not re.match(
        r"^run(?: predictions)?: +\d+%\|", line)]  # the progress bars' lines aside
    assert errors == [f"error: {workdir}/checkpoints/8: checkpoint not written (No space left "
                      f"on device); its partial files are removed, and the run resumes from "
                      f"step 4 when started again"], result.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4"]
    assert not saved_runs.is_finished(workdir)
    assert not (workdir / "predictions").exists()


def _fill(disk) -> None:
    with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
        while True:  # until the disk is full
            filler.write(b"\0" * 4096)
            filler.flush()


def test_a_full_disk_at_the_start_names_the_file_and_leaves_the_lock_as_it_was(
        small_disk, tmp_path):
    disk = small_disk(64)
    fresh, older = disk / "fresh", disk / "older"
    older.mkdir()
    (older / ".lock").write_text("4242\n")  # an earlier version's lock file, with its pid
    _fill(disk)
    config_file = tmp_path / "tiny_run.py"
    config_file.write_text(TINY_RUN)
    for workdir in (fresh, older):
        result = run_module("softlabel_ood.train", f"--config={config_file}",
                            f"--workdir={workdir}")
        assert result.returncode == 2, result.stderr[-3000:]
        assert result.stderr.splitlines() == [
            f"error: {workdir}/config.json: No space left on device"], result.stderr[-3000:]
    assert not (fresh / ".lock").exists()
    assert (older / ".lock").read_text() == "4242\n"


def test_predict_refusals_leave_the_lock_file_as_it_was(finished, tmp_path, capsys):
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    (run / ".lock").write_text("4242\n")  # an earlier version's lock file, with its pid
    _garbage_metadata(run)
    before = snapshot(run)
    config = saved_runs.read_config(run)
    for _ in range(2):
        refusal(capsys, lambda: predict.predict_from_checkpoint(config, run))
    assert snapshot(run) == before


def test_a_disk_that_fills_while_metrics_are_written_keeps_the_old_ones(small_disk, tmp_path,
                                                                         capsys, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # score.main sets it for its process
    from softlabel_ood import score

    write_predictions(tmp_path / "run", seed=0, method="ce")
    disk = small_disk(64)
    out = disk / "metrics"
    scoring.write_metrics([scoring.MetricRow("old", "", "", "accuracy", 0.5)], out)
    before = snapshot(out)
    _fill(disk)
    assert score.main([str(tmp_path / "run"), f"--out={out}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: {out}: No space left on device"
    assert snapshot(out) == before
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "metrics"]  # no temporary


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints.


def _garbage_metadata(run):
    for path in (run / "checkpoints").glob("*/default/_METADATA"):
        path.write_bytes(b"\xff\xfe not json")


def test_garbage_checkpoint_metadata_is_one_line_for_predict_and_a_teacher(finished, tmp_path,
                                                                          capsys):
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    _garbage_metadata(run)
    before = snapshot(run)
    config = saved_runs.read_config(run)
    assert refusal(capsys, lambda: predict.predict_from_checkpoint(config, run)).startswith(
        f"error: {run}/checkpoints/8: its model does not read back (UnicodeDecodeError: ")
    student = tmp_path / "kd"
    kd = tiny_digits_config("kd", num_epochs=1, **{"kd.teacher_workdir": str(run)})
    assert refusal(capsys, lambda: train.train_and_evaluate(kd, str(student))).startswith(
        f"error: config.kd.teacher_workdir: {run}/checkpoints/8: its metadata does not read "
        f"back (UnicodeDecodeError: ")
    assert snapshot(run) == before
    assert not student.exists()


def _restores(checkpoints, like, *, model_only: bool) -> str:
    """"" when the latest checkpoint in `checkpoints` restores, else its one-line error."""
    ckpts = checkpointing.Checkpoints(checkpoints, read_only=model_only)
    try:
        if model_only:
            ckpts.restore_variables(like.variables)
        else:
            ckpts.restore(like)
    except checkpointing.DamagedCheckpointError as e:  # any other error fails the test
        return str(e)
    finally:
        ckpts.close()
    return ""


def _damage_optimizer_state(checkpoints) -> None:
    """Overwrites the start of the stored bytes of the largest optimizer-state array of the
    latest checkpoint, as a torn write would: the model's arrays still read back, the whole
    state does not. (Which data file holds which array is orbax's choice: the array's bytes
    are read through tensorstore's OCDBT store and found in its files.)"""
    import tensorstore

    step = max(int(p.name) for p in checkpoints.iterdir())
    directory = checkpoints / str(step) / "default"
    store = tensorstore.KvStore.open({"driver": "ocdbt", "base": f"file://{directory}/"}).result()
    arrays = [key for key in store.list().result()
              if key.startswith(b"opt_state.") and not key.endswith(b".zarray")]
    stored = max((store.read(key).result().value for key in arrays), key=len)
    for path in directory.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        start = data.find(stored)
        if start >= 0:
            path.write_bytes(data[:start] + bytes(16) + data[start + 16:])
            return
    pytest.fail("the optimizer state's bytes are in no file of the checkpoint")


def test_a_damaged_optimizer_state_is_told_from_another_layout(finished, tmp_path):
    # The model reads back, the whole state does not, and the stored layout is this version's:
    # a damaged file (before, a bare Exception from tensorstore), not another optimizer layout
    # (test_checkpointing), which keeps its own message.
    config = saved_runs.read_config(finished)
    like = run_model.create_state(config, run_model.create_model(config), runs_axis.data_mesh())
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(finished / "checkpoints", checkpoints)
    shutil.rmtree(checkpoints / "4")
    _damage_optimizer_state(checkpoints)
    assert _restores(checkpoints, like, model_only=True) == ""
    assert _restores(checkpoints, like, model_only=False).startswith(
        f"{checkpoints}/8: its optimizer state does not read back (")


def test_a_rerun_of_a_run_whose_optimizer_state_is_damaged_is_one_line(finished, tmp_path,
                                                                        capsys):
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "checkpoints" / "4")
    config = saved_runs.read_config(run)
    _damage_optimizer_state(run / "checkpoints")
    before = snapshot(run)
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(run)))
    assert line.startswith(f"error: {run}/checkpoints/8: its optimizer state does not read "
                           f"back ("), line
    assert line.endswith("the run cannot resume from it, but predict can still write its "
                         "predictions. Move the checkpoints away to train again from step 0")
    assert snapshot(run) == before


# What orbax leaves of a step when a copy or a cleanup stops half-way: the latest checkpoint
# is listed, yet its arrays are gone.
_LOST_ITEMS = {
    "item_folder_removed": lambda step_dir: shutil.rmtree(step_dir / "default"),
    "step_folder_emptied": lambda step_dir: [
        shutil.rmtree(p) if p.is_dir() else p.unlink() for p in step_dir.iterdir()],
}


def _assert_same_predictions(a, b) -> None:
    from softlabel_ood.workdir import predictions

    pa, pb = predictions.read(a / "predictions"), predictions.read(b / "predictions")
    assert list(pa.splits) == list(pb.splits)
    for name in pa.splits:
        for field in ("logits", "features", "odin_log_ratio"):
            np.testing.assert_array_equal(getattr(pa.splits[name], field),
                                          getattr(pb.splits[name], field), err_msg=name)


@pytest.mark.parametrize("damage", list(_LOST_ITEMS))
def test_a_latest_checkpoint_without_its_arrays_is_set_aside_and_the_run_resumes_bitwise(
        damage, finished, tmp_path, caplog):
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    (run / run_dir.DONE).unlink()
    shutil.rmtree(run / "predictions")
    _LOST_ITEMS[damage](run / "checkpoints" / "8")
    train.train_and_evaluate(saved_runs.read_config(run), str(run))
    assert any("checkpoint 8 does not read back (its folder default/ is missing); set aside as "
               "damaged-<step>, resuming from the checkpoint of step 4" in r.getMessage()
               for r in caplog.records)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4", "8", "damaged-8"]
    assert saved_runs.is_finished(run)
    _assert_same_predictions(run, finished)  # as the uninterrupted run's


def test_predict_falls_back_to_the_latest_checkpoint_that_reads_and_changes_none(
        finished, tmp_path, capsys):
    run = tmp_path / "ce"
    shutil.copytree(finished, run)
    _LOST_ITEMS["item_folder_removed"](run / "checkpoints" / "8")
    checkpoints_before = snapshot(run / "checkpoints")
    config = saved_runs.read_config(run)
    predictions_before = snapshot(run / "predictions")
    # Step 4 is not the run's last: the unfinished-run rule applies, and nothing is written.
    line = refusal(capsys, lambda: predict.predict_from_checkpoint(config, run))
    assert line == (f"error: {run}: unfinished run, its latest checkpoint that reads back is "
                    f"step 4 of 8; the train command that started it resumes it to the end, or "
                    f"--allow_unfinished writes predictions from step 4, marked unfinished")
    assert snapshot(run / "predictions") == predictions_before
    assert predict.predict_from_checkpoint(config, run, allow_unfinished=True) == 4
    lines = [line for line in capsys.readouterr().err.splitlines() if "predictions from" in line]
    assert lines == [f"{run}/checkpoints: predictions from step 4 (the checkpoint of step 8 "
                     f"does not read back: its folder default/ is missing)"]
    assert snapshot(run / "checkpoints") == checkpoints_before  # nothing renamed: read-only
    assert predictions_lib.read_manifest(run / "predictions")["checkpoint"] == {
        "step": 4, "total_steps": 8}
    # The predictions are step 4's: those of the same run whose latest checkpoint is step 4.
    reference = tmp_path / "reference"
    shutil.copytree(finished, reference)
    shutil.rmtree(reference / "checkpoints" / "8")
    assert predict.predict_from_checkpoint(config, reference, allow_unfinished=True) == 4
    assert "predictions from" not in capsys.readouterr().err
    _assert_same_predictions(run, reference)
