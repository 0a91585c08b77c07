"""`softlabel_ood.scoring.score_outputs`: arrays scored in memory, to the last bit as `score`
scores their imported directory; checked by hand and against scikit-learn; and the README's
"Score your own model" snippet, run as written with numpy standing in for torch."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import types

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from softlabel_ood import import_outputs, score, scoring
from softlabel_ood.workdir.imported_outputs import OutputsError
from tests.train_helpers import REPO

K, D = 5, 7


def _model_arrays(seed=0):
    """One model's outputs with features and head: quantized logits, so scores tie."""
    rng = np.random.default_rng(seed)

    def split(n, shift):
        y = rng.integers(0, K, n)
        logits = np.round(rng.normal(size=(n, K)) + shift * np.eye(K)[y], 1)
        return logits, y, rng.normal(size=(n, D)) + shift * np.eye(K, D)[y]

    test, train = split(70, 2.0), split(90, 2.0)
    svhn, noise = split(40, 0.5), split(25, 0.0)
    return dict(id_logits=test[0], id_labels=test[1], ood={"svhn": svhn[0], "noise": noise[0]},
                id_train=(train[0], train[1]),
                features={"id_test": test[2], "id_train": train[2], "svhn": svhn[2],
                          "noise": noise[2]},
                head=(rng.normal(size=(D, K)), rng.normal(size=K)))


def _import(arrays, folder, out):
    """The same arrays written as files and imported with the command."""
    folder.mkdir()
    f = arrays["features"]
    np.savez(folder / "test.npz", logits=arrays["id_logits"], labels=arrays["id_labels"],
             features=f["id_test"])
    np.savez(folder / "train.npz", logits=arrays["id_train"][0], labels=arrays["id_train"][1],
             features=f["id_train"])
    for name, logits in arrays["ood"].items():
        np.savez(folder / f"{name}.npz", logits=logits, features=f[name])
    np.savez(folder / "head.npz", kernel=arrays["head"][0], bias=arrays["head"][1])
    import_outputs.main([f"--out={out}", f"--id_test={folder / 'test.npz'}",
                         f"--id_train={folder / 'train.npz'}", f"--head={folder / 'head.npz'}",
                         *[a for name in arrays["ood"] for a in ("--ood",
                                                                 f"{name}={folder / name}.npz")]])


def _bits(rows):
    return [(r.run, r.score, r.ood, r.metric, np.float64(r.value).tobytes()) for r in rows]


def test_the_rows_are_those_of_score_on_the_imported_directory_to_the_last_bit(tmp_path):
    arrays = _model_arrays()
    _import(arrays, tmp_path / "saved", tmp_path / "model")
    rows = scoring.score_outputs(**arrays, name="model")
    # score's own function, then score itself with its metrics.csv read back.
    report = scoring.score_runs_report([tmp_path / "model"])
    assert _bits(rows) == _bits(report.rows)
    assert score.main([str(tmp_path / "model"), f"--out={tmp_path / 'scores'}"]) == 0
    assert _bits(rows) == _bits(scoring.read_metrics_csv(tmp_path / "scores" / "metrics.csv"))
    assert {r.score for r in rows if r.score} == set(scoring.ALL_SCORES) - {"odin"}
    assert rows.skipped == {"odin": report.skipped["model"]["odin"]}
    assert rows.notes == report.notes["model"]
    assert isinstance(rows, list)


def test_scores_keeps_those_rows_and_inputs_left_out_skip_their_scores():
    arrays = _model_arrays()
    full = scoring.score_outputs(**arrays)
    some = scoring.score_outputs(**arrays, scores=["msp", "knn"])
    assert _bits(some) == _bits([r for r in full if r.score in ("", "msp", "knn")])
    bare = scoring.score_outputs(arrays["id_logits"], arrays["id_labels"], arrays["ood"])
    logit_rows = [r for r in full if r.score in ("", *scoring.LOGIT_SCORES, "pnorm")]
    assert _bits(bare) == _bits(logit_rows)
    assert sorted(bare.skipped) == ["knn", "mahalanobis", "odin", "react", "vim"]
    assert bare.skipped["knn"] == "skipped: the predictions have no id_train split"
    with pytest.raises(scoring.ScoringError, match="scores: 'softmax' is not a score"):
        scoring.score_outputs(**arrays, scores=["softmax"])


