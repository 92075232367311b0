"""The evaluation report: CSV, JSON, Markdown and a self-contained HTML page.

:func:`write_report` writes into one folder:

* ``metrics_per_case.csv``: one row per scored case, every flat key of
  :class:`pipeline.evaluation.metrics.CaseResult` (``nan`` marks an undefined value);
* ``lesions.csv``: one row per reference and predicted lesion;
* ``failures.csv``: cases that could not be scored, with the error (header only if none);
* ``summary.json`` and ``summary.md``: the data-set summary of
  :func:`pipeline.evaluation.metrics.summarize`, failed and missing cases, the empty-case policy;
* ``cases.json``: everything needed to rebuild the report (per-case results, file
  paths, provenance, training metrics) and ``overlays.npz``, the overlay slices, so
  :func:`build_report` redraws the report without the volumes;
* ``report.html``: tables, charts and one overlay per case, images embedded as base64
  PNG data URIs, no external CSS or JS, so the single file can be mailed or archived;
* ``viewer/<case>.html``: a slice viewer per case (:mod:`pipeline.evaluation.report.viewer`),
  written by the scoring while the volumes are in memory, not by :func:`write_report`.
  ``report.html`` links to the pages found in ``viewer/`` when it is rendered, so
  :func:`build_report` keeps the links without the volumes, and a deleted page only
  loses its link.

JSON files store undefined values (NaN) as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.evaluation.loading import load_pair
from pipeline.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, summarize
from pipeline.evaluation.pairing import CasePair
from pipeline.evaluation.report.figures import OverlaySlice, extract_overlay
from pipeline.evaluation.report.model import (
    FORMAT_VERSION,
    CaseEntry,
    UnscoredCase,
    WrittenReport,
    build_summary,
    case_from_json,
    case_to_json,
    read_training_metrics,
)
from pipeline.evaluation.report.pages import render_html
from pipeline.evaluation.report.text import render_markdown
from pipeline.evaluation.report.viewer import viewer_relpath
from pipeline.io import atomic_path, json_safe, write_json


def _write_csv(path: Path, fieldnames: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fieldnames), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _save_overlays(path: Path, overlays: Sequence[OverlaySlice | None]) -> None:
    arrays = {}
    for i, overlay in enumerate(overlays):
        if overlay is None:
            continue
        arrays[f"c{i}_ref"], arrays[f"c{i}_pred"] = overlay.ref, overlay.pred
        if overlay.ct is not None:
            arrays[f"c{i}_ct"] = overlay.ct
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def _load_overlays(report_dir: Path, data: Mapping[str, Any]) -> list[OverlaySlice | None]:
    """Overlay slices from ``overlays.npz``; cut again from the volumes where absent."""
    path = report_dir / "overlays.npz"
    stored = dict(np.load(path)) if path.exists() else {}
    out: list[OverlaySlice | None] = []
    for i, case in enumerate(data["cases"]):
        meta = case.get("overlay")
        if meta and f"c{i}_ref" in stored:
            out.append(
                OverlaySlice(
                    ref=stored[f"c{i}_ref"],
                    pred=stored[f"c{i}_pred"],
                    ct=stored.get(f"c{i}_ct"),
                    aspect=meta["aspect"],
                    index=meta["index"],
                    n_slices=meta["n_slices"],
                    reason=meta["reason"],
                )
            )
        else:
            out.append(_overlay_from_files(case, data))
    return out


def _overlay_from_files(case: Mapping[str, Any], data: Mapping[str, Any]) -> OverlaySlice | None:

    try:
        pair = CasePair(case["case_id"], Path(case["pred"]), Path(case["ref"]))
        loaded = load_pair(pair, data.get("label_map"), data.get("pred_label_map"))
        ct = nib.load(case["image"]).dataobj if case.get("image") else None
        return extract_overlay(loaded.pred, loaded.ref, loaded.affine, ct)
    except Exception:  # volumes moved or deleted: the report goes on without this overlay
        return None


def write_report(
    report_dir: str | os.PathLike,
    cases: Sequence[CaseEntry],
    *,
    failures: Sequence[UnscoredCase] = (),
    missing: Sequence[UnscoredCase] = (),
    provenance: Mapping[str, Any] | None = None,
    training_metrics_csv: str | os.PathLike | None = None,
    training_metrics: Sequence[Mapping[str, Any]] | None = None,
    overlays: Mapping[str, OverlaySlice] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    label_map: Mapping[int, int] | None = None,
    pred_label_map: Mapping[int, int] | None = None,
) -> WrittenReport:
    """Write every report file into ``report_dir``.

    Args:
        report_dir: Destination folder (created).
        cases: Scored cases.
        failures: Cases that could not be scored.
        missing: Cases without prediction or reference.
        provenance: Checkpoint, configs, data set, date, package versions...
        training_metrics_csv: A training ``metrics.csv``, read now (and copied into
            ``cases.json``); a missing file is noted in the report, not raised.
        training_metrics: Already-read training rows (used instead of the CSV).
        overlays: ``{case_id: slice}`` from
            :func:`pipeline.evaluation.report.figures.extract_overlay`.
        nsd_tolerance_mm: The tolerance the NSD was computed with (shown in headings).
        label_map: Reference remapping used (recorded, and reused to redraw overlays).
        pred_label_map: Prediction remapping used.

    Returns:
        The summary (as in ``summary.json``) and the written paths by name.
    """
    provenance = dict(provenance or {})
    training: dict[str, Any] | None = None
    if training_metrics is not None:
        training = {"path": str(training_metrics_csv or ""), "rows": list(training_metrics)}
    elif training_metrics_csv is not None:
        path = Path(training_metrics_csv)
        if path.is_file():
            training = {"path": str(path), "rows": read_training_metrics(path)}
        else:
            training = {"path": str(path), "rows": [], "error": "file not found"}
    overlays = overlays or {}
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "label_map": sorted([int(k), int(v)] for k, v in (label_map or {}).items()) or None,
        "pred_label_map": sorted([int(k), int(v)] for k, v in (pred_label_map or {}).items())
        or None,
        "provenance": provenance,
        "training_metrics": training,
        "cases": [
            {**case_to_json(c), "overlay": overlays[c.case_id].meta()}
            if c.case_id in overlays
            else case_to_json(c)
            for c in cases
        ],
        "failures": [dataclasses.asdict(f) for f in failures],
        "missing": [dataclasses.asdict(m) for m in missing],
    }
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    _save_overlays(report_dir / "overlays.npz", [overlays.get(c.case_id) for c in cases])
    write_json(json_safe(data), report_dir / "cases.json")
    slices = [overlays.get(c.case_id) for c in cases]
    return _render(report_dir, json_safe(data), list(cases), slices)


def _render(
    report_dir: Path,
    data: Mapping[str, Any],
    cases: Sequence[CaseEntry],
    overlays: Sequence[OverlaySlice | None],
) -> WrittenReport:
    """Write every file derived from ``cases.json`` data (all but cases.json itself)."""
    summary = build_summary(data, cases)
    files = {"cases": report_dir / "cases.json", "overlays": report_dir / "overlays.npz"}
    columns = list(cases[0].result.to_dict()) if cases else ["case_id"]
    if all(math.isnan(c.result["tumour_auc"]) for c in cases):  # no probabilities: no column
        columns = [c for c in columns if c != "tumour_auc"]
    files["metrics_per_case"] = _write_csv(
        report_dir / "metrics_per_case.csv", columns, [c.result.to_dict() for c in cases]
    )
    lesion_rows = summarize([c.result for c in cases])["lesion_records"]
    lesion_columns = list(dict.fromkeys(k for row in lesion_rows for k in row)) or ["kind"]
    files["lesions"] = _write_csv(report_dir / "lesions.csv", lesion_columns, lesion_rows)
    files["failures"] = _write_csv(
        report_dir / "failures.csv",
        ["case_id", "pred", "ref", "image", "reason"],
        data["failures"],
    )
    files["summary_json"] = write_json(summary, report_dir / "summary.json")
    files["summary_md"] = _write_text(report_dir / "summary.md", render_markdown(summary, data))
    viewers = {c.case_id: viewer_relpath(c.case_id) for c in cases}
    viewers = {k: v for k, v in viewers.items() if (report_dir / v).is_file()}
    html = render_html(summary, data, cases, overlays, viewers)
    files["html"] = _write_text(report_dir / "report.html", html)
    return WrittenReport(summary=summary, files=files)


def build_report(report_dir: str | os.PathLike) -> WrittenReport:
    """Rebuild every report file of ``report_dir`` from its ``cases.json``.

    Overlays come from ``overlays.npz``; any that are absent are cut again from the
    volumes named in ``cases.json`` when they still exist.

    Raises:
        FileNotFoundError: ``report_dir`` has no ``cases.json``.
    """
    report_dir = Path(report_dir)
    path = report_dir / "cases.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a report folder of liver-tumor evaluate")
    data = json.loads(path.read_text())
    cases = [case_from_json(c) for c in data["cases"]]
    overlays = _load_overlays(report_dir, data)
    if any(o is not None for o in overlays) and not (report_dir / "overlays.npz").exists():
        _save_overlays(report_dir / "overlays.npz", overlays)
    return _render(report_dir, data, cases, overlays)
