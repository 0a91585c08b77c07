"""The report's pieces on the soft-label family (`family_claims`): one Summary line per method,
the section with the rules and a table with one row per entry, and the entropy figure's caption.

Each function returns markdown; `report.py` places them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from softlabel_ood import methods
from softlabel_ood.analysis import family_claims, metric_stats, results, selective_claims
from softlabel_ood.analysis.claims import ClaimRules
from softlabel_ood.analysis.family_claims import EntryVerdicts
from softlabel_ood.analysis.metric_stats import MetricTable, Stat
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.analysis.tables import md_table
from softlabel_ood.scoring import metric_records

FIGURE = "family_entropy.png"
FIGURE_CAPTION = ("Each run's mean softmax entropy on the ID test set (nats; how soft the model "
                  "became) against its msp AUROC (%, mean over the OOD sets), one colour per "
                  "method; the ce runs are the black stars.")


def strength_text(run: RunInfo) -> str:
    """`a = 0.2`: the symbol of the method's strength and its value, "" without one."""
    record = methods.BY_NAME.get(run.method)
    if record is None or not record.strength:
        return ""
    return f"{methods.hyperparameters()[record.strength].label} = {run.strength:g}"


def _f1_text(v: EntryVerdicts) -> str:
    groups = ", ".join(f"{g} {c.verdict}" for g, c in v.f1_groups.items())
    return v.f1.verdict + (f" ({groups})" if groups else "")


def summary_markdown(verdicts: Sequence[EntryVerdicts], rules: ClaimRules) -> str:
    """The Summary's lines on the family: one per method, each entry's F1-F3 with F1's numbers."""
    if not verdicts:
        return ""
    by_method: dict[str, list[EntryVerdicts]] = {}
    for v in verdicts:
        by_method.setdefault(v.method, []).append(v)
    lines = []
    for method, entries in by_method.items():
        parts = []
        for v in entries:
            drop = v.f1.comparisons[0][1].brief() if v.f1.comparisons else "–"
            lost = v.f1.numbers.get("accuracy_drop", 0.0)
            accuracy = (f"; accuracy {100 * lost:.2f} points below ce's, more than "
                        f"{100 * rules.accuracy_margin:g}" if lost > rules.accuracy_margin else "")
            parts.append(f"`{v.entry}` ({strength_text(v.runs[0])}): F1 **{_f1_text(v)}** "
                         f"(msp AUROC ce − m = {drop}{accuracy}), F2 **{v.f2.verdict}**, "
                         f"F3 **{v.f3.verdict}**")
        lines.append(f"- **{method}**: " + "; ".join(parts) + ".")
    return (f"The soft-label family against ce, paired by seed by the same rule (F1: "
            f"{family_claims.HEADLINES['F1']}; F2: {family_claims.HEADLINES['F2']}; F3: "
            f"{family_claims.HEADLINES['F3']}; every entry of a method decided, its default "
            f"first; rules in The soft-label family below):\n\n" + "\n".join(lines) + "\n")


def _cell(stat: Stat) -> str:
    return metric_stats.format_stat(stat)


def _auroc_columns(table: MetricTable, group: Sequence[RunInfo],
                   groups: Mapping[str, Sequence[str]]) -> list[str]:
    """msp and pnorm AUROC: over all OOD sets, then over each group's."""
    cells = []
    for score in ("msp", selective_claims.FIX_SCORE):
        cells.append(_cell(metric_stats.ood_mean_stat(table, group, score, "auroc")))
        cells += [_cell(metric_stats.ood_group_mean_stat(table, group, score, "auroc", m))
                  for m in groups.values()]
    return cells


