"""Quality bars of the demo model, and recording a run's results in the model card.

The numbers in ``metadata.json`` (``eval_metrics``) and in the table of the bundle's
``docs/README.md`` are written from an evaluation report by :func:`record_results`, never
typed by hand: the run that produced them is named beside them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.io import atomic_path, write_json

CARD_START = "<!-- results:start (written by liver-tumor record; do not edit) -->"
CARD_END = "<!-- results:end -->"


@dataclass(frozen=True)
class Bar:
    """One quality bar: a measured value against its target (higher is better)."""

    name: str
    value: float | None
    target: float

    @property
    def passed(self) -> bool:
        """True when the value reaches the target."""
        return self.value is not None and self.value >= self.target


def lesion_recall(
    summary: Mapping[str, Any], bins: tuple[str, ...] = ("10-20mm", ">20mm")
) -> float | None:
    """Recall of reference lesions in ``bins`` detected with IoU > 0.5 (LiTS criterion).

    Returns None when the bins hold no reference lesion.
    """
    by_size = summary["lesions"]["by_size"]
    n_ref = sum(int(by_size[b]["n_ref"]) for b in bins)
    detected = sum(int(by_size[b]["tp_iou"]) for b in bins)
    return detected / n_ref if n_ref else None


def quality_bars(summary: Mapping[str, Any]) -> list[Bar]:
    """The demo's three bars (issue: liver 0.95, tumour 0.70, lesion recall >= 10 mm 0.80)."""
    return [
        Bar("liver Dice per case", summary["liver"]["dice"]["mean"], 0.95),
        Bar("tumour Dice per case", summary["tumour"]["dice"]["mean"], 0.70),
        Bar("lesion recall >= 10 mm (IoU > 0.5)", lesion_recall(summary), 0.80),
    ]


def format_bars(bars: list[Bar]) -> str:
    """One line per bar: value, target, PASS / FAIL."""
    lines = []
    for bar in bars:
        value = "n/a" if bar.value is None else f"{bar.value:.3f}"
        lines.append(
            f"{bar.name:<38} {value:>6}  (bar {bar.target:.2f})  {'PASS' if bar.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def eval_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures that go into ``metadata.json`` ``eval_metrics``."""

    def rounded(value: Any) -> float | None:
        return None if value is None else round(float(value), 4)

    return {
        "liver_dice_per_case": rounded(summary["liver"]["dice"]["mean"]),
        "liver_dice_global": rounded(summary["liver"]["dice_global"]),
        "tumour_dice_per_case": rounded(summary["tumour"]["dice"]["mean"]),
        "tumour_dice_global": rounded(summary["tumour"]["dice_global"]),
        "lesion_recall_10mm_iou50": rounded(lesion_recall(summary)),
        "n_cases": int(summary["n_cases"]),
    }


def _card_table(summary: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    rows = [
        "| measure | value | bar |",
        "|---|---|---|",
    ]
    for bar in quality_bars(summary):
        value = "n/a" if bar.value is None else f"{bar.value:.3f}"
        rows.append(
            f"| {bar.name} | {value} | {bar.target:.2f} ({'met' if bar.passed else 'not met'}) |"
        )
    rows.append(f"| liver Dice global | {summary['liver']['dice_global']:.3f} | |")
    rows.append(f"| tumour Dice global | {summary['tumour']['dice_global']:.3f} | |")
    facts = ", ".join(f"{k}: {v}" for k, v in run.items())
    return "\n".join([*rows, "", f"Measured on {summary['n_cases']} held-out cases; {facts}."])


def record_results(
    report_dir: str | os.PathLike,
    metadata_path: str | os.PathLike | None = None,
    card_path: str | os.PathLike | None = None,
    run: Mapping[str, Any] | None = None,
) -> list[Bar]:
    """Write a report's figures into ``metadata.json`` and the model card's table.

    Args:
        report_dir: an evaluation report folder (its ``summary.json``).
        metadata_path: the bundle's metadata.json (``eval_metrics`` is replaced).
        card_path: the bundle's docs/README.md; the text between the results markers is
            replaced (the markers must be there).
        run: facts about the run to print beside the figures (date, budget, wall time...).

    Returns:
        The quality bars of the report.
    """
    summary = json.loads((Path(report_dir) / "summary.json").read_text())
    run = dict(run or {})
    if metadata_path is not None:
        metadata = json.loads(Path(metadata_path).read_text())
        metadata["eval_metrics"] = {**eval_metrics(summary), "run": run}
        write_json(metadata, metadata_path)
    if card_path is not None:
        text = Path(card_path).read_text()
        if CARD_START not in text or CARD_END not in text:
            raise ValueError(f"{card_path}: results markers not found ({CARD_START!r})")
        head, rest = text.split(CARD_START, 1)
        _, tail = rest.split(CARD_END, 1)
        with atomic_path(card_path, suffix=".md") as tmp:
            tmp.write_text(f"{head}{CARD_START}\n{_card_table(summary, run)}\n{CARD_END}{tail}")
    return quality_bars(summary)
