"""Markdown tables for the report, never wider than a screen or a GitHub page."""

from __future__ import annotations

from collections.abc import Sequence

# Wider tables do not fit a screen or a GitHub page; `md_table` cuts them.
MAX_TABLE_COLUMNS = 12


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, keep: int = 1) -> str:
    """A markdown table; one wider than MAX_TABLE_COLUMNS is cut into several, each repeating
    the first `keep` columns (the row labels)."""
    if not rows:
        return "*(This grid has no runs for this table.)*\n"
    width = MAX_TABLE_COLUMNS - keep
    starts = range(keep, max(len(header), keep + 1), width)
    tables = []
    for start in starts:
        columns = [*range(keep), *range(start, min(start + width, len(header)))]
        lines = ["| " + " | ".join(header[i] for i in columns) + " |",
                 "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(row[i] for i in columns) + " |" for row in rows]
        tables.append("\n".join(lines) + "\n")
    return "\n".join(tables)
