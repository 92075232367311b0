"""The evaluation report: CSV, JSON, Markdown and a self-contained HTML page.

:func:`write_report` writes into one folder:

* ``metrics_per_case.csv``: one row per scored case, every flat key of
  :class:`pipeline.metrics.CaseResult` (``nan`` marks an undefined value);
* ``lesions.csv``: one row per reference and predicted lesion;
* ``failures.csv``: cases that could not be scored, with the error (header only if none);
* ``summary.json`` and ``summary.md``: the data-set summary of
  :func:`pipeline.metrics.summarize`, failed and missing cases, the empty-case policy;
* ``cases.json``: everything needed to rebuild the report (per-case results, file
  paths, provenance, training metrics) and ``overlays.npz``, the overlay slices, so
  :func:`build_report` redraws the report without the volumes;
* ``report.html``: tables, charts and one overlay per case, images embedded as base64
  PNG data URIs, no external CSS or JS, so the single file can be mailed or archived.

JSON files store undefined values (NaN) as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_path, sha256_of, write_json
from pipeline.lesions import LesionDetection, PredLesion, RefLesion
from pipeline.metrics import DEFAULT_NSD_TOLERANCE_MM, CaseResult, summarize
from pipeline.report_figures import OverlaySlice

__all__ = [
    "EMPTY_CASE_POLICY",
    "CaseEntry",
    "UnscoredCase",
    "WrittenReport",
    "build_report",
    "collect_provenance",
    "complete_provenance",
    "sha256_of",
    "read_training_metrics",
    "write_report",
]

FORMAT_VERSION = 1
EMPTY_CASE_POLICY = (
    "Both masks empty: Dice = IoU = 1, VOE = 0. One mask empty: Dice = IoU = 0. RVD is "
    "undefined when the reference is empty. ASSD, HD95, MSSD and NSD are undefined when "
    "either mask is empty: shown as n/a and left out of means (n = cases where defined)."
)
CLASS_NAMES = ("liver", "tumour")
_PACKAGES = ("numpy", "scipy", "nibabel", "torch", "monai", "matplotlib", "liver-tumor-pipeline")


@dataclass
class CaseEntry:
    """A scored case with where its data came from."""

    result: CaseResult
    pred: str
    ref: str
    image: str | None = None
    spacing: tuple[float, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def case_id(self) -> str:
        """The case identifier."""
        return self.result.case_id


@dataclass
class UnscoredCase:
    """A case that failed or had no prediction / reference; ``reason`` says why."""

    case_id: str
    pred: str | None
    ref: str | None
    image: str | None = None
    reason: str = ""

    @classmethod
    def of(cls, case_id: str, *paths: Any) -> UnscoredCase:
        """Build from paths that may be None (stored as strings)."""
        return cls(case_id, *(str(p) if p is not None else None for p in paths))


@dataclass
class WrittenReport:
    """The summary and the files written by :func:`write_report`."""

    summary: dict[str, Any]
    files: dict[str, Path]


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN and inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _case_to_json(entry: CaseEntry) -> dict[str, Any]:
    lesions = entry.result.lesions
    return {
        "case_id": entry.case_id,
        "pred": entry.pred,
        "ref": entry.ref,
        "image": entry.image,
        "spacing": list(entry.spacing),
        "notes": entry.notes,
        "metrics": entry.result.metrics,
        "lesions": {
            "ref": [dataclasses.asdict(x) for x in lesions.ref],
            "pred": [dataclasses.asdict(x) for x in lesions.pred],
        },
    }


def _case_from_json(data: Mapping[str, Any]) -> CaseEntry:
    metrics = {k: _nan(v) for k, v in data["metrics"].items()}
    lesions = LesionDetection(
        case_id=data["case_id"],
        ref=[RefLesion(**{k: _nan(v) for k, v in x.items()}) for x in data["lesions"]["ref"]],
        pred=[PredLesion(**{k: _nan(v) for k, v in x.items()}) for x in data["lesions"]["pred"]],
    )
    return CaseEntry(
        result=CaseResult(data["case_id"], metrics, lesions),
        pred=data["pred"],
        ref=data["ref"],
        image=data.get("image"),
        spacing=tuple(data.get("spacing", ())),
        notes=list(data.get("notes", [])),
    )


def read_training_metrics(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """Rows of a training ``metrics.csv`` with numbers as floats (blank -> None)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, float | None] = {}
            for key, text in row.items():
                try:
                    parsed[key] = float(text)
                except (TypeError, ValueError):
                    parsed[key] = None
            rows.append(parsed)
    return rows


