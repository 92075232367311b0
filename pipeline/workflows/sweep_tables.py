"""The sweep's tables: ``sweep.csv`` (every column) and ``sweep.md`` (the published view)."""

from __future__ import annotations

import csv
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.workflows.sweep_grid import format_value

METRIC_COLUMNS = (
    "liver_dice", "tumour_dice", "mean_dice", "liver_iou", "tumour_iou",
    "liver_dice_global", "tumour_dice_global", "train_val_mean_dice", "params",
    "train_seconds", "seconds_per_epoch", "epochs_run", "peak_memory_mb", "eval_seconds",
    "n_val_cases",
)  # fmt: skip
TAIL_COLUMNS = ("status", "error", "point")


def format_cell(value: Any, digits: int) -> str:
    """A metric as a table cell: ``digits`` decimals for floats, empty when missing or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def best_index(results: Sequence[Mapping[str, Any]]) -> int | None:
    """Index of the successful point with the highest mean Dice (the first on ties)."""
    scored = [
        (r["mean_dice"], -i)
        for i, r in enumerate(results)
        if r.get("status") == "ok"
        and r.get("mean_dice") is not None
        and math.isfinite(r["mean_dice"])
    ]
    return -max(scored)[1] if scored else None


def write_tables(out: Path, keys: Sequence[str], results: Sequence[Mapping[str, Any]]) -> None:
    """Write ``sweep.csv`` (every column) and ``sweep.md`` (the published-table view)."""
    from pipeline.io import atomic_path

    columns = [*keys, *METRIC_COLUMNS, *TAIL_COLUMNS]
    with atomic_path(out / "sweep.csv", suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for r in results:
                row = {k: format_value(r["values"][k]) for k in keys}
                row.update({k: format_cell(r.get(k), 6) for k in METRIC_COLUMNS})
                writer.writerow({**row, **{k: r.get(k, "") for k in TAIL_COLUMNS}})
    with atomic_path(out / "sweep.md", suffix=".md") as tmp:
        tmp.write_text(markdown_table(keys, results))


def markdown_table(keys: Sequence[str], results: Sequence[Mapping[str, Any]]) -> str:
    """The sweep as Markdown: one row per point, the best mean Dice in bold, then notes."""
    header = [*keys, "Liver Dice", "Tumour Dice", "Mean Dice", "Liver IoU", "Tumour IoU",
              "Params (M)", "Train (s)", "s / epoch", "Peak memory (MB)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---:|" * 9]
    best = best_index(results)
    for i, r in enumerate(results):
        cells = [format_value(r["values"][k]) for k in keys]
        if r.get("status") == "ok":
            cells += [format_cell(r.get(k), 3) for k in METRIC_COLUMNS[:5]]
        else:
            cells += ["failed (see below)", "", "", "", ""]
        params = r.get("params")
        cells += [
            f"{params / 1e6:.3g}" if params else "",
            format_cell(r.get("train_seconds"), 0),
            format_cell(r.get("seconds_per_epoch"), 1),
            format_cell(r.get("peak_memory_mb"), 0),
        ]
        if i == best:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_notes(keys, results)]
    return "# Hyper-parameter sweep\n\n" + "\n".join(lines) + "\n"


def _notes(keys: Sequence[str], results: Sequence[Mapping[str, Any]]) -> list[str]:
    import torch

    first = next((r for r in results if r.get("described")), {})
    described = {k: v for k, v in first.get("described", {}).items() if k not in keys}
    data = described.pop("dataset_dir", None) or "the synthetic default data set"
    configs = ", ".join(Path(f).name for f in first.get("config", {}).get("config_files", []))
    fixed = ", ".join(f"{k} {format_value(v)}" for k, v in described.items())
    n_cases = {r.get("n_val_cases") for r in results if r.get("status") == "ok"}
    notes = [
        f"Bold: the best mean Dice. Dice and IoU: per-case means over the validation split "
        f"(n = {'/'.join(str(n) for n in sorted(n_cases)) or '?'}) on the scans' own grids "
        "after the inference post-processing; liver = label >= 1, tumour = label 2 (both "
        "empty scores 1). Train (s): wall time of the training process (start-up and data "
        "caching included); s / epoch: training clock of metrics.csv (validation included); "
        "peak memory: largest resident set of the training process.",
        "",
        f"Fixed settings: configs {configs or '?'}; data {data}; {fixed}.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), "
        f"torch {torch.__version__}, device {first.get('device', '?')}, "
        f"Python {platform.python_version()}.",
    ]
    failed = [r for r in results if r.get("status") != "ok"]
    if failed:
        notes += ["", "Failed points:", ""]
        notes += [f"- `{r['point']}`: {r.get('error', '')}" for r in failed]
    return notes