def test_metrics_known_by_construction_and_checked_against_scikit_learn():
    # max_logit is v for the logits [v, 0, 0]: ID 3, 4, 5, 6 and OOD 1, 2, 3.5. ID beats OOD in
    # 11 of the 12 pairs; ranked by score, the ID examples are found at ranks 1, 2, 3 and 5, so
    # the average precision is (1 + 1 + 1 + 4/5) / 4; accepting every ID example (threshold 3)
    # accepts the OOD 3.5: fpr95 = 1/3. One of four labels is wrong: accuracy 3/4.
    def logits(values):
        return np.array([[v, 0.0, 0.0] for v in values])

    rows = scoring.score_outputs(logits([3, 4, 5, 6]), [0, 0, 1, 0], {"ood": logits([1, 2, 3.5])})
    value = {(r.score, r.metric): r.value for r in rows}
    for s in ("max_logit", "msp"):  # msp = e^v / (e^v + 2) ranks as v
        assert value[(s, "auroc")] == pytest.approx(11 / 12, abs=1e-15)
        assert value[(s, "aupr_in")] == pytest.approx(0.95, abs=1e-15)
        assert value[(s, "fpr95")] == pytest.approx(1 / 3, abs=1e-15)
    assert value[("", "accuracy")] == 0.75

    # Tie-heavy scores: integer-valued logits make max_logit tie within and across the splits.
    rng = np.random.default_rng(3)
    id_logits = rng.integers(-3, 4, (300, 4)).astype(np.float32)
    ood_logits = rng.integers(-4, 3, (200, 4)).astype(np.float32)
    rows = scoring.score_outputs(id_logits, rng.integers(0, 4, 300), {"ood": ood_logits},
                                 scores=["max_logit"])
    value = {r.metric: r.value for r in rows if r.score == "max_logit" and r.ood}
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[id_logits.max(1), ood_logits.max(1)].astype(np.float64)
    assert value["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert value["aupr_in"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert value["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


def test_bad_arrays_are_refused_naming_the_argument():
    arrays = _model_arrays()
    with pytest.raises(OutputsError, match=r"^id_labels has dtype float64, expected integers"):
        scoring.score_outputs(arrays["id_logits"], arrays["id_labels"].astype(float))
    with pytest.raises(OutputsError, match=r"^ood\['svhn'\] has 3 columns \(classes\), but "
                                           r"id_logits has 5"):
        scoring.score_outputs(arrays["id_logits"], arrays["id_labels"],
                              {"svhn": np.zeros((4, 3))})
    with pytest.raises(OutputsError, match=r"^ood\['id_test'\]: split name 'id_test' is reserved"):
        scoring.score_outputs(arrays["id_logits"], arrays["id_labels"],
                              {"id_test": arrays["id_logits"]})
    with pytest.raises(scoring.ScoringError, match=r"features\['cifar'\]: no such split"):
        scoring.score_outputs(**{**arrays, "features": {"cifar": np.zeros((3, D))}})
    with pytest.raises(scoring.ScoringError, match=r"groups: group 'far' names 'cifar'"):
        scoring.score_outputs(**arrays, groups={"far": ["svhn", "cifar"]})


def test_to_pandas_gives_metrics_csv_columns(monkeypatch):
    arrays = _model_arrays()
    rows = scoring.score_outputs(arrays["id_logits"], arrays["id_labels"], arrays["ood"],
                                 scores=["msp"])
    monkeypatch.setitem(sys.modules, "pandas", None)  # not installed: one clear ImportError
    with pytest.raises(ImportError, match="to_pandas needs pandas"):
        rows.to_pandas()
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda data, columns: (data, columns)
    monkeypatch.setitem(sys.modules, "pandas", fake)
    data, columns = rows.to_pandas()
    assert columns == ["run", "score", "ood", "metric", "value"]
    assert data == [(r.run, r.score, r.ood, r.metric, r.value) for r in rows]


# ---------------------------------------------------------------------------------------------
# The README's snippet.


def _readme_blocks():
    text = (REPO / "README.md").read_text()
    section = text.split("## Score your own model\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    return section, {lang: code for lang, code in blocks}


class _Tensor(np.ndarray):
    """A numpy array with torch's `.numpy()`: what the snippet's torch lines produce."""

    def numpy(self):
        return np.asarray(self)


def test_the_readme_snippet_runs_as_written_with_numpy_for_torch(tmp_path, monkeypatch):
    section, blocks = _readme_blocks()
    code_lines = [line for code in blocks.values() for line in code.splitlines() if line.strip()]
    assert len(code_lines) <= 12, code_lines
    # torch replaced: no_grad a no-op, the model a fixed linear map to CIFAR-10's 10 classes, the
    # loaders batches of CIFAR-10's test set (10,000) and SVHN's (26,032) in their shapes.
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
        no_grad=contextlib.nullcontext))
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3 * 32 * 32, 10)).astype(np.float32) / 30

    def loader(n, batch=1000):
        for start in range(0, n, batch):
            size = min(batch, n - start)
            x = rng.normal(size=(size, 3, 32, 32)).astype(np.float32).view(_Tensor)
            yield x, rng.integers(0, 10, size).view(_Tensor)

    namespace = {"model": lambda x: (x.reshape(len(x), -1) @ weights).view(_Tensor),
                 "test_loader": list(loader(10_000)), "svhn_loader": list(loader(26_032))}
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks["python"], "README.md", "exec"), namespace)
    for line in blocks["bash"].strip().splitlines():
        words = shlex.split(line)
        assert words[0] == "python"
        done = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True,
                              env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                                   "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
    rows = scoring.read_metrics_csv(next(tmp_path.rglob("metrics.csv")))
    with np.load(tmp_path / "cifar10_test.npz") as test:
        assert test["logits"].shape == (10_000, 10)
        expected = scoring.score_outputs(test["logits"], test["labels"],
                                         {"svhn": np.load(tmp_path / "svhn.npy")},
                                         name=rows[0].run)
    assert _bits(rows) == _bits(expected)
    assert "score_outputs" in section
