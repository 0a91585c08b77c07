"""Writes a report again from a report directory alone: its metrics.csv and runs.json.

    python -m softlabel_ood.analysis.rebuild <report_dir> --out=<new_dir>

The runs are not needed, so a report whose runs are gone (or took hours to train) can take the
current report's layout: metrics.csv is read and written back byte for byte, and the tables,
claims and α-sweep figures are computed from it as `reproduce` computes them. What metrics.csv
does not hold comes from runs.json's "report" record (`results.ReportRecord`: title, dataset,
OOD groups, ODIN pairs) and its environment, which stays the one that scored the runs. The
figures drawn from predictions (MSP histograms, ROC and risk-coverage curves) are drawn again
when the run directories lie next to the report (`<workdir>/report` beside `<workdir>/runs`),
else copied.

Reports written before runs.json held that record keep it in their report.md, which is read for
it instead: the title, the ODIN pairs table and the sentence that names the OOD groups.

Both files are checked as they are read (`scoring.read_metrics_csv`, `runs_json`): a file edited
by hand is refused in one line naming the file and the row or field, before --out is touched.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from etils import epath

from softlabel_ood import cli_errors, scoring
from softlabel_ood.analysis import report, results


class RebuildError(cli_errors.UserError):
    """A report directory that cannot be rebuilt as asked."""


def _old_section(text: str, heading: str) -> list[str]:
    """The lines of report.md's section `heading` (any level), up to the next heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return lines[start + 1:end]


_ODIN_ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]*) \|$")
_GROUPS = re.compile(r"then AUROC averaged over the OOD sets of each group: (.+)\.$")


def record_from_old_report(text: str) -> results.ReportRecord:
    """The report record of a report.md written before runs.json held it."""
    first = text.splitlines()[0] if text else ""
    title = first[2:].strip() if first.startswith("# ") else ""
    # Earlier reports were titled "... on <dataset>: reproduction report" by `reproduce`.
    found = re.search(r" on (\S+): reproduction report$", title)
    odin = {}
    for line in _old_section(text, "ODIN pairs"):
        row = _ODIN_ROW.match(line)
        if row and row.group(2).strip() != "T":
            run, temperature, epsilon, means = row.groups()
            odin[run] = scoring.odin_selection.OdinChoice(
                index=-1,  # the column is not printed in report.md; nothing here reads it
                temperature=float(temperature), epsilon=float(epsilon),
                id_train_means=tuple(float(m) / 100 for m in means.split(",") if m.strip()))
    groups = {}
    sentence = next((m for line in text.splitlines() if (m := _GROUPS.search(line))), None)
    if sentence:
        for part in sentence.group(1).split("; "):
            name, _, members = part.partition(" = ")
            groups[name] = tuple(m.strip().strip("`") for m in members.split(","))
    return results.ReportRecord(title=title, dataset=found.group(1) if found else "",
                                ood_groups=groups, odin_pairs=odin)


def rebuild_report(report_dir: epath.PathLike, out_dir: epath.PathLike) -> None:
    """Writes the report of `report_dir` (metrics.csv, runs.json) into `out_dir`, a new place.

    metrics.csv comes out byte-identical; report.md, runs.json and the figures are those of the
    current version. `out_dir` must differ from `report_dir`: a report directory may hold other
    files (a README) that a new report would not carry over.
    """
    source, target = epath.Path(report_dir), epath.Path(out_dir)
    runs_file = source / results.RUNS_FILE
    if not (source / "metrics.csv").exists() or not runs_file.exists():
        raise RebuildError(f"{source}: a report directory holds metrics.csv and "
                           f"{results.RUNS_FILE}; this one lacks "
                           + " and ".join(n for n in ("metrics.csv", results.RUNS_FILE)
                                          if not (source / n).exists()))
    if "://" not in str(source) and target.exists() and target.resolve() == source.resolve():
        raise RebuildError(f"--out={target}: is the report directory itself; write the new "
                           f"report elsewhere and copy the files you want")
    try:  # before anything is read: --out is replaced as a whole
        report.check_out_dir(target)
    except cli_errors.UserError as e:
        raise RebuildError(f"--out: {e}") from None
    loaded = results.load(source)
    record = results.read_report_record(runs_file)
    if record is None:
        old = source / "report.md"
        record = record_from_old_report(old.read_text() if old.exists() else "")
    report.write_report(
        loaded.rows, target, runs=loaded.runs,
        title=record.title or "Soft labels and OOD detection: reproduction report",
        groups=record.ood_groups, dataset=record.dataset, odin=record.odin_pairs,
        knn_k=record.knn_k, unfinished=record.unfinished, entropy=record.id_entropy,
        environment_of_runs=results.read_environment(runs_file), figures_from=source)


@cli_errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = cli_errors.ArgumentParser(
        prog="python -m softlabel_ood.analysis.rebuild",
        description="Write a report again from its metrics.csv and runs.json, without the runs.")
    parser.add_argument("report_dir", help="a report directory (metrics.csv, runs.json)")
    parser.add_argument("--out", required=True, help="where to write the new report")
    args = parser.parse_args(argv)
    rebuild_report(args.report_dir, args.out)
    print(f"report: {epath.Path(args.out) / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
