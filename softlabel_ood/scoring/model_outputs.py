"""Any model's outputs scored from arrays, without files: `score_outputs`.

    rows = score_outputs(id_logits, id_labels, ood={"svhn": svhn_logits})
    rows.to_pandas()  # columns run, score, ood, metric, value, as metrics.csv

The arrays go through the checks of `import_outputs` (`workdir/imported_outputs.py`) and the
pipeline of `score` (`pipeline.score_predictions`): the rows are, to the last bit, those of
`score` on the directory that `import_outputs` writes from the same arrays, on the same JAX
platform (`score` takes the CPU unless told otherwise; a Python session JAX's default device,
whose float64 arithmetic may round otherwise). Numpy in; numpy and JAX inside.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping, Sequence

from softlabel_ood.scoring import groups as groups_lib
from softlabel_ood.scoring import metrics_files, pipeline, score_records
from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.workdir import imported_outputs, predictions
from softlabel_ood.workdir.imported_outputs import ID_TEST, ID_TRAIN, SplitArrays, in_memory


class MetricRows(list):
    """The rows of metrics.csv (`pipeline.MetricRow`), with what `score` says beside them:
    `skipped` ({score: why it was not computed}), `notes` ({score: what was chosen, e.g. knn's
    k}) and `groups` ({group: OOD sets}, checked against the OOD splits)."""

    def __init__(self, rows: Iterable[pipeline.MetricRow], *, skipped: Mapping[str, str],
                 notes: Mapping[str, str], groups: Mapping[str, tuple[str, ...]]):
        super().__init__(rows)
        self.skipped, self.notes, self.groups = dict(skipped), dict(notes), dict(groups)

    def to_pandas(self):
        """A pandas DataFrame with metrics.csv's columns (pandas is not a dependency)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas needs pandas (pip install pandas); the rows are "
                              "MetricRow(run, score, ood, metric, value) without it") from None
        return pandas.DataFrame([(r.run, r.score, r.ood, r.metric, r.value) for r in self],
                                columns=list(metrics_files.CSV_HEADER))


def _splits(id_logits, id_labels, ood: Mapping, id_train, features: Mapping
            ) -> list[SplitArrays]:
    imported_outputs.check_names(list(ood), lambda name: f"ood[{name!r}]")
    names = [ID_TEST, *([ID_TRAIN] if id_train is not None else []), *ood]
    unknown = sorted(set(features) - set(names))
    if unknown:
        raise ScoringError(f"features[{unknown[0]!r}]: no such split (splits: "
                           f"{', '.join(names)})")

    def feature(name):
        return None if name not in features else in_memory(f"features[{name!r}]",
                                                              features[name])

    splits = [SplitArrays(ID_TEST, "id_test", in_memory("id_logits", id_logits),
                          in_memory("id_labels", id_labels), feature(ID_TEST))]
    if id_train is not None:
        if not isinstance(id_train, Sequence) or len(id_train) != 2:
            raise ScoringError("id_train: expected (logits, labels)")
        splits.append(SplitArrays(ID_TRAIN, "id_train", in_memory("id_train[0] (logits)",
                                                                  id_train[0]),
                                  in_memory("id_train[1] (labels)", id_train[1]),
                                  feature(ID_TRAIN)))
    splits += [SplitArrays(name, "ood_test", in_memory(f"ood[{name!r}]", logits),
                           features=feature(name)) for name, logits in ood.items()]
    return splits


def _needed(scores: Sequence[str] | None) -> tuple[set[str], bool, bool]:
    """(the scores asked for, whether any reads features, whether any reads the head)."""
    known = score_records.names()
    asked = set(known if scores is None else scores)
    unknown = sorted(asked - set(known))
    if unknown:
        raise ScoringError(f"scores: {unknown[0]!r} is not a score (scores: {', '.join(known)})")
    return (asked, bool(asked & set(score_records.reading("features"))),
            bool(asked & set(score_records.reading("head"))))


def score_outputs(id_logits, id_labels, ood: Mapping | None = None, *, id_train=None,
                  features: Mapping | None = None, head=None, scores: Sequence[str] | None = None,
                  groups: Mapping[str, Sequence[str]] | None = None, name: str = "model",
                  **parameters) -> MetricRows:
    """The metric rows of one model's outputs, as `score` computes them (DESIGN.md §6).

    `id_logits` [N, K] and `id_labels` [N] are the ID test split; `ood` maps each OOD set's
    name to its logits [M, K]; `id_train` is (logits, labels) of the ID training split;
    `features` maps split names ("id_test", "id_train" and the OOD names) to features [N, D];
    `head` is (kernel [D, K], bias [K]) of the final dense layer. The feature scores run when
    id_train and every evaluated split's features are given, react and vim when the head is
    too; the others are skipped (`MetricRows.skipped` says why). `scores` keeps those scores'
    rows (default: all; accuracy and ece always); `groups` ({group: OOD sets}) is checked and
    returned with the rows. `name` is the rows' run. A score parameter given by name (knn_k,
    pnorm_p) replaces its default. Raises a `UserError` (one line naming the argument and the
    problem) for arrays that `import_outputs` would refuse.
    """
    asked, with_features, with_head = _needed(scores)
    splits = _splits(id_logits, id_labels, dict(ood or {}), id_train,
                     dict(features or {}) if with_features else {})
    head_arrays = None
    if head is not None and with_head:
        if not isinstance(head, Sequence) or len(head) != 2:
            raise ScoringError("head: expected (kernel, bias)")
        head_arrays = (in_memory("head[0] (kernel)", head[0]), in_memory("head[1] (bias)",
                                                                          head[1]))
    num_classes, loaded, head_loaded = imported_outputs.load(splits, head_arrays)
    checked_groups = {g: (m,) if isinstance(m, str) else tuple(m)
                      for g, m in (groups or {}).items()}
    groups_lib.check_groups(checked_groups, {n: s.role for n, s in loaded.items()}, run=name,
                            where="groups")
    preds = predictions.Predictions(num_classes=num_classes, run={}, splits=loaded,
                                    directory=pathlib.Path(name), head=head_loaded)
    report = pipeline.score_predictions([(name, preds)], **parameters)
    return MetricRows([row for row in report.rows if not row.score or row.score in asked],
                      skipped={s: why for s, why in report.skipped.get(name, {}).items()
                               if s in asked},
                      notes={s: n for s, n in report.notes.get(name, {}).items() if s in asked},
                      groups=checked_groups)
