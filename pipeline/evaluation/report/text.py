"""The text forms of an evaluation report: ``summary.md`` and the terminal's class table.

Split from :mod:`pipeline.evaluation.report.pages` (the HTML page), whose ``class_table`` and
``lesion_table`` both render.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.evaluation.report.model import EMPTY_CASE_POLICY
from pipeline.evaluation.report.pages import class_table, fmt, lesion_table

__all__ = ["format_class_table", "render_markdown"]


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(summary: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The text of ``summary.md`` from ``summary.json`` and ``cases.json`` contents."""
    burden = summary["burden"]["abs_error"]
    prov = data["provenance"]
    parts = [
        "# Liver / liver-tumour evaluation",
        f"{summary['n_cases']} cases scored, {summary['n_failed']} failed, "
        f"{summary['n_missing']} missing. Liver = label >= 1, tumour = label 2.",
        "## Per class",
        _markdown_table(*class_table(summary)),
        f"Empty-case policy: {EMPTY_CASE_POLICY}",
        "## Lesion detection",
        _markdown_table(*lesion_table(summary)),
        "## Tumour burden",
        f"Absolute error of tumour / liver volume: mean {fmt(burden['mean'], 4)}, "
        f"median {fmt(burden['median'], 4)} (n={burden['n']}).",
    ]
    for key, title in (("failures", "Failed cases"), ("missing", "Missing cases (not scored)")):
        if data[key]:
            parts.append(f"## {title}")
            # Reasons can span lines (grid mismatches print both affines): keep one bullet.
            parts.append(
                "\n".join(f"- `{c['case_id']}`: {' '.join(c['reason'].split())}" for c in data[key])
            )
    parts.append("## Provenance")
    lines = [f"- {k}: {v}" for k, v in prov.items() if not isinstance(v, (dict, list))]
    lines += [
        f"- config: {c.get('path')} (SHA-256 {c.get('sha256')})" for c in prov.get("configs", [])
    ]
    packages = prov.get("packages", {})
    lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()))
    parts.append("\n".join(lines))
    parts.append("Full report: report.html; per-case metrics: metrics_per_case.csv.")
    return "\n\n".join(parts) + "\n"


def format_class_table(summary: dict[str, Any]) -> str:
    """The per-class table as aligned plain text, for a terminal."""
    header, rows = class_table(summary, pm="+-")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines)