def table_markdown(table: MetricTable, runs: Sequence[RunInfo],
                   verdicts: Sequence[EntryVerdicts], groups: Mapping[str, Sequence[str]],
                   entropy: Mapping[str, float]) -> str:
    """Rows: ce, then each family entry; columns: accuracy, mean ID entropy, msp and pnorm
    AUROC (all OOD sets and each group), msp and pnorm AURC, and the entry's verdicts."""
    auroc = metric_records.header("auroc")
    header = ["entry", metric_records.header("accuracy"), "entropy (nats)"]
    for score in ("msp", selective_claims.FIX_SCORE):
        header += [f"`{score}` {auroc}"] + [f"`{score}` {auroc} {g}" for g in groups]
    header += [f"`{s}` {metric_records.header('aurc')}" for s in ("msp", "pnorm")]
    header += ["F1", "F2", "F3"]
    ce = dict(results.ls_sweep(runs)).get(0.0)
    rows = []
    for group, v in [(ce, None)] * bool(ce) + [(v.runs, v) for v in verdicts]:
        label = f"`{group[0].entry}`" + (f" ({strength_text(group[0])})"
                                         if strength_text(group[0]) else "")
        known = [entropy[r.run] for r in group if r.run in entropy]
        row = [label, _cell(metric_stats.id_stat(table, group, "accuracy")),
               metric_stats.format_stat(Stat(tuple(known)), scale=1.0, digits=3)]
        row += _auroc_columns(table, group, groups)
        row += [_cell(metric_stats.stat(group, lambda run, s=s: table.value(run, "aurc", s)))
                for s in ("msp", "pnorm")]
        row += ["(reference)"] * 3 if v is None else [_f1_text(v), v.f2.verdict, v.f3.verdict]
        rows.append(row)
    return md_table(header, rows)


def _strengths_line(verdicts: Sequence[EntryVerdicts]) -> str:
    """What each row label's symbol is: the config field of its method's strength."""
    fields = {}
    for v in verdicts:
        record = methods.BY_NAME.get(v.method)
        if record is not None and record.strength:
            h = methods.hyperparameters()[record.strength]
            fields.setdefault(v.method, f"{h.label} = `{h.field}`")
    return ("Row labels: the grid entry and its method's strength (" +
            "; ".join(f"{m}: {f}" for m, f in fields.items()) +
            "; DESIGN.md §7); a suffix `_<field><value>` sets another of its fields.\n"
            if fields else "")


def section_markdown(table: MetricTable, runs: Sequence[RunInfo],
                     verdicts: Sequence[EntryVerdicts], groups: Mapping[str, Sequence[str]],
                     entropy: Mapping[str, float], figure: str = "") -> str:
    """The section: what is asked, the table, `figure` (its markdown), then the rules and each
    entry's evidence."""
    out = ["Does softening the target or the confidence hurt OOD detection, and does post-hoc "
           "normalisation (pnorm) undo it? Each entry of a family method m is compared with the "
           "ce run, paired by seed, by the rule of the claims above (a difference counts when "
           "its mean is beyond the noise threshold with every seed agreeing). Every entry is "
           "decided, a method's default setting first, then its stronger one. Rows: ce (the "
           "reference), then the entries; columns: ID test accuracy, the mean softmax entropy "
           "on the ID test set (nats; ln K is uniform), msp and pnorm AUROC averaged over the "
           "OOD sets (and over each group's), msp and pnorm AURC, and the verdicts (F1 per "
           "group in brackets).\n",
           _strengths_line(verdicts), table_markdown(table, runs, verdicts, groups, entropy)]
    out += [figure] if figure else []
    if verdicts:
        first = verdicts[0]
        for c in (first.f1, first.f2, first.f3):
            out.append(f"**{c.number}** ({c.statement}). Rule: {c.rule}\n")
    for v in verdicts:
        out.append(f"### `{v.entry}` ({v.method}, {strength_text(v.runs[0]) or 'no strength'})"
                   f"\n")
        lines = [f"{c.number}{f' ({g})' if g else ''} **{c.verdict}**: {'; '.join(c.evidence)}"
                 for g, c in [("", v.f1), *v.f1_groups.items(), ("", v.f2), ("", v.f3)]]
        out.append("\n".join(f"- {line}" for line in lines) + "\n")
    return "\n".join(out)
