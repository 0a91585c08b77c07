"""The reproduction report: metrics.csv, report.md with its tables and claims, and PNG figures.

    write_report(rows, "<workdir>/report", runs=runs)

report.md opens with its answers and ends with its reference material, in this order (`SECTIONS`):
the Summary (one line per claim with the numbers that decided it, the claims figure and the α
sweep), the Claims with their rules and evidence (the paper's three; per group of OOD sets; and
S1, S2 on selective classification, `selective_claims`), the soft-label family's questions when
the runs hold a family method beyond ls (`family_claims`, `family_report`), the tables, the
other figures, then the Definitions, the Runs, the ODIN pairs and the Environment. No table is
wider than `tables.MAX_TABLE_COLUMNS`: wider ones are cut into several that repeat the row
labels.

Tables print percent (a metric's fraction times 100) as "mean ± std" over seeds; metrics.csv
keeps the fractions. How each number is computed is stated in report.md itself (see
`DEFINITIONS`), in `results` (aggregation over OOD sets and seeds) and in `claims` (the decision
rules), so that a reader of the report alone can tell what every number is.

This module orders the sections (`render`) and writes the directory (`write_report`); the parts
are `claims_text` (Summary and Claims), `report_tables`, `selective_report` (the ID side and the
OOD groups), `report_figures` (the PNG files) and `report_inputs` (what is read from the runs'
directories beside the metrics).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence

from etils import epath

from softlabel_ood import __version__, scoring
from softlabel_ood.analysis import (
    claims,
    claims_text,
    environment,
    family_claims,
    family_report,
    figures,
    report_figures,
    report_inputs,
    report_tables,
    results,
    selective_claims,
    selective_report,
)
from softlabel_ood.analysis.metric_stats import MetricTable
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.cli_errors import UserError
from softlabel_ood.scoring import metric_records
from softlabel_ood.workdir import atomic_files, trained_steps

# The `##` sections of report.md, in order (Claims and Figures only when there is something).
SECTIONS = ("Summary", "Claims", "The soft-label family", "Table 1. Label-smoothing sweep",
            "Table 1b. Selective classification", "Table 2. Teachers and students",
            "Table 3. All runs", "Figures", "Definitions", "Runs", "ODIN pairs", "Environment")

DEFINITIONS = """\
- **Units.** Every value in the tables is a percentage: the metric's fraction times 100.
  `metrics.csv` holds the fractions themselves.
- **Seeds.** A cell is `mean ± std` over the seeds of one grid entry: the arithmetic mean and the
  sample standard deviation (ddof = 1). With one seed only the value is printed. "–" means no
  value. The number of seeds per entry is in the Runs table.
- **Mean over OOD sets.** For one run, the unweighted mean of the metric over the OOD sets
  {oods}; then mean ± std of that per-run mean over seeds.
- **Metrics** (code: `softlabel_ood/scoring/metrics.py`; ID test set positive, label 1; OOD set
  negative, label 0; a score is higher for more in-distribution inputs):
  AUROC = area under the ROC curve (`roc_auc_score`);
  FPR95 = the fraction of OOD examples accepted at the highest threshold that accepts at least
  95% of the ID examples (`roc_curve(..., drop_intermediate=False)`, first point with TPR ≥ 0.95);
  AUPR-out = average precision with OOD as the positive class and −score as its score;
  accuracy = top-1 accuracy on the ID test set;
  ECE = expected calibration error of the top-label confidence with 15 equal-width bins over
  (0, 1], each bin weighted by its share of examples. ↑: higher is better; ↓: lower is better.
- **Selective classification** (code: `softlabel_ood/scoring/selective.py`; ID test set only,
  a score's ranking of the model's own predictions): AURC = the mean, over the coverages i/n,
  of the error rate among the i examples with the highest score (tied examples averaged over
  their orders); E-AURC = AURC minus r + (1 − r) ln(1 − r), a perfect ranking's AURC at the
  error rate r; error AUROC = AUROC of the score with the correct predictions as positives and
  the wrong ones as negatives.
