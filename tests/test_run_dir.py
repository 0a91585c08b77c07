"""The run directory's names, in one module, and the one reader of a run's config.json."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest
from etils import epath

from softlabel_ood.scoring import directory_reading, groups, score_records
from softlabel_ood.workdir import run_dir, saved_runs

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "softlabel_ood"
NAMES = {run_dir.CONFIG, run_dir.CHECKPOINTS, run_dir.METRICS_LOG, run_dir.TENSORBOARD,
         run_dir.PREDICTIONS, run_dir.MANIFEST, run_dir.DONE, run_dir.LOCK}


def test_the_names_are_the_ones_of_the_format():
    # DESIGN.md §5 and the README name these files; old run directories hold them.
    format_names = {"config.json", "checkpoints", "metrics.jsonl", "tensorboard", "predictions",
                    "manifest.json", "DONE", ".lock"}
    assert format_names == NAMES


def test_no_other_module_spells_a_name_of_the_run_directory():
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "run_dir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not spelled, "\n".join(spelled)


def test_the_module_loads_with_the_standard_library_alone():
    code = ("import sys, softlabel_ood.workdir.run_dir\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'jax', 'etils', 'ml_collections', 'flax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_reader_gives_the_stored_fields(tmp_path):
    fields = {"method": "ls", "label_smoothing": 0.1, "ood_groups": {"near": ["svhn"]},
              "kd": {"teacher_workdir": ""}}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    assert run_dir.read_config(tmp_path) == fields
    assert run_dir.read_config(str(tmp_path)) == fields
    assert run_dir.read_config(epath.Path(tmp_path)) == fields  # a bucket path is read as given
    assert run_dir.config_path(epath.Path(tmp_path)) == epath.Path(tmp_path) / "config.json"
    assert run_dir.predictions_path(str(tmp_path)) == tmp_path / "predictions"


def test_a_run_without_a_config_is_refused_unless_it_may_have_none(tmp_path):
    with pytest.raises(run_dir.RunError) as e:
        run_dir.read_config(tmp_path)
    assert str(e.value) == f"{tmp_path}/config.json: missing; {tmp_path} is not a run directory"
    assert run_dir.read_config(tmp_path, missing_ok=True) == {}
    # Scoring reads runs without one with the defaults of old runs.
    assert groups.read_groups(tmp_path) == {}
    assert _odin_selection(tmp_path) == "id_train"


def _odin_selection(directory) -> str:
    """The odin score's selection, read as `score` reads a run's stored score parameters."""
    return directory_reading.stored_parameter(run_dir.read_config(directory, missing_ok=True),
                                              score_records.ODIN_SELECTION, "config.json")


BROKEN = {  # config.json -> the line after its path
    "{": "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
         "(char 1))",
    '{"seed": 0, "seed": 1}': "the key 'seed' appears twice",
    '{"ood_groups": {"near": ["svhn"], "near": []}}': "the key 'near' appears twice",
    "[]": "not a run's config (a JSON object of its fields)",
    "\"ce\"": "not a run's config (a JSON object of its fields)",
}


@pytest.mark.parametrize("text", list(BROKEN))
def test_every_reader_refuses_a_broken_config_with_the_same_line(text, tmp_path):
    (tmp_path / "config.json").write_text(text)
    expected = f"{tmp_path}/config.json: {BROKEN[text]}"
    readers = [run_dir.read_config, lambda d: run_dir.read_config(d, missing_ok=True),
               saved_runs.read_config, groups.read_groups, _odin_selection]
    for read in readers:
        with pytest.raises(run_dir.RunError) as e:
            read(tmp_path)
        assert str(e.value) == expected
        assert "\n" not in str(e.value)


def test_is_finished_reads_the_done_marker(tmp_path):
    assert not run_dir.is_finished(tmp_path)
    (tmp_path / "DONE").write_text("finished\n")
    assert run_dir.is_finished(tmp_path)
    assert run_dir.is_finished(epath.Path(tmp_path))
