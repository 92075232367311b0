"""The tables, run.json and printed summary of a folder run (``folder_run.py`` segments).

``RunSummary`` holds a run's counts, merged over the processes when torchrun shared the
scans; :func:`write_run_tables` writes quantification.csv, timings.csv, failures.csv,
warnings.csv and run.json from it and the finished cases' JSONs; :func:`print_summary`
is what the command prints at the end.
"""

from __future__ import annotations

import csv
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.inference.predictor import STAGES
from pipeline.inference.quantify import QUANTIFICATION_COLUMNS, quantification_row
from pipeline.inference.scans import LeftOut, Scan
from pipeline.io import atomic_path, write_json

# "locate": the whole first stage of a cascade (empty for a single-stage model).
# "load_wait": how long the run waited for the scan's read (the read itself, "load", runs
# in the background while the previous scan is segmented; see prefetch.py).
TIMING_COLUMNS = ("case", "locate", *STAGES, "load_wait", "quantify", "save", "total")
FAILURE_COLUMNS = ("case", "input", "error")
WARNING_COLUMNS = ("case", "input", "warning")
QC_COLUMNS = ("qc", "qc_reasons")
_SHOWN_LEFT_OUT = 10  # printed at the end of a run; run.json lists them all


@dataclass
class RunSummary:
    """Counts of a folder run and where its tables are."""

    output_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[dict[str, str]] = field(default_factory=list)  # finished, but stale
    failed: list[dict[str, str]] = field(default_factory=list)
    warned: list[dict[str, str]] = field(default_factory=list)
    flagged: list[dict[str, str]] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    disk_full: str | None = None  # the write that found no space left; the run stopped there
    stale_removed: list[str] = field(default_factory=list)
    rank: int = 0  # the process this summary was returned to (rank 0 writes the tables)
    world_size: int = 1  # processes that shared the run (torchrun)
    # Per process: rank, host, seconds, done / skipped / failed counts, the cases dealt to it.
    ranks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no scan failed."""
        return not self.failed

    @classmethod
    def merged(
        cls,
        output_dir: Path,
        shares: list[dict[str, Any]],
        scans: list[Scan],
        left_out: list[LeftOut],
        rank: int = 0,
    ) -> tuple[RunSummary, list[dict[str, Any]]]:
        """The whole run from the share of every process (one share when alone).

        Args:
            output_dir: the run's output folder.
            shares: per process, in rank order: ``rank``, ``host``, ``seconds``, ``cases``
                (the names dealt to it), ``summary`` (its own counts) and ``records`` (the
                case JSONs of its finished cases).
            scans: every scan of the run; lists and records follow this order.
            left_out: the inputs the listing left out.
            rank: the process the summary is returned to.

        Returns:
            The merged summary, and every finished case's record in the order of ``scans``.
        """
        order = {scan.case: i for i, scan in enumerate(scans)}

        def in_order(items: Any, case: Callable[[Any], str] = str) -> list[Any]:
            return sorted(items, key=lambda item: order.get(case(item), len(order)))

        parts: list[RunSummary] = [share["summary"] for share in shares]
        records = in_order((r for share in shares for r in share["records"]), lambda r: r["case"])
        return cls(
            output_dir,
            done=in_order(case for part in parts for case in part.done),
            skipped=in_order(case for part in parts for case in part.skipped),
            redone=in_order((r for p in parts for r in p.redone), lambda r: r["case"]),
            failed=in_order((f for p in parts for f in p.failed), lambda f: f["case"]),
            warned=[
                {"case": r["case"], "input": r["input"], "warning": warning}
                for r in records
                for warning in r.get("warnings", [])
            ],
            flagged=[
                {"case": r["case"], "input": r["input"], "reasons": qc_columns(r)["qc_reasons"]}
                for r in records
                if qc_columns(r)["qc"] == "warn"
            ],
            left_out=left_out,
            disk_full=next((part.disk_full for part in parts if part.disk_full), None),
            stale_removed=sorted({name for part in parts for name in part.stale_removed}),
            rank=rank,
            world_size=len(shares),
            ranks=[
                {
                    "rank": share["rank"],
                    "host": share["host"],
                    "seconds": share["seconds"],
                    "done": len(part.done),
                    "skipped": len(part.skipped),
                    "failed": len(part.failed),
                    "cases": share["cases"],
                }
                for share, part in zip(shares, parts, strict=True)
            ],
        ), records


def qc_columns(record: dict[str, Any]) -> dict[str, str]:
    """The ``qc`` and ``qc_reasons`` cells of a case JSON (older JSONs have no verdict)."""
    qc = record.get("qc") or {}
    return {"qc": qc.get("verdict", ""), "qc_reasons": " | ".join(qc.get("reasons", []))}


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` under ``columns`` (other keys ignored), atomically."""
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def _write_table(summary: RunSummary, write: Callable[[], Any]) -> None:
    """Write one table; on a full disk note it and go on with the next (smaller) ones."""
    try:
        write()
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        summary.disk_full = summary.disk_full or str(err)