- **Scores** (exact formulas: `softlabel_ood/scoring/scores.py`): `msp` maximum
  softmax probability; `max_logit` largest logit; `energy` logsumexp of the logits (T = 1);
  `entropy` negative entropy of the softmax; `pnorm` (MaxLogit-pNorm) the largest centred
  logit divided by the p-norm of the centred logits (p = 2 unless a run's `pnorm_p` says
  otherwise); `mahalanobis` negative smallest squared Mahalanobis
  distance to a class mean of the ID train features (shared covariance; the vanilla last-layer
  variant, OpenOOD's MDS); `knn` cosine similarity to the k-th most similar ID train feature
  minus 1 ({knn_k}: Sun et al.'s k = 50 for 50,000 training images, scaled to the ID train
  split's size, one neighbour per 1,000 examples, at least 1); `react` energy of the logits
  of the features clipped at the 90th percentile of the ID train activations (the original
  code takes it on ID validation data, which the project does not hold out); `vim` energy minus
  the scaled norm of the features' residual outside the principal subspace of the ID train
  features (`softlabel_ood/scoring/head_scores.py`); `odin` max softmax at temperature T of the
  input perturbed by ε, at the pair chosen on ID train data only (see "ODIN pairs" below).
  Feature scores are missing for runs saved without features, `react` and `vim` for runs saved
  without the classifier head, `odin` for runs saved without ODIN scores.
- **Runs.** α is `config.label_smoothing`: the label-smoothing factor of an ls run, and the mass
  on the incorrect classes of a kd_incorrect run. The LS sweep's α = 0 row is the ce run (label
  smoothing with α = 0 is cross-entropy with one-hot targets). A kd student minimises
  (1 − w)·CE(one-hot) + w·T²·KL(teacher_T ‖ student_T) with w = `kd.weight` and temperature
  T = `kd.temperature` (`softlabel_ood/training/soft_labels.py`); a kd_incorrect student's target
  keeps mass 1 − α on the true class and spreads α like softmax(teacher logits / T) over the
  incorrect classes. A student's teacher (and a fine-tuned run's starting point) is that grid
  entry's run with the same seed.
