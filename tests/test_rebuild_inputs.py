"""A report directory edited by hand: `rebuild` (and `results.load`, which notebooks call) checks
metrics.csv and runs.json as `score` checks predictions, and refuses each corruption with exit
code 2 and one line naming the file and the row or field, before anything is written. Each case
spoils a copy of the committed digits report; the clean copies rebuild byte for byte in
test_rebuild.py (test_the_committed_reports_rebuild_with_byte_identical_metrics)."""

from __future__ import annotations

import json
import shutil

import pytest

from softlabel_ood import cli_errors, methods
from softlabel_ood.analysis import rebuild, results
from tests.train_helpers import REPO, refusal

COMMITTED = REPO / "docs" / "results" / "digits"
FIRST_ROW = "ce_seed0,,,accuracy,0.9466666666666667"  # line 2 of metrics.csv


def _csv(old: str, new: str):
    def spoil(report):
        text = (report / "metrics.csv").read_text()
        assert old in text
        (report / "metrics.csv").write_text(text.replace(old, new, 1))
    return spoil


def _csv_lines(keep):
    def spoil(report):
        lines = (report / "metrics.csv").read_text().splitlines(keepends=True)
        (report / "metrics.csv").write_text("".join(line for line in lines if keep(line)))
    return spoil


def _csv_columns(count: int):
    def spoil(report):
        lines = (report / "metrics.csv").read_text().splitlines()
        (report / "metrics.csv").write_text(
            "".join(",".join(line.split(",")[:count]) + "\n" for line in lines))
    return spoil


def _runs(edit):
    def spoil(report):
        data = json.loads((report / "runs.json").read_text())
        (report / "runs.json").write_text(json.dumps(edit(data)))
    return spoil


def _write(name: str, content: bytes):
    return lambda report: (report / name).write_bytes(content)


def _new_names(run: dict, **changes) -> dict:
    """A run of the committed (old) runs.json under the names the report writes now."""
    new = {{"name": "entry", "alpha": "strength"}.get(k, k): v for k, v in run.items()}
    return {**new, **changes}