def write_run_tables(
    output_dir: Path,
    scans: list[Scan],
    summary: RunSummary,
    records: list[dict[str, Any]],
    run_info: dict[str, Any],
) -> None:
    """Write the run's tables and run.json.

    Args:
        output_dir: the run's output folder.
        scans: every scan of the run, in the order the tables list them.
        summary: the whole run's counts (every rank's, merged).
        records: the case JSONs of the finished cases (done now or earlier).
        run_info: what was run on what (input, checkpoint and its SHA-256, settings,
            output format), first in run.json.
    """
    finished = {r["case"] for r in records} | {f["case"] for f in summary.failed}
    not_run = [scan.case for scan in scans if scan.case not in finished]
    tables = {
        "failures.csv": (FAILURE_COLUMNS, summary.failed),
        "quantification.csv": (
            (*QUANTIFICATION_COLUMNS, *QC_COLUMNS),
            [
                {**quantification_row(r["case"], r["quantification"]), **qc_columns(r)}
                for r in records
            ],
        ),
        # rank: the process that made the case (0 when one process did; see run.json)
        "timings.csv": (
            (*TIMING_COLUMNS, "rank"),
            [{"case": r["case"], **r["seconds"], "rank": r.get("rank", 0)} for r in records],
        ),
        "warnings.csv": (WARNING_COLUMNS, summary.warned),
    }
    for name, (columns, rows) in tables.items():
        _write_table(summary, lambda n=name, c=columns, r=rows: write_csv(output_dir / n, c, r))
    run = {
        **run_info,
        "n_scans": len(scans),
        "done": summary.done,
        "skipped": summary.skipped,
        "redone": summary.redone,
        "failed": summary.failed,
        "not_run": not_run,
        "disk_full": summary.disk_full,
        "left_out": [{"input": str(x.path), "reason": x.reason} for x in summary.left_out],
        "stale_temporary_files_removed": summary.stale_removed,
        "warnings": summary.warned,
        "qc": {
            verdict: sorted(r["case"] for r in records if qc_columns(r)["qc"] == verdict)
            for verdict in ("pass", "warn")
        },
        "world_size": summary.world_size,
        "ranks": summary.ranks,
        "pipeline_version": __version__,
    }
    _write_table(summary, lambda: write_json(run, output_dir / "run.json"))


def print_summary(summary: RunSummary, output_dir: Path) -> None:
    """Print the run's counts, shares, left-out inputs, warnings and failures."""
    print(
        f"inference: {len(summary.done)} segmented, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed -> {output_dir}"
    )
    if summary.world_size > 1:
        shares = ", ".join(
            f"rank {r['rank']} on {r['host']}: {len(r['cases'])} scan(s), {r['seconds']:.0f} s"
            for r in summary.ranks
        )
        print(f"  shared by {summary.world_size} processes: {shares}")
    if summary.redone:
        reasons = sorted({r["reason"] for r in summary.redone})
        print(f"  {len(summary.redone)} finished case(s) redone: {'; '.join(reasons)}")
    for left in summary.left_out[:_SHOWN_LEFT_OUT]:
        print(f"  left out {left.path}: {left.reason}")
    if len(summary.left_out) > _SHOWN_LEFT_OUT:
        print(f"  ... {len(summary.left_out)} files left out in all: see run.json")
    for warned in summary.warned:
        print(f"  WARNING {warned['input']}: {warned['warning']}")
    for flagged in summary.flagged:
        print(f"  QC WARN {flagged['input']}: {flagged['reasons']}")
    for failure in summary.failed:
        print(f"  FAILED {failure['input']}: {failure['error']}")