"""


NO_CLAIMS = ("None of the paper's claims applies: the runs are imported outputs, without a "
             "method of this package. Table 3 gives each name's mean ± std over its seeds; "
             "docs/scores_and_metrics.md compares two of them by the claims' paired rule.\n")


def render(table: MetricTable, runs: Sequence[RunInfo], *, title: str,
           scores: Sequence[str], rules: claims.ClaimRules,
           figure_files: Sequence[tuple[str, str]],
           groups: dict[str, tuple[str, ...]] | None = None,
           odin: Mapping[str, scoring.odin_selection.OdinChoice] | None = None,
           claim_results: Sequence[claims.ClaimResult] | None = None,
           knn_k: str | None = None,
           unfinished: Mapping[str, trained_steps.Checkpoint | None] | None = None,
           entropy: Mapping[str, float] | None = None) -> str:
    """report.md as a string, without its Environment section. `knn_k` says which k the knn
    score used (default: from the runs' predictions, `report_inputs.knn_k_text`); `unfinished`
    the runs whose predictions are not of their finished models (`report_inputs.unfinished_runs`),
    named in the Summary; `entropy` each run's mean ID-test softmax entropy, for the soft-label
    family's table."""
    if knn_k is None:
        knn_k = report_inputs.knn_k_text(runs)
    # The paper's claims and its sweep tables ask about its methods; a report over imported
    # outputs alone (`import_outputs`: runs without a method) gets its tables of runs only.
    paper = any(r.method for r in runs)
    if claim_results is None:
        claim_results = claims.evaluate_claims(table, runs, rules) if paper else []
    id_results = selective_claims.evaluate(table, runs, rules) if paper else []
    by_group = selective_report.group_claims(table, runs, rules, groups) if paper else {}
    family = family_claims.evaluate(table, runs, rules, selective_report.usable_groups(
        table, groups)) if family_claims.applies(runs) else []
    figure_md = {name: f"![{name}]({name})\n\n*{caption}*\n" for name, caption in figure_files}
    first = [name for name in (report_figures.CLAIMS_FIGURE, "alpha_sweep_auroc.png")
             if name in figure_md]
    out = [f"# {title}\n",
           f"Written by softlabel_ood {__version__} from {len(runs)} runs "
           f"({len(results.group_by_name(runs))} grid entries). "
           "`metrics.csv` in this directory holds every metric of every run as fractions; the "
           "tables print percent, mean ± std over seeds (Definitions, at the end).\n",
           "## Summary\n", claims_text.unfinished_markdown(unfinished or {})
           + (claims_text.summary_markdown(claim_results, rules) if paper else NO_CLAIMS)
           + (selective_report.group_summary_line(by_group) + "\n" if by_group else "")
           + "".join(selective_report.selective_summary_line(c) + "\n" for c in id_results)
           + ("\n" + family_report.summary_markdown(family, rules) if family else "")]
    out += [figure_md[name] for name in first]
    if paper:
        out += _claims_sections(table, runs, rules, scores, [*claim_results, *id_results],
                                by_group)
    if family:
        out += ["## The soft-label family\n", family_report.section_markdown(
            table, runs, family, selective_report.usable_groups(table, groups), entropy or {},
            figure_md.get(family_report.FIGURE, ""))]
    out += _table_sections(table, runs, rules, scores, groups) if paper else \
        _runs_table_section(table, runs, scores)
    rest = [name for name in figure_md if name not in (*first, family_report.FIGURE)]
    if rest:
        out.append("## Figures\n")
        out += [figure_md[name] for name in rest]
    out += _reference_sections(table, runs, scores, odin or {}, knn_k)
    return "\n".join(out)


def _claims_sections(table: MetricTable, runs: Sequence[RunInfo], rules: claims.ClaimRules,
                     scores: Sequence[str], claim_results: Sequence[claims.ClaimResult],
                     by_group: Mapping[str, Sequence[claims.ClaimResult]]) -> list[str]:
    """## Claims: every claim's rule and evidence, then claim 1 and S1 for every score and the
    claims on each group of OOD sets."""
    out = ["## Claims\n", claims_text.claims_markdown(claim_results, rules),
           "### Claim 1 for every score\n",
           f"Does label smoothing hurt detection for every score, or only for the softmax? "
           f"Claim 1's rule above, unchanged, applied with each score in place of "
           f"{rules.score} (A = that score's "
           f"{metric_records.label(rules.metric)} averaged over the OOD "
           f"sets; ρ and the paired A(0) − A(α_max) in points, as in the rule).\n",
           claims_text.claim1_by_score_markdown(table, runs, rules, scores)]
    if by_group:
        out += ["### The claims on each group of OOD sets\n",
                "The three rules above, unchanged, with A averaged over the OOD sets of one group "
                "(config.ood_groups) instead of all of them.\n",
                selective_report.group_claims_markdown(by_group)]
    out += ["### S1 for every score\n",
            "S1's rule with each score's AURC in place of msp's (R = that score's AURC on the ID "
            "test set, in points).\n",
            selective_report.aurc_trend_by_score_markdown(table, runs, rules, scores)]
    return out


def _table_sections(table: MetricTable, runs: Sequence[RunInfo], rules: claims.ClaimRules,
                    scores: Sequence[str], groups: dict[str, tuple[str, ...]] | None) -> list[str]:
    """Tables 1 (with one per score and one per OOD set), 1b, 2 and 3, each with its caption."""
    out = ["## Table 1. Label-smoothing sweep\n",
           "Rows: α (0 = the ce run). One table per OOD metric, averaged over the OOD sets, with "
           "a column per score; the first also gives ID test accuracy and ECE.\n",
           report_tables.table1_markdown(table, runs, scores=scores)]
    grouped = {g: m for g, m in (groups or {}).items() if set(m) & set(table.ood_sets)}
    group_text = ("; then AUROC averaged over the OOD sets of each group: " + "; ".join(
        f"{g} = {', '.join(f'`{o}`' for o in m if o in table.ood_sets)}"
        for g, m in grouped.items())) if grouped else ""
    for score in scores:
        out += [f"### Table 1, score `{score}`\n",
                f"Rows: α. Columns: ID test accuracy and ECE, {score} AUROC, FPR95 and AUPR-out "
                f"averaged over the OOD sets{group_text}.\n",
                report_tables.sweep_by_score_markdown(table, runs, score, groups=grouped)]
    for ood in table.all_ood_sets:
        out += [f"### Table 1, OOD set `{ood}`\n",
                report_tables.ood_table_markdown(table, runs, ood, scores=scores)]
    out += ["## Table 1b. Selective classification\n",
            "Rows: α (0 = the ce run). Columns: ID test accuracy, then for msp and for pnorm "
            "(MaxLogit-pNorm) the area under the risk-coverage curve (AURC), its excess over a "
            "perfect ranking (E-AURC) and the AUROC of telling right from wrong predictions "
            "(error AUROC), all on the ID test set.\n",
            selective_report.selective_table_markdown(table, runs)]
    out += ["## Table 2. Teachers and students\n",
            f"Rows: the teacher of the kd and kd_incorrect students. Columns: ID test accuracy and "
            f"{rules.score} AUROC and FPR95 averaged over the OOD sets, for the teacher, its kd "
            f"student and its kd_incorrect student (– where the grid has no such student).\n",
            report_tables.table2_markdown(table, runs, score=rules.score)]
    return out + _runs_table_section(table, runs, scores)


def _runs_table_section(table: MetricTable, runs: Sequence[RunInfo],
                        scores: Sequence[str]) -> list[str]:
    return ["## Table 3. All runs\n",
            "Rows: grid entries, with their method. Columns: ID test accuracy and ECE, then AUROC "
            "averaged over the OOD sets for each score.\n",
            report_tables.table3_markdown(table, runs, scores=scores)]


def _reference_sections(table: MetricTable, runs: Sequence[RunInfo], scores: Sequence[str],
                        odin: Mapping[str, scoring.odin_selection.OdinChoice],
                        knn_k: str) -> list[str]:
    """The Definitions, the Runs and (when the odin score is reported) the ODIN pairs."""
    oods = ", ".join(f"`{o}`" for o in table.ood_sets) or "(none)"
    out = ["## Definitions\n", DEFINITIONS.format(oods=oods, knn_k=knn_k)]
    left_out = [o for o in table.all_ood_sets if o not in table.ood_sets]
    if left_out:
        out.append(f"OOD sets not scored for every run, left out of the means: "
                   f"{', '.join(left_out)}.\n")
    out += ["## Runs\n", report_tables.runs_markdown(runs)]
    odin_text = report_tables.odin_pairs_markdown(odin) if "odin" in scores else ""
    if odin_text:
        out += ["## ODIN pairs\n", odin_text]
    return out


class ReportDirectoryError(UserError):
    """The report directory holds files that the report does not write."""


def _report_writes(name: str) -> bool:
    return name in ("report.md", results.RUNS_FILE, *scoring.metrics_files.METRICS_FILES) \
        or name.endswith(".png")


def check_out_dir(out_dir: epath.PathLike) -> None:
    """ReportDirectoryError if `out_dir` holds files that `write_report` does not write: it
    replaces the directory as a whole, and would take them away with the old one; so is a file
    at `out_dir`."""
    if "://" not in str(out_dir):
        atomic_files.refuse_file(out_dir, "a report directory")
    entry = None if "://" in str(out_dir) else atomic_files.foreign_entry(out_dir, _report_writes)
    if entry is not None:
        raise ReportDirectoryError(f"{out_dir} holds {entry!r}, which the report does not write "
                                   "(it replaces the directory as a whole); move it elsewhere")


def write_report(rows: Sequence[scoring.MetricRow], out_dir: epath.PathLike, **options) -> None:
    """Writes the report's files (`_write_report_files`, which says what `options` are) into a
    new directory that replaces `out_dir` in one rename (`atomic_files.replacing_directory`):
    a reader, a kill or a full disk sees the whole old report or the whole new one, never a
    new metrics.csv beside an old report.md. On a bucket, which has no rename, the files are
    uploaded one by one."""
    if "://" in str(out_dir):
        _write_report_files(rows, out_dir, **options)
        return
    check_out_dir(out_dir)
    with atomic_files.replacing_directory(out_dir) as new:
        _write_report_files(rows, new, **options)


def _write_report_files(rows: Sequence[scoring.MetricRow], out_dir: epath.PathLike, *,
                        runs: Sequence[RunInfo], title: str = "Soft labels and OOD detection: "
                        "reproduction report", scores: Sequence[str] | None = None,
                        focus_ood: str | None = None, rules: claims.ClaimRules | None = None,
                        groups: dict[str, tuple[str, ...]] | None = None,
                        odin: Mapping[str, scoring.odin_selection.OdinChoice] | None = None,
                        environment_of_runs: dict[str, str] | None = None,
                        figures_from: epath.PathLike | None = None, dataset: str | None = None,
                        training: dict[str, str] | None = None, knn_k: str | None = None,
                        unfinished: Mapping[str, trained_steps.Checkpoint | None] | None = None,
                        entropy: Mapping[str, float] | None = None) -> None:
    """Writes metrics.csv (+ metrics.md), runs.json, the PNG figures and, last, report.md.

    `runs` says which run is which (`results.RunInfo`); histograms and ROC curves need each
    run's `directory` and are left out for runs without one (or copied from `figures_from`, the
    directory of an earlier report of the same runs). `focus_ood` picks the OOD set of those two
    figures (default: `report_figures.default_focus_ood`). `groups` ({group: OOD sets}) adds
    group means to the tables (default: the `ood_groups` stored with the runs); `dataset` names
    the ID dataset in the figures' titles (default: the one in the runs' predictions); `odin`
    the pair each run's odin score used (default: chosen from the runs' predictions). runs.json
    records these beside the runs, so that `rebuild.rebuild_report` can write the report again
    from this directory alone. `environment_of_runs` is the environment recorded by the report
    that first scored these runs (a rebuilt report keeps it); default: this process's, with
    `training` ({what: how}, e.g. how the grid chose its population size) added. `unfinished`
    names the runs whose predictions are not of their finished models, marked in the Summary
    and metrics.md (default: from the runs' predictions); `entropy` each run's mean ID-test
    softmax entropy, for the soft-label family (`family_entropies`). Defaults: `report_inputs`."""
    rules = rules or claims.ClaimRules()
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _described(MetricTable(rows), runs)
    groups = report_inputs.run_groups(runs) if groups is None else groups
    dataset = figures.dataset_of(runs) if dataset is None else dataset
    odin = report_inputs.odin_choices(runs) if odin is None else odin
    unfinished = report_inputs.unfinished_runs(runs) if unfinished is None else unfinished
    entropy = report_inputs.family_entropies(runs) if entropy is None else entropy
    _write_metrics(rows, out_dir, dict.fromkeys(table.runs, groups) if groups else {}, unfinished)
    env = environment_of_runs or {**environment.describe(), **(training or {})}
    knn_k = report_inputs.knn_k_text(runs) if knn_k is None else knn_k
    record = results.ReportRecord(title=title, dataset=dataset, ood_groups=dict(groups),
                                  odin_pairs=dict(odin), knn_k=knn_k, unfinished=dict(unfinished),
                                  id_entropy=dict(entropy))
    results.write_runs_json([dataclasses.replace(r, directory="") for r in runs],
                            out_dir / results.RUNS_FILE, environment=env, report=record)
    scores = report_tables.scores_of(table, scores)
    if focus_ood is None:
        focus_ood = report_figures.default_focus_ood(table, runs, rules.score)
    claim_results = claims.evaluate_claims(table, runs, rules)
    figure_files = report_figures.write_figures(
        table, runs, out_dir, scores=scores, focus_ood=focus_ood, rules=rules,
        claim_results=claim_results, dataset=dataset, entropy=entropy,
        figures_from=None if figures_from is None else epath.Path(figures_from))
    text = render(table, runs, title=title, scores=scores, rules=rules, figure_files=figure_files,
                  groups=groups, odin=odin, claim_results=claim_results, knn_k=knn_k,
                  unfinished=unfinished, entropy=entropy)
    text += "\n" + environment.markdown(
        env, rebuilt_by=None if environment_of_runs is None else __version__)
    atomic_files.write_text_atomically(out_dir / "report.md", text)


def _described(table: MetricTable, runs: Sequence[RunInfo]) -> MetricTable:
    """`table`, once every run it names is one of `runs` (ValueError otherwise)."""
    unknown = sorted(set(table.runs) - {r.run for r in runs})
    if unknown:
        raise ValueError(f"metrics name runs that `runs` does not describe: {', '.join(unknown)}")
    return table


def _write_metrics(rows: Sequence[scoring.MetricRow], out_dir: epath.Path,
                   groups: Mapping[str, Mapping[str, tuple[str, ...]]],
                   unfinished: Mapping[str, trained_steps.Checkpoint | None]) -> None:
    """metrics.csv and metrics.md (`scoring.write_metrics`); into a bucket through a local
    temporary directory."""
    if "://" not in str(out_dir):
        scoring.write_metrics(rows, str(out_dir), groups=groups, unfinished=unfinished)
        return
    with tempfile.TemporaryDirectory() as tmp:
        scoring.write_metrics(rows, tmp, groups=groups, unfinished=unfinished)
        for name in ("metrics.csv", "metrics.md"):
            if (epath.Path(tmp) / name).exists():
                (epath.Path(tmp) / name).copy(out_dir / name, overwrite=True)
