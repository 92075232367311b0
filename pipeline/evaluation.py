"""Score predicted label maps against references and write the evaluation report.

:func:`evaluate_pairs` loads each :class:`~pipeline.pairing.CasePair` with nibabel,
checks that prediction and reference share a grid, remaps label values when asked,
scores the case with :func:`pipeline.metrics.evaluate_case` (spacing from the header's
zooms) and writes the report of :mod:`pipeline.report`. A case that fails is recorded
with its reason and the others go on. The pairing API (:func:`pair_cases`,
:func:`pairs_from_datalist`, :class:`CasePair`, :class:`PairingError`...) lives in
:mod:`pipeline.pairing` and is re-exported here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from pipeline import TUMOUR
from pipeline.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_case
from pipeline.pairing import (
    CasePair,
    PairingError,
    UnpairedCasesError,
    case_name,
    pair_cases,
    pairs_from_datalist,
)
from pipeline.report import CaseEntry, UnscoredCase, complete_provenance, write_report
from pipeline.report_figures import extract_overlay

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "CasePair",
    "EvaluationResult",
    "GridMismatchError",
    "LoadedPair",
    "PairingError",
    "UnpairedCasesError",
    "case_name",
    "evaluate_pairs",
    "load_pair",
    "pair_cases",
    "pairs_from_datalist",
]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries for them to describe one grid."""


class GridMismatchError(ValueError):
    """A prediction and its reference are not on the same voxel grid."""


@dataclass
class LoadedPair:
    """Label arrays of one case on a common grid, values in 0..2."""

    pred: np.ndarray
    ref: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]