def _build_summary(data: Mapping[str, Any], cases: Sequence[CaseEntry]) -> dict[str, Any]:
    summary = summarize([c.result for c in cases])
    summary.pop("lesion_records")  # one row per lesion: lesions.csv holds them
    if not cases:  # summarize calls an absent class "perfect"; with no case it is unknown
        for name in CLASS_NAMES:
            summary[name]["dice_global"] = math.nan
    summary["n_failed"] = len(data["failures"])
    summary["n_missing"] = len(data["missing"])
    summary["failed_cases"] = [f["case_id"] for f in data["failures"]]
    summary["missing_cases"] = [m["case_id"] for m in data["missing"]]
    summary["nsd_tolerance_mm"] = data["nsd_tolerance_mm"]
    summary["empty_case_policy"] = EMPTY_CASE_POLICY
    return _clean(summary)


def collect_provenance(
    checkpoint: str | os.PathLike | None = None,
    configs: Sequence[str | os.PathLike] = (),
    dataset: str | os.PathLike | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance of an evaluation: date, files with their SHA-256, package versions.

    Args:
        checkpoint: Model checkpoint; its SHA-256 is computed when the file exists.
        configs: Config files (e.g. the bundle's YAML files), each hashed.
        dataset: Data set folder or datalist.
        **extra: Anything else to record (e.g. ``pred_dir``, ``command``).

    Returns:
        A JSON-serialisable dict.
    """
    out: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if checkpoint is not None:
        out["checkpoint"] = str(checkpoint)
        if Path(checkpoint).is_file():
            out["checkpoint_sha256"] = sha256_of(checkpoint)
    if configs:
        out["configs"] = [
            {"path": str(c), "sha256": sha256_of(c) if Path(c).is_file() else None} for c in configs
        ]
    if dataset is not None:
        out["dataset"] = str(dataset)
    out.update({k: v for k, v in extra.items() if v is not None})
    out["packages"] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out["packages"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out["packages"][name] = None
    return out


def complete_provenance(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's provenance plus the date, package versions and checkpoint hash if absent."""
    given = dict(provenance or {})
    # Hash a checkpoint the caller named but did not hash; keep the caller's values.
    auto = collect_provenance(checkpoint=given.get("checkpoint"))
    packages = {**auto.pop("packages"), **given.pop("packages", {})}
    return {**auto, **given, "packages": packages}  # packages last: the longest entry


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
    # Imported here: pipeline.evaluation imports this module.
    import nibabel as nib

    from pipeline.evaluation import CasePair, load_pair
    from pipeline.report_figures import extract_overlay

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
        overlays: ``{case_id: slice}`` from :func:`pipeline.report_figures.extract_overlay`.
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
            {**_case_to_json(c), "overlay": overlays[c.case_id].meta()}
            if c.case_id in overlays
            else _case_to_json(c)
            for c in cases
        ],
        "failures": [dataclasses.asdict(f) for f in failures],
        "missing": [dataclasses.asdict(m) for m in missing],
    }
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    _save_overlays(report_dir / "overlays.npz", [overlays.get(c.case_id) for c in cases])
    write_json(_clean(data), report_dir / "cases.json")
    return _render(report_dir, _clean(data), list(cases), [overlays.get(c.case_id) for c in cases])


def _render(
    report_dir: Path,
    data: Mapping[str, Any],
    cases: Sequence[CaseEntry],
    overlays: Sequence[OverlaySlice | None],
) -> WrittenReport:
    """Write every file derived from ``cases.json`` data (all but cases.json itself)."""
    from pipeline.report_pages import render_html, render_markdown

    summary = _build_summary(data, cases)
    files = {"cases": report_dir / "cases.json", "overlays": report_dir / "overlays.npz"}
    columns = list(cases[0].result.to_dict()) if cases else ["case_id"]
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
    html = render_html(summary, data, cases, overlays)
    files["html"] = _write_text(report_dir / "report.html", html)
    return WrittenReport(summary=summary, files=files)


def build_report(report_dir: str | os.PathLike) -> WrittenReport:
    """Rebuild every report file of ``report_dir`` from its ``cases.json``.

    Overlays come from ``overlays.npz``; any that are absent are cut again from the
    volumes named in ``cases.json`` when they still exist.

    Raises:
        FileNotFoundError: ``report_dir`` has no ``cases.json``.
    """
    import json

    report_dir = Path(report_dir)
    path = report_dir / "cases.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a report folder of liver-tumor evaluate")
    data = json.loads(path.read_text())
    cases = [_case_from_json(c) for c in data["cases"]]
    overlays = _load_overlays(report_dir, data)
    if any(o is not None for o in overlays) and not (report_dir / "overlays.npz").exists():
        _save_overlays(report_dir / "overlays.npz", overlays)
    return _render(report_dir, data, cases, overlays)
