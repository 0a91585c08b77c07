"""Bad inputs to the four commands, each refused with exit code 2 and one stderr line before any
work, with every directory it could touch unchanged: the config's bounds are in
test_config_validation; here the workdir, the run OE fine-tuning starts from, predict's
overrides and stored files, score's groups and manifests, reproduce's directories and words
that are not flags. Run in process through the functions the commands call."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from softlabel_ood import command_line, methods, predict, reproduce, score, train
from softlabel_ood.analysis import rebuild
from softlabel_ood.data import datasets, prepare_tfds
from softlabel_ood.workdir import run_dir, saved_runs
from tests.train_helpers import REPO, refusal, snapshot, tiny_digits_config


@pytest.fixture
def finished(finished_tiny_run):
    """A finished tiny ce run (conftest.py), shared: copied before any change."""
    return finished_tiny_run


def _copy(finished, tmp_path, name="run"):
    copy = tmp_path / name
    shutil.copytree(finished, copy)
    return copy


# ---------------------------------------------------------------------------------------------
# The workdir and words that are not flags.


def test_an_empty_workdir_is_refused_by_train_predict_and_reproduce(tmp_path, capsys,
                                                                     monkeypatch):
    # An empty --workdir is the current directory: train would fill it with a run's files.
    monkeypatch.chdir(tmp_path)
    expected = "error: --workdir: empty; give the run's directory (created if missing)"
    config = tiny_digits_config("ce")
    assert refusal(capsys, lambda: train.train_and_evaluate(config, "")) == expected
    assert refusal(capsys, lambda: predict._stored_config_from_argv(
        ["predict", "--workdir="])) == expected
    assert refusal(capsys, lambda: predict.predict_from_checkpoint(config, "")) == expected
    assert refusal(capsys, lambda: reproduce.planned_runs(config, "")) == expected
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [train, predict, reproduce], ids=lambda m: m.__name__)
def test_a_word_that_is_not_a_flag_is_refused(command, capsys):
    # absl hands the words after the flags to main; each main refuses them first.
    assert refusal(capsys, lambda: command.main([command.__name__, "extra"])) == \
        "error: unexpected argument 'extra': every input is a --flag (--help lists them)"


# ---------------------------------------------------------------------------------------------
# The run that OE fine-tuning starts from: checked as a KD teacher is, before any data.


def _garbage_metadata(run):
    for path in (run / "checkpoints").glob("*/default/_METADATA"):
        path.write_bytes(b"\xff\xfe not json")


def _edit_config(**fields):
    def edit(run):
        config = json.loads((run / run_dir.CONFIG).read_text())
        config.update(fields)
        (run / run_dir.CONFIG).write_text(json.dumps(config))
    return edit


START_CASES = {  # name -> (how the finished run is spoiled, the refusal after "error: ")
    "missing": (lambda run: shutil.rmtree(run), "config.oe.finetune_from: {run} does not exist"),
    "a_file": (lambda run: (shutil.rmtree(run), run.write_text("x")),
               "config.oe.finetune_from: {run} is a file, not a run directory"),
    "no_config": (lambda run: (run / "config.json").unlink(),
                  "config.oe.finetune_from: {run}/config.json: missing; {run} is not a run "
                  "directory"),
    "config_not_json": (lambda run: (run / "config.json").write_text("{"),
                        "config.oe.finetune_from: {run}/config.json: not valid JSON"),
    "config_a_list": (lambda run: (run / "config.json").write_text("[]"),
                      "config.oe.finetune_from: {run}/config.json: not a run's config"),
    "unfinished": (lambda run: (run / "DONE").unlink(),
                   "config.oe.finetune_from: {run} has not finished training (no DONE file)"),
    "other_dataset": (_edit_config(dataset="fashion_mnist"),
                      "config.oe.finetune_from: {run} was trained on 'fashion_mnist', this run "
                      "uses 'digits'"),
    "other_model": (_edit_config(model="wrn10_1"),
                    "config.oe.finetune_from: {run} is a wrn10_1, this run a small_cnn"),
    "no_checkpoint": (lambda run: shutil.rmtree(run / "checkpoints"),
                      "config.oe.finetune_from: {run}/checkpoints: no checkpoint to restore"),
    "garbage_metadata": (_garbage_metadata,
                         "config.oe.finetune_from: {run}/checkpoints/8: its metadata does not "
                         "read back (UnicodeDecodeError: "),
}


@pytest.mark.parametrize("case", list(START_CASES))
def test_a_fine_tuning_start_that_cannot_serve_is_refused_before_any_data(
        case, finished, tmp_path, capsys, monkeypatch):
    spoil, message = START_CASES[case]
    start = _copy(finished, tmp_path, "start")
    spoil(start)
    workdir = tmp_path / "oe_ft"
    before = snapshot(start, workdir)
    # Refused before any dataset is read: loading one would fail this test.
    monkeypatch.setattr(datasets, "load", lambda *a, **k: pytest.fail("data was loaded"))
    config = tiny_digits_config("oe", num_epochs=1, **{"oe.finetune_from": str(start)})
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir)))
    assert line.startswith("error: " + message.format(run=start)), line
    assert snapshot(start, workdir) == before  # no .lock, no checkpoints/: no workdir at all


# ---------------------------------------------------------------------------------------------
# predict: its overrides, its command line and the files it reads.


def _predict(workdir, replace_ood=False, **overrides):
    def run():
        stored = saved_runs.read_config(workdir)
        requested = saved_runs.read_config(workdir)
        for name, value in overrides.items():
            *parents, leaf = name.split(".")
            target = requested
            for parent in parents:
                target = target[parent]
            target[leaf] = value
        config = predict.config_with_overrides(stored, requested, workdir,
                                               replace_ood=replace_ood)
        predict.predict_from_checkpoint(config, workdir)
    return run


def _edit_manifest(run, **fields):
    path = run / "predictions" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["run"].update(fields)
    path.write_text(json.dumps(manifest))
    return path


PREDICT_CASES = {  # name -> (overrides, manifest edits, the refusal after "error: ")
    "eval_batch_size": ({"eval_batch_size": 10**9}, {},
                        "config.eval_batch_size: 1000000000 is not allowed; expected at most "
                        "16777216, so that an eval batch of 8x8x1 images takes at most 1 GiB"),
    "num_ood_examples": ({"num_ood_examples": 10**12}, {},
                         "config.num_ood_examples: 1000000000000 is not allowed; expected an "
                         "integer in [1, 2147483647]"),
    "group_of_unknown_set": ({"ood_groups.near": ("svhm",)}, {},
                             "config.ood_groups.near: unknown dataset 'svhm'"),
    "manifest_method": ({}, {"method": "no_such_method"},
                        "{manifest}: field 'run.method' is 'no_such_method', expected one of "
                        f"{', '.join(methods.names())} (or empty)"),
    "manifest_dataset": ({}, {"dataset": "mnist"},
                         "{manifest}: field 'run.dataset' is 'mnist', but {run}/config.json says "
                         "'digits'; these predictions are not this run's (predict rewrites them)"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_refuses_bad_overrides_and_edited_predictions(case, finished, tmp_path, capsys):
    overrides, manifest_edits, message = PREDICT_CASES[case]
    run = _copy(finished, tmp_path)
    manifest = _edit_manifest(run, **manifest_edits) if manifest_edits else None
    before = snapshot(run)
    line = refusal(capsys, _predict(run, **overrides))
    assert line.startswith("error: " + message.format(manifest=manifest, run=run)), line
    assert snapshot(run) == before
    if manifest_edits:  # --replace_ood does not read the old directory, and replaces it
        _predict(run, replace_ood=True)()
        assert json.loads((run / "predictions" / "manifest.json").read_text())["run"] == \
            json.loads((finished / "predictions" / "manifest.json").read_text())["run"]


def test_predict_refuses_a_misspelt_field_as_train_does(finished, capsys):
    # predict's config is the run's stored one, whose overrides absl reads when the flag is
    # defined: a misspelt one used to end in an AttributeError traceback.
    stored = saved_runs.read_config(finished)
    argv = ["predict", f"--workdir={finished}", "--config.ood_datasetz=('blobs',)"]
    with pytest.raises(SystemExit) as exit_info:
        command_line.define_config_dict(stored, argv, flags.FlagValues())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --config.ood_datasetz: not a config field; did " \
        "you mean ood_datasets? (--help lists the fields)\n"


# ---------------------------------------------------------------------------------------------
# score: groups and manifests, refused before anything is written.


def _score(capsys, *args) -> str:
    """score.main's one error line, and nothing else: a refusal found while reading the
    first run's arrays comes before the progress bar's first line."""
    assert score.main([str(a) for a in args]) == 2
    out, err = capsys.readouterr()
    assert (out, err.count("\n")) == ("", 1), out + err
    assert err.startswith("error: "), err
    return err.strip()


def _config_groups(groups_json: str):
    def edit(run):
        path = run / "config.json"
        text = path.read_text()
        config = json.loads(text)
        config.pop("ood_groups")
        # Raw text: a JSON object may name a key twice, which json.loads would hide.
        path.write_text(json.dumps(config)[:-1] + f', "ood_groups": {groups_json}}}')
    return edit


def _manifest(**fields):
    return lambda run: _edit_manifest(run, **fields)


def _manifest_odin(pairs):
    def edit(run):
        path = run / "predictions" / "manifest.json"
        manifest = json.loads(path.read_text())
        if pairs is None:
            manifest.pop("odin")
        else:
            manifest["odin"]["pairs"] = manifest["odin"]["pairs"][:pairs]
        path.write_text(json.dumps(manifest))
    return edit


OOD_SETS = "(OOD sets: flower_patches, gaussian)"
CONFIG_GROUPS = "{run}/config.json (ood_groups; --groups replaces them)"
MANIFEST = "{run}/predictions/manifest.json"
SCORE_CASES = {  # name -> (--groups or None, how the run is edited, the refusal after "error: ")
    "groups_unknown_set": ("near=svhn", None,
                           f"--groups: group 'near' names 'svhn', which the predictions of run "
                           f"ce do not hold {OOD_SETS}"),
    "groups_id_split": ("near=digits_test", None,
                        "--groups: group 'near' names 'digits_test', the id_test split of run "
                        "ce; a group holds OOD sets"),
    "groups_named_twice": ("near=gaussian;near=flower_patches", None,
                           "--groups: group 'near' is named twice"),
    "groups_set_twice": ("near=gaussian,flower_patches,gaussian", None,
                         "--groups: group 'near' names 'gaussian' twice"),
    "groups_empty": (";;", None, "--groups: ';;' names no group; expected <group>=<OOD set>"),
    "config_groups_unknown_set": (None, _config_groups('{"far": ["gaussian", "uniform"]}'),
                                  f"{CONFIG_GROUPS}: group 'far' names 'uniform', which the "
                                  f"predictions of run ce do not hold {OOD_SETS}"),
    "config_groups_id_split": (None, _config_groups('{"near": ["digits_train"]}'),
                               f"{CONFIG_GROUPS}: group 'near' names 'digits_train', the id_train "
                               f"split of run ce; a group holds OOD sets"),
    "config_groups_named_twice": (None, _config_groups('{"near": ["gaussian"], "near": []}'),
                                  "{run}/config.json: the key 'near' appears twice"),
    "config_groups_set_twice": (None, _config_groups('{"near": ["gaussian", "gaussian"]}'),
                                f"{CONFIG_GROUPS}: group 'near' names 'gaussian' twice"),
    "manifest_method": (None, _manifest(method="no_such_method"),
                        f"{MANIFEST}: field 'run.method' is 'no_such_method', expected one of "
                        f"{', '.join(methods.names())} (or empty)"),
    "manifest_seed": (None, _manifest(seed=-1),
                      f"{MANIFEST}: field 'run.seed' is -1, expected an integer >= 0"),
    "manifest_unread_field": (None, _manifest(teacher="/runs/ls"),
                              f"{MANIFEST}: field 'run.teacher' is '/runs/ls', expected '': "
                              "method ce does not read kd.teacher_workdir"),
    "manifest_alpha_of_ce": (None, _manifest(alpha=0.3),
                             f"{MANIFEST}: field 'run.alpha' is 0.3, expected 0.0: method ce "
                             "does not read label_smoothing"),
    "manifest_dataset": (None, _manifest(dataset="cifar10"),
                         f"{MANIFEST}: field 'run.dataset' is 'cifar10', but {{run}}/config.json "
                         "says 'digits'; these predictions are not this run's"),
    "manifest_seed_edited": (None, _manifest(seed=3),
                             f"{MANIFEST}: field 'run.seed' is 3, but {{run}}/config.json says 0"),
    "odin_arrays_without_pairs": (None, _manifest_odin(None),
                                  "{run}/predictions/digits_test.npz: field 'odin_log_ratio' is "
                                  "present, but the manifest lists no ODIN pairs"),
    "odin_pairs_fewer_than_columns": (None, _manifest_odin(6),
                                      "{run}/predictions/digits_test.npz: field 'odin_log_ratio' "
                                      "has shape (450, 7), expected (450, 6): one column per ODIN "
                                      "pair"),
}


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_score_refuses_bad_groups_and_edited_manifests(case, finished, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # score.main sets it for its process
    groups, edit, message = SCORE_CASES[case]
    run = tmp_path / "ce"
    run.mkdir()
    shutil.copytree(finished / "predictions", run / "predictions")
    shutil.copy(finished / "config.json", run / "config.json")
    if edit:
        edit(run)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text("old\n")
    before = snapshot(run, out)
    line = _score(capsys, run, f"--out={out}", *([f"--groups={groups}"] if groups else []))
    assert line.startswith("error: " + message.format(run=run)), line
    assert snapshot(run, out) == before


# ---------------------------------------------------------------------------------------------
# reproduce and the datasets.


def test_reproduce_refuses_a_report_directory_with_other_files_before_training(tmp_path,
                                                                             capsys):
    # The report is switched in as a whole: a file of the user's there would go with the old.
    config = tiny_digits_config("ce")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert refusal(capsys, lambda: reproduce.planned_runs(config, str(tmp_path))) == \
        f"error: {tmp_path / 'report'} holds 'notes.txt', which the report does not write (it " \
        f"replaces the directory as a whole); move it elsewhere"
    assert snapshot(tmp_path) == before


def test_an_unprepared_tfds_set_is_one_line_without_the_tfds_warning(tmp_path, caplog):
    # A version folder without files (an interrupted `tfds build`) used to raise a KeyError
    # after absl's "Variant folder ... has no dataset_info.json" warning.
    (tmp_path / "svhn_cropped" / "3.1.0").mkdir(parents=True)
    with caplog.at_level(logging.WARNING), pytest.raises(
            datasets.DatasetError, match=r"^svhn/test: tfds dataset svhn_cropped:3\.1\.0 split "
                                         r"'test' is not available in .*; prepare it once with "
                                         r"`python -m softlabel_ood\.data\.prepare_tfds "
                                         r"svhn_cropped:3\.1\.0 --data_dir="):
        datasets.check_available("svhn", "test", data_dir=str(tmp_path))
    assert not [r for r in caplog.records if "Variant folder" in r.getMessage()]


def test_a_missing_tfds_set_ends_train_in_one_line_without_tensorflows_start_up_lines(tmp_path):
    # TensorFlow prints its C++ start-up notices (oneDNN, CPU features) when first imported,
    # whatever TF_CPP_MIN_LOG_LEVEL says about the oneDNN one; the user's environment sets none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run(
        [sys.executable, "-m", "softlabel_ood.train", "--config=configs/cifar10.py:ce",
         f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'tfds'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: cifar10/train: tfds dataset cifar10:3.0.2 split 'train' is not available in "
        f"{tmp_path / 'tfds'} (Dataset cifar10: could not find data in {tmp_path / 'tfds'}); "
        f"prepare it once with `python -m softlabel_ood.data.prepare_tfds cifar10:3.0.2 "
        f"--data_dir={tmp_path / 'tfds'}`"]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# The multi-process flags, the run's stored config and the groups predict is given.


@pytest.mark.parametrize(("flags_given", "message"), [
    (("--multihost", "--num_processes=2", "--process_id=5"),
     "--process_id: 5 is not allowed; expected an integer in [0, 1] (--num_processes=2)"),
    (("--multihost", "--num_processes=0"),
     "--num_processes: 0 is not allowed; expected an integer >= 1"),
    (("--num_processes=0",), "--num_processes: 0 is not allowed; expected an integer >= 1"),
    (("--process_id=1",), "--process_id: takes effect only with --multihost or "
                          "--coordinator_address; give one, or leave it out for one process"),
    (("--multihost",), "--multihost: coordinator_address should be defined. (no cluster here "
                       "tells JAX; give --coordinator_address, --num_processes and --process_id)"),
], ids=["process_id_past_the_count", "no_processes", "count_without_multihost",
        "id_without_multihost", "multihost_without_a_cluster"])
def test_multi_process_flags_that_no_processes_can_use_are_refused(flags_given, message,
                                                                    tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU_"))}
    result = subprocess.run(
        [sys.executable, "-m", "softlabel_ood.train", "--config=configs/digits.py",
         f"--workdir={tmp_path / 'run'}", *flags_given],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"error: {message}\n")
    assert not (tmp_path / "run").exists()


def test_predict_refuses_a_stored_config_field_edited_to_another_type(finished, tmp_path,
                                                                       capsys):
    # It used to end in int()'s ValueError traceback after the model had evaluated every split.
    run = _copy(finished, tmp_path)
    _edit_config(num_epochs="abc")(run)
    before = snapshot(run)
    assert refusal(capsys, _predict(run)) == \
        f"error: {run}/config.json: field 'num_epochs' is 'abc', expected an integer in " \
        f"[1, 2147483647]"
    assert snapshot(run) == before


def test_predict_refuses_a_group_of_sets_its_predictions_do_not_hold(finished, tmp_path,
                                                                     capsys):
    # predict neither stores nor reads the groups: one naming 'svhn' was accepted and ignored.
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    assert refusal(capsys, _predict(run, **{"ood_groups.near": ("svhn",)})) == \
        "error: config.ood_groups.near: names 'svhn', which config.ood_datasets " \
        "('flower_patches', 'gaussian') does not hold; add it there, or give the group the " \
        "sets it averages (config.ood_groups.near=() removes it)"
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------
# A user's file where a command switches in a directory: the exchange would delete it.


def test_rebuild_refuses_an_out_that_is_a_file_or_a_foreign_directory(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    source = REPO / "docs" / "results" / "digits"
    assert refusal(capsys, lambda: rebuild.main([str(source), f"--out={notes}"])) == \
        f"error: --out: {notes} is a file, not a report directory, which is written there as " \
        f"a whole; move the file elsewhere"
    assert notes.read_text() == "mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert refusal(capsys, lambda: rebuild.main([str(source), f"--out={tmp_path / 'mine'}"])) \
        == f"error: --out: {tmp_path / 'mine'} holds 'notes.txt', which the report does not " \
           f"write (it replaces the directory as a whole); move it elsewhere"
    assert snapshot(tmp_path) == before


def test_reproduce_refuses_a_report_that_is_a_file_before_training(tmp_path, capsys):
    (tmp_path / "report").write_text("mine")
    before = snapshot(tmp_path)
    assert refusal(capsys, lambda: reproduce.planned_runs(tiny_digits_config("ce"),
                                                          str(tmp_path))) == \
        f"error: {tmp_path / 'report'} is a file, not a report directory, which is written " \
        f"there as a whole; move the file elsewhere"
    assert snapshot(tmp_path) == before


def _a_file(predictions_dir):
    shutil.rmtree(predictions_dir, ignore_errors=True)
    predictions_dir.write_text("mine")


def _a_foreign_directory(predictions_dir):
    shutil.rmtree(predictions_dir, ignore_errors=True)
    predictions_dir.mkdir()
    (predictions_dir / "notes.txt").write_text("mine")


PREDICTIONS_PATH_CASES = {  # name -> (how <run>/predictions is made, the refusal after "error: ")
    "a_file": (_a_file, "{p} is a file, not a predictions directory, which is written there "
                        "as a whole; move the file elsewhere"),
    "a_foreign_directory": (_a_foreign_directory,
                            "{p}: not a predictions directory (no manifest.json), which the "
                            "predictions replace as a whole; move it elsewhere"),
}


@pytest.mark.parametrize("case", list(PREDICTIONS_PATH_CASES))
def test_train_refuses_a_predictions_path_it_would_replace_before_any_data(
        case, tmp_path, capsys, monkeypatch):
    make, message = PREDICTIONS_PATH_CASES[case]
    workdir = tmp_path / "run"
    workdir.mkdir()
    make(workdir / "predictions")
    before = snapshot(workdir)
    monkeypatch.setattr(datasets, "load", lambda *a, **k: pytest.fail("data was loaded"))
    line = refusal(capsys, lambda: train.train_and_evaluate(tiny_digits_config("ce"),
                                                            str(workdir)))
    assert line == "error: " + message.format(p=workdir / "predictions")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("case", list(PREDICTIONS_PATH_CASES))
def test_predict_refuses_a_predictions_path_it_would_replace(case, finished, tmp_path, capsys):
    make, message = PREDICTIONS_PATH_CASES[case]
    run = _copy(finished, tmp_path)
    make(run / "predictions")
    before = snapshot(run)
    for replace_ood in (False, True):
        line = refusal(capsys, _predict(run, replace_ood=replace_ood))
        assert line == "error: " + message.format(p=run / "predictions")
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------
# Flag errors of the argparse commands: one line, without argparse's usage block.


ARGPARSE_CASES = {  # name -> (the command's main, its arguments, the line after "error: ")
    "score_knn_k_not_a_number": (score.main, ["run", "--out=o", "--knn_k=x"],
                                 "argument --knn_k: invalid int value: 'x'"),
    "score_unknown_flag": (score.main, ["run", "--out=o", "--foo"],
                           "unrecognized arguments: --foo"),
    "score_without_out": (score.main, ["run"], "the following arguments are required: --out"),
    "score_unknown_selection": (score.main, ["run", "--out=o", "--odin_selection=best"],
                                "argument --odin_selection: invalid choice: 'best' (choose from "
                                "'id_train', 'fixed')"),
    "rebuild_without_out": (rebuild.main, ["docs/results/digits"],
                            "the following arguments are required: --out"),
    "rebuild_unknown_flag": (rebuild.main, ["docs/results/digits", "--out=o", "--force"],
                             "unrecognized arguments: --force"),
    "prepare_tfds_unknown_flag": (prepare_tfds.main, ["svhn_cropped:3.1.0", "--dir=x"],
                                  "unrecognized arguments: --dir=x"),
}


@pytest.mark.parametrize("case", list(ARGPARSE_CASES))
def test_a_flag_error_is_one_line_without_the_usage_block(case, tmp_path, capsys, monkeypatch):
    main, args, message = ARGPARSE_CASES[case]
    monkeypatch.chdir(tmp_path)  # nothing may be written, here or anywhere
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {message} (--help lists the flags)\n")
    assert list(tmp_path.iterdir()) == []


def test_reproduce_refuses_a_predictions_file_in_any_run_before_the_first_trains(tmp_path,
                                                                                 capsys):
    config = tiny_digits_config("ce")
    last = reproduce.planned_runs(config, str(tmp_path))[-1][0]
    predictions_path = tmp_path / "runs" / last.run / "predictions"
    predictions_path.parent.mkdir(parents=True)
    predictions_path.write_text("mine")
    before = snapshot(tmp_path)
    assert refusal(capsys, lambda: reproduce.planned_runs(config, str(tmp_path))) == \
        f"error: {predictions_path} is a file, not a predictions directory, which is written " \
        f"there as a whole; move the file elsewhere"
    assert snapshot(tmp_path) == before
