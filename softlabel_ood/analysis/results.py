"""A grid's runs and where their results are: which run is which, and loading a report.

`RunInfo` (`configs/grid.py`) says what one run is (grid entry, seed, method, α, teacher, starting
point); `load` reads a reproduce workdir, report or run directories (local or in a bucket) into the
runs, their metric rows and a `metric_stats.MetricTable`. Means over OOD sets and seeds are computed
in `metric_stats.py`. """

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterable, Sequence

from etils import epath

from softlabel_ood import scoring
from softlabel_ood.analysis import metric_stats, runs_json
from softlabel_ood.configs import grid
from softlabel_ood.configs.grid import RunInfo
from softlabel_ood.workdir import atomic_files, predictions, run_dir, trained_steps

RUNS_FILE = "runs.json"


def group_by_name(runs: Iterable[RunInfo]) -> dict[str, list[RunInfo]]:
    """Grid name -> its runs (one per seed), in the order the names first appear."""
    groups: dict[str, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault(r.entry, []).append(r)
    return groups


def is_plain_ce(run: RunInfo) -> bool:
    """A ce run with no teacher and no starting point: the α = 0 point of the ls sweep."""
    return run.method == "ce" and not run.teacher and not run.init_from


def students(runs: Iterable[RunInfo], student_methods: Sequence[str]
             ) -> list[tuple[list[RunInfo], list[RunInfo]]]:
    """(student entry, teacher entry) for every grid entry of `student_methods` whose teacher is
    among `runs`, in grid order; each entry is its runs (one per seed)."""
    groups = group_by_name(runs)
    return [(group, groups[group[0].teacher]) for group in groups.values()
            if group[0].method in student_methods and group[0].teacher in groups]


def ls_sweep(runs: Iterable[RunInfo]) -> list[tuple[float, list[RunInfo]]]:
    """The label-smoothing sweep, sorted by α: the plain ce run is α = 0, then every ls entry.

    A plain ce run is one with no teacher and no starting point: label smoothing with α = 0 is
    exactly cross-entropy with one-hot targets.
    """
    points: dict[float, list[RunInfo]] = {}
    for group in group_by_name(runs).values():
        first = group[0]
        if first.method == "ls" or is_plain_ce(first):
            alpha = first.strength if first.method == "ls" else 0.0
            # The first grid entry with a given α stands for it (a grid lists each α once).
            points.setdefault(alpha, group)
    return sorted(points.items())


@dataclasses.dataclass(frozen=True)
class ReportRecord:
    """What a report shows beyond its metrics and runs, none of which metrics.csv holds: kept in
    runs.json under "report" so that the report can be written again without the run
    directories (`rebuild.rebuild_report`)."""

    title: str = ""
    dataset: str = ""  # the ID dataset, named in the figures' titles
    ood_groups: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # run -> the (T, ε) pair its odin score used (chosen from its predictions)
    odin_pairs: dict[str, scoring.odin_selection.OdinChoice] = dataclasses.field(
        default_factory=dict)
    # which k the knn score used; reports written before k followed the ID train set's size
    # (and so before this field) used k = 50
    knn_k: str = "k = 50"
    # run -> the checkpoint of each run whose predictions are not of its finished model (None:
    # of an unknown step; `trained_steps.unfinished`); written only when there is one
    unfinished: dict[str, trained_steps.Checkpoint | None] = dataclasses.field(
        default_factory=dict)
    # run -> its mean softmax entropy on the ID test set (nats), which the soft-label family's
    # table and figure show (`report_inputs.id_entropies`); written only when there is one
    id_entropy: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        data = {"title": self.title, "dataset": self.dataset,
                "ood_groups": {g: list(m) for g, m in self.ood_groups.items()},
                "odin_pairs": {run: dataclasses.asdict(c) for run, c in self.odin_pairs.items()},
                "knn_k": self.knn_k}
        if self.unfinished:
            data["unfinished"] = {run: c and c.to_json() for run, c in self.unfinished.items()}
        if self.id_entropy:
            data["id_entropy"] = dict(self.id_entropy)
        return data

    @classmethod
    def from_json(cls, data: dict) -> ReportRecord:
        return cls(title=data.get("title", ""), dataset=data.get("dataset", ""),
                   ood_groups={g: tuple(m) for g, m in data.get("ood_groups", {}).items()},
                   odin_pairs={run: scoring.odin_selection.OdinChoice(**{
                       key: tuple(value) if isinstance(value, list) else value
                       for key, value in c.items()})
                       for run, c in data.get("odin_pairs", {}).items()},
                   knn_k=data.get("knn_k", cls.knn_k),
                   unfinished={run: c and trained_steps.Checkpoint(**c)
                               for run, c in data.get("unfinished", {}).items()},
                   id_entropy={run: float(h) for run, h in data.get("id_entropy", {}).items()})


def write_runs_json(runs: Sequence[RunInfo], path: epath.PathLike, *,
                    environment: dict[str, str] | None = None,
                    report: ReportRecord | None = None) -> None:
    """`{"environment": {...}, "runs": [...], "report": {...}}`; `environment.describe()` says
    what the environment holds, `ReportRecord` what the report record holds."""
    data = {"environment": environment or {}, "runs": [dataclasses.asdict(r) for r in runs]}
    if report is not None:
        data["report"] = report.to_json()
    atomic_files.write_text_atomically(path, json.dumps(data, indent=1) + "\n")


def _runs_file(path: epath.PathLike) -> dict:
    # Checked field by field; a list-only file (written before the environment was recorded)
    # reads as {"runs": [...]}.
    return runs_json.read(path, [field.name for field in dataclasses.fields(RunInfo)])


def read_runs_json(path: epath.PathLike) -> list[RunInfo]:
    return [RunInfo(**entry) for entry in _runs_file(path)["runs"]]


def read_environment(path: epath.PathLike) -> dict[str, str]:
    """The environment a runs.json records ({} for reports written before it was recorded)."""
    return dict(_runs_file(path).get("environment", {}))


def read_report_record(path: epath.PathLike) -> ReportRecord | None:
    """The report record of a runs.json; None for reports written before it was recorded."""
    data = _runs_file(path).get("report")
    return None if data is None else ReportRecord.from_json(data)


def runs_from_directories(run_dirs: Iterable[epath.PathLike]) -> list[RunInfo]:
    """RunInfo for run directories without a runs.json: from their predictions manifests."""
    runs = []
    for d in run_dirs:
        d = epath.Path(d)
        manifest = json.loads((run_dir.predictions_path(d) / run_dir.MANIFEST).read_text())
        run = predictions.RunSummary.from_json(manifest.get("run", {}))
        runs.append(RunInfo(
            run=d.name, entry=grid.grid_name(d.name), seed=run.seed, method=run.method,
            strength=run.strength,
            teacher=grid.grid_name(epath.Path(run.teacher).name) if run.teacher else "",
            init_from=(grid.grid_name(epath.Path(run.finetune_from).name) if run.finetune_from
                       else ""),
            directory=str(d)))
    return runs


@dataclasses.dataclass
class Results:
    """What a notebook needs: the metrics, the runs, and where their predictions are."""

    rows: list[scoring.MetricRow]
    runs: list[RunInfo]
    table: metric_stats.MetricTable


def _is_remote(path: epath.Path) -> bool:
    return "://" in str(path)


def local_copy(path: epath.PathLike) -> epath.Path:
    """A local file or directory with the contents of `path` (itself when it is already local).

    The predictions and metrics readers use the local file system; a bucket is read by copying
    the few files needed into a temporary directory first.
    """
    path = epath.Path(path)
    if not _is_remote(path):
        return path
    target = epath.Path(tempfile.mkdtemp(prefix="softlabel_ood_")) / path.name
    if path.is_dir():
        target.mkdir()
        for child in path.iterdir():
            if child.is_file():
                child.copy(target / child.name)
    else:
        path.copy(target)
    return target


def _is_run_dir(path: epath.Path) -> bool:
    return (run_dir.predictions_path(path) / run_dir.MANIFEST).exists()


def load(path: epath.PathLike) -> Results:
    """Results from a reproduce workdir, its `report/` or `runs/` directory, or one run directory.

    Paths may be local or in a bucket (`gs://...`, via etils.epath). Metrics come from
    metrics.csv when there is one, else they are computed from the predictions. Run directories
    found next to a report give the histograms and ROC curves their predictions.
    """
    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    report_dir = path / "report" if (path / "report").is_dir() else path
    runs_dir = next((p for p in (path / "runs", path.parent / "runs", path) if p.is_dir() and (
        _is_run_dir(p) or any(_is_run_dir(c) for c in p.iterdir() if c.is_dir()))), None)
    run_dirs = []
    if runs_dir is not None:
        run_dirs = [runs_dir] if _is_run_dir(runs_dir) else sorted(
            c for c in runs_dir.iterdir() if c.is_dir() and _is_run_dir(c))

    runs_data = None
    if (report_dir / RUNS_FILE).exists():
        runs_data = _runs_file(report_dir / RUNS_FILE)
        runs = [RunInfo(**entry) for entry in runs_data["runs"]]
        where = {d.name: str(d) for d in run_dirs}
        runs = [dataclasses.replace(r, directory=where.get(r.run, "")) for r in runs]
    elif run_dirs:
        runs = runs_from_directories(run_dirs)
    else:
        raise FileNotFoundError(f"{path}: holds neither {RUNS_FILE} nor run directories with "
                                f"predictions")

    if (report_dir / "metrics.csv").exists():
        rows = scoring.read_metrics_csv(str(local_copy(report_dir / "metrics.csv")))
        if runs_data is not None:
            runs_json.check_matches_metrics(report_dir / RUNS_FILE, runs_data,
                                            report_dir / "metrics.csv", rows)
    else:
        rows = scoring.score_runs_report([str(local_copy(d)) for d in run_dirs]).rows
    return Results(rows=list(rows), runs=runs, table=metric_stats.MetricTable(rows))