@dataclass
class EvaluationResult:
    """What :func:`evaluate_pairs` scored, skipped and wrote."""

    cases: list[CaseEntry]
    failures: list[UnscoredCase]
    missing: list[UnscoredCase]
    summary: dict[str, Any]
    report_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no case failed (missing cases allowed by the caller do not count)."""
        return not self.failures


def _read_labels(path: Path) -> tuple[np.ndarray, Any]:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    # Some tools write labels as X x Y x Z x 1.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} is not a 3D label map (shape {data.shape})")
    return data, image


def _to_labels(data: np.ndarray, path: Path, label_map: Mapping[int, int] | None) -> np.ndarray:
    """Integer labels in 0..2 as uint8, remapped first when a map is given."""
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"{path} holds non-integer values: it is not a label map")
    if label_map:
        # Same rule as pipeline.transforms.RemapLabelsd: unlisted values become 0, so a
        # multi-organ map (TotalSegmentator) keeps only the listed structures.
        out = np.zeros(data.shape, dtype=np.uint8)
        for source, target in label_map.items():
            out[data == source] = target
        return out
    if data.size and (data.min() < 0 or data.max() > TUMOUR):
        values = np.unique(data)
        bad = [v.item() for v in values if not 0 <= v <= TUMOUR]
        raise ValueError(
            f"{path} has label values {bad[:10]} outside 0 (background), 1 (liver), "
            f"2 (tumour); give a label map (e.g. --label-map 5:1 for TotalSegmentator)"
        )
    return data.astype(np.uint8)


def _check_label_map(label_map: Mapping[int, int] | None, name: str) -> dict[int, int] | None:
    if not label_map:
        return None
    clean = {int(k): int(v) for k, v in label_map.items()}
    bad = {k: v for k, v in clean.items() if not 0 <= v <= TUMOUR}
    if bad:
        raise ValueError(f"{name} maps to values outside 0, 1, 2: {bad}")
    return clean


def load_pair(
    pair: CasePair,
    label_map: Mapping[int, int] | None = None,
    pred_label_map: Mapping[int, int] | None = None,
) -> LoadedPair:
    """Load one prediction / reference pair and check that they share a grid.

    Args:
        pair: A complete pair.
        label_map: ``{value: label}`` applied to the reference (unlisted values -> 0).
        pred_label_map: The same for the prediction.

    Returns:
        Both label maps as uint8 arrays, the reference affine and the voxel spacing in
        mm (the reference header's zooms).

    Raises:
        GridMismatchError: Shapes differ, or affines differ by more than
            ``AFFINE_TOLERANCE_MM``; the message names both files, shapes and affines.
        ValueError: Labels outside 0..2 (after remapping) or a non-3D file.
    """
    if not pair.complete:
        raise ValueError(f"case {pair.case_id!r} lacks a prediction or a reference")
    assert pair.pred is not None and pair.ref is not None
    pred_data, pred_img = _read_labels(Path(pair.pred))
    ref_data, ref_img = _read_labels(Path(pair.ref))
    if pred_data.shape != ref_data.shape or not np.allclose(
        pred_img.affine, ref_img.affine, rtol=0, atol=AFFINE_TOLERANCE_MM
    ):
        with np.printoptions(precision=4, suppress=True):
            raise GridMismatchError(
                f"case {pair.case_id!r}: prediction and reference grids differ\n"
                f"  prediction {pair.pred}: shape {pred_data.shape}, affine\n"
                f"{pred_img.affine}\n"
                f"  reference {pair.ref}: shape {ref_data.shape}, affine\n{ref_img.affine}"
            )
    spacing = tuple(float(z) for z in ref_img.header.get_zooms()[:3])
    return LoadedPair(
        pred=_to_labels(pred_data, Path(pair.pred), pred_label_map),
        ref=_to_labels(ref_data, Path(pair.ref), label_map),
        affine=np.asarray(ref_img.affine, dtype=np.float64),
        spacing=spacing,  # type: ignore[arg-type]
    )


def _load_image(
    path: Path, affine: np.ndarray, shape: tuple[int, ...]
) -> tuple[Any | None, str | None]:
    """The CT's lazy array proxy when it lies on the label grid, else None and why."""
    try:
        image = nib.load(path)
    except Exception as err:  # an unreadable CT only costs the overlay its background
        return None, f"CT {path} not read ({err}); overlay shows labels only"
    if tuple(image.shape[:3]) != tuple(shape) or not np.allclose(
        image.affine, affine, rtol=0, atol=AFFINE_TOLERANCE_MM
    ):
        return None, f"CT {path} is on another grid than the labels; overlay shows labels only"
    return image.dataobj, None


def evaluate_pairs(
    pairs: Sequence[CasePair],
    out_dir: str | os.PathLike,
    *,
    image_paths: Mapping[str, str | os.PathLike | None] | None = None,
    label_map: Mapping[int, int] | None = None,
    pred_label_map: Mapping[int, int] | None = None,
    provenance: Mapping[str, Any] | None = None,
    training_metrics_csv: str | os.PathLike | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    progress: bool = True,
) -> EvaluationResult:
    """Score every pair and write the report into ``out_dir``.

    Args:
        pairs: From :func:`pair_cases` or built directly (e.g. from a datalist:
            ``CasePair(case_id, pred_path, label_path, image_path)``).
        out_dir: Report folder (created).
        image_paths: ``{case_id: CT path}`` for the overlays; overrides ``pair.image``.
        label_map: Remapping of reference values, e.g. ``{5: 1}``; unlisted values
            become 0 (as :class:`pipeline.transforms.RemapLabelsd`).
        pred_label_map: The same for predictions.
        provenance: Checkpoint, its SHA-256, configs, data set...; the date and package
            versions are added when absent, and the checkpoint is hashed when named
            without ``checkpoint_sha256``.
        training_metrics_csv: The training run's ``metrics.csv`` for the curves.
        nsd_tolerance_mm: Tolerance of the normalised surface Dice.
        progress: Show a tqdm progress bar.

    Returns:
        The scored cases, failed cases (with their error), missing cases, the summary
        and the written files. A case that fails (unreadable file, grid mismatch, bad
        labels) is recorded and the others go on.

    Raises:
        ValueError: Two pairs with one case id, or a label map with targets outside 0..2.
    """
    ids = [p.case_id for p in pairs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"case ids appear more than once: {duplicates}")
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")
    label_map = _check_label_map(label_map, "label_map")
    pred_label_map = _check_label_map(pred_label_map, "pred_label_map")
    images = dict(image_paths or {})

    entries: list[CaseEntry] = []
    failures: list[UnscoredCase] = []
    missing: list[UnscoredCase] = []
    overlays = {}
    for pair in tqdm(pairs, desc="evaluate", unit="case", disable=not progress):
        image = images.get(pair.case_id, pair.image)
        image = Path(image) if image is not None else None
        record = UnscoredCase.of(pair.case_id, pair.pred, pair.ref, image)
        if not pair.complete:
            record.reason = "no prediction" if pair.pred is None else "no reference"
            missing.append(record)
            continue
        try:
            loaded = load_pair(pair, label_map, pred_label_map)
            result = evaluate_case(
                loaded.pred,
                loaded.ref,
                loaded.spacing,
                case_id=pair.case_id,
                nsd_tolerance_mm=nsd_tolerance_mm,
            )
        except Exception as err:  # one bad case must not stop a long evaluation
            record.reason = f"{type(err).__name__}: {err}"
            # First line only: grid errors go on with both affines, kept for the report.
            logger.warning("case %s failed: %s", pair.case_id, record.reason.splitlines()[0])
            failures.append(record)
            continue
        notes = []
        ct = None
        if image is not None:
            ct, note = _load_image(image, loaded.affine, loaded.ref.shape)
            notes += [note] if note else []
        # The overlay slice is cut now, while the volumes are in memory; the report keeps
        # it, so a rebuild does not need the volumes again.
        try:
            overlays[pair.case_id] = extract_overlay(loaded.pred, loaded.ref, loaded.affine, ct)
        except Exception as err:  # e.g. a truncated CT file, read only here (lazily)
            notes.append(f"CT slice not read ({err}); overlay shows labels only")
            overlays[pair.case_id] = extract_overlay(loaded.pred, loaded.ref, loaded.affine)
        entries.append(
            CaseEntry(
                result=result,
                pred=str(pair.pred),
                ref=str(pair.ref),
                image=str(image) if image is not None else None,
                spacing=loaded.spacing,
                notes=notes,
            )
        )
    report = write_report(
        out_dir,
        entries,
        failures=failures,
        missing=missing,
        provenance=complete_provenance(provenance),
        training_metrics_csv=training_metrics_csv,
        overlays=overlays,
        nsd_tolerance_mm=nsd_tolerance_mm,
        label_map=label_map,
        pred_label_map=pred_label_map,
    )
    return EvaluationResult(
        cases=entries,
        failures=failures,
        missing=missing,
        summary=report.summary,
        report_dir=Path(out_dir),
        files=report.files,
    )