def _set(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
CSV, RUNS = "{r}/metrics.csv", "{r}/runs.json"
CASES = {  # name -> (how the copy is spoiled, the refusal after "error: ")
    "csv_binary": (_write("metrics.csv", PNG),
                   f"{CSV}: not a metrics.csv (UnicodeDecodeError: 'utf-8' codec can't decode "
                   f"byte 0x89 in position 0: invalid start byte)"),
    "csv_missing_column": (_csv_columns(4),
                           f"{CSV}: header is ['run', 'score', 'ood', 'metric'], expected "
                           f"run,score,ood,metric,value"),
    "csv_short_row": (_csv(FIRST_ROW, "ce_seed0,,,accuracy"),
                      f"{CSV}:2: expected 5 fields, got 4"),
    "csv_unknown_run": (_csv(FIRST_ROW, "cee_seed0,,,accuracy,0.9466666666666667"),
                        f"{CSV}: run 'cee_seed0' is not among the runs of {RUNS}"),
    "csv_unknown_metric": (_csv(FIRST_ROW, "ce_seed0,,,acc,0.9466666666666667"),
                           f"{CSV}:2: field 'metric' is 'acc', expected one of accuracy, ece, "
                           f"aurc, eaurc, error_auroc, error_fpr95, auroc, aupr_in, aupr_out, "
                           f"fpr95, tnr95, fpr95_ood_positive, detection_acc, fpr95_oe"),
    "csv_unknown_score": (_csv("ce_seed0,msp,,aurc,", "ce_seed0,mps,,aurc,"),
                          f"{CSV}:4: field 'score' is 'mps', expected one of msp, max_logit, "
                          f"energy, entropy, pnorm, mahalanobis, knn, react, vim, odin"),
    "csv_id_metric_with_a_score": (_csv(FIRST_ROW, "ce_seed0,msp,,accuracy,0.9"),
                                   f"{CSV}:2: accuracy is a metric of the ID test split; fields "
                                   f"'score' and 'ood' must be empty, got 'msp' and ''"),
    "csv_ood_metric_without_ood": (_csv("ce_seed0,msp,gaussian,auroc,",
                                        "ce_seed0,msp,,auroc,"),
                                   None),  # its line number depends on the file: checked below
    "csv_not_a_number": (_csv(FIRST_ROW, "ce_seed0,,,accuracy,high"),
                         f"{CSV}:2: field 'value' is 'high', not a number"),
    "csv_percent": (_csv(FIRST_ROW, "ce_seed0,,,accuracy,94.67"),
                    f"{CSV}:2: field 'value' is '94.67', expected a fraction in [0, 1]"),
    "csv_negative": (_csv(FIRST_ROW, "ce_seed0,,,accuracy,-0.1"),
                     f"{CSV}:2: field 'value' is '-0.1', expected a fraction in [0, 1]"),
    "csv_nan": (_csv(FIRST_ROW, "ce_seed0,,,accuracy,nan"),
                f"{CSV}:2: field 'value' is 'nan', expected a fraction in [0, 1]"),
    "csv_infinite": (_csv(FIRST_ROW, "ce_seed0,,,accuracy,inf"),
                     f"{CSV}:2: field 'value' is 'inf', expected a fraction in [0, 1]"),
    "csv_row_twice": (_csv(FIRST_ROW, f"{FIRST_ROW}\n{FIRST_ROW}"),
                      f"{CSV}:3: repeats row 2 (ce_seed0,,,accuracy)"),
    "runs_binary": (_write("runs.json", PNG),
                    f"{RUNS}: not valid JSON ('utf-8' codec can't decode byte 0x89 in position "
                    f"0: invalid start byte)"),
    "runs_bad_json": (_write("runs.json", b'{"runs": ['),
                      f"{RUNS}: not valid JSON (Expecting value: line 1 column 11 (char 10))"),
    "runs_a_string": (_write("runs.json", b'"runs"'),
                      f"{RUNS}: expected an object with 'runs' (or a list of runs), got str"),
    "runs_an_object": (_runs(lambda d: _set(d, ["runs"], {"ce_seed0": {}})),
                       f"{RUNS}: field 'runs' must be a non-empty list of runs"),
    "run_a_string": (_runs(lambda d: _set(d, ["runs", 0], "ce_seed0")),
                     f"{RUNS}: field 'runs[0]' must be an object, got str"),
    "run_seed_a_string": (_runs(lambda d: _set(d, ["runs", 1, "seed"], "0")),
                          f"{RUNS}: field 'runs[1].seed' is '0', expected an integer >= 0"),
    "run_alpha_out_of_range": (_runs(lambda d: _set(d, ["runs", 1, "alpha"], 10)),
                               f"{RUNS}: field 'runs[1].alpha' is 10, expected a number in "
                               f"[0, 1)"),
    "run_unknown_method": (_runs(lambda d: _set(d, ["runs", 1, "method"], "no_such_method")),
                           f"{RUNS}: field 'runs[1].method' is 'no_such_method', expected one "
                           f"of {', '.join(methods.names())} (or empty)"),
    "run_new_names_strength_negative": (
        _runs(lambda d: _set(d, ["runs", 1], _new_names(d["runs"][1], strength=-0.5))),
        f"{RUNS}: field 'runs[1].strength' is -0.5, expected a number >= 0"),
    "run_old_and_new_names": (
        _runs(lambda d: _set(d, ["runs", 1], {**d["runs"][1], "entry": "ce"})),
        f"{RUNS}: field 'runs[1].entry' is not a field of runs.json (expected run, name, seed, "
        f"method, alpha, teacher, init_from, directory)"),
    "run_missing_field": (_runs(lambda d: (d["runs"][2].pop("name"), d)[1]),
                          f"{RUNS}: field 'runs[2].name' is missing"),
    "run_unknown_field": (_runs(lambda d: _set(d, ["runs", 0, "colour"], "red")),
                          f"{RUNS}: field 'runs[0].colour' is not a field of runs.json "
                          f"(expected run, name, seed, method, alpha, teacher, init_from, "
                          f"directory)"),
    "run_named_twice": (_runs(lambda d: _set(d, ["runs", 1, "run"], "ce_seed0")),
                        f"{RUNS}: field 'runs[1].run' is 'ce_seed0', which an earlier run has"),
    "run_missing_from_metrics": (_csv_lines(lambda line: not line.startswith("ce_seed0,")),
                                 f"{RUNS}: run 'ce_seed0' has no row in {CSV}"),
    "environment_a_list": (_runs(lambda d: _set(d, ["environment"], ["jax"])),
                           f"{RUNS}: field 'environment' must be an object of strings"),
    "report_a_string": (_runs(lambda d: _set(d, ["report"], "digits")),
                        f"{RUNS}: field 'report' must be an object, got str"),
    "report_groups_a_string": (_runs(lambda d: _set(d, ["report", "ood_groups"], "near")),
                               f"{RUNS}: field 'report.ood_groups' must map each group to a "
                               f"list of OOD sets"),
    "report_group_of_an_unscored_set": (
        _runs(lambda d: _set(d, ["report", "ood_groups", "near"], ["svhn"])),
        f"{RUNS}: field 'report.ood_groups.near' names 'svhn', which no row of {CSV} scores"),
    "report_odin_pair_of_an_unknown_run": (
        _runs(lambda d: _set(d, ["report", "odin_pairs", "zz_seed0"],
                             d["report"]["odin_pairs"]["ce_seed0"])),
        f"{RUNS}: field 'report.odin_pairs' names run 'zz_seed0', which 'runs' does not"),
    "report_odin_temperature_a_string": (
        _runs(lambda d: _set(d, ["report", "odin_pairs", "ce_seed0", "temperature"], "hot")),
        f"{RUNS}: field 'report.odin_pairs.ce_seed0.temperature' is 'hot', expected a number "
        f"> 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_spoilt_report_is_refused_in_one_line_naming_the_file_and_field(case, tmp_path,
                                                                         capsys):
    spoil, message = CASES[case]
    report = tmp_path / "report"
    shutil.copytree(COMMITTED, report)
    spoil(report)
    out = tmp_path / "new"
    line = refusal(capsys, lambda: rebuild.main([str(report), f"--out={out}"]))
    if message is None:
        assert line.startswith(f"error: {report}/metrics.csv:"), line
        assert line.endswith(": field 'ood' is empty; auroc needs an OOD split"), line
    else:
        assert line == "error: " + message.format(r=report)
    assert not out.exists()
    # A notebook's `results.load` reads the report the same way.
    with pytest.raises(cli_errors.UserError) as e:
        results.load(report)
    assert f"error: {cli_errors.one_line(e.value)}" == line
