"""The report's data model: scored and unscored cases, the summary and provenance.

Shared by the writer (``writer``) and the pages (``pages``), so neither imports the other
for its types. ``cases.json`` stores these records; :func:`case_from_json` reads them back.
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

from pipeline.evaluation.lesions import LesionDetection, PredLesion, RefLesion
from pipeline.evaluation.metrics import CaseResult, summarize
from pipeline.io import checkpoint_identity, json_safe, sha256_of

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
    qc: dict[str, Any] | None = None  # the inference's verdict, when its case JSON was found

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


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def case_to_json(entry: CaseEntry) -> dict[str, Any]:
    """The ``cases.json`` record of a scored case (read back by :func:`case_from_json`)."""
    lesions = entry.result.lesions
    return {
        "case_id": entry.case_id,
        "pred": entry.pred,
        "ref": entry.ref,
        "image": entry.image,
        "spacing": list(entry.spacing),
        "notes": entry.notes,
        "qc": entry.qc,
        "metrics": entry.result.metrics,
        "lesions": {
            "ref": [dataclasses.asdict(x) for x in lesions.ref],
            "pred": [dataclasses.asdict(x) for x in lesions.pred],
        },
    }


def case_from_json(data: Mapping[str, Any]) -> CaseEntry:
    """A scored case from its ``cases.json`` record (null metrics become NaN)."""
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
        qc=data.get("qc"),
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


def build_summary(data: Mapping[str, Any], cases: Sequence[CaseEntry]) -> dict[str, Any]:
    """The data-set summary of ``summary.json``: metrics, failed and missing cases, policy."""
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
    return json_safe(summary)


def collect_provenance(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    configs: Sequence[str | os.PathLike] = (),
    dataset: str | os.PathLike | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance of an evaluation: date, files with their SHA-256, package versions.

    Args:
        checkpoint: Model checkpoint (or several, an ensemble); its SHA-256 is computed
            when the file exists (several joined by ``+``).
        configs: Config files (e.g. the bundle's YAML files), each hashed.
        dataset: Data set folder or datalist.
        **extra: Anything else to record (e.g. ``pred_dir``, ``command``).

    Returns:
        A JSON-serialisable dict.
    """
    out: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if checkpoint:
        out["checkpoint"], sha = checkpoint_identity(checkpoint)
        if sha is not None:
            out["checkpoint_sha256"] = sha
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
