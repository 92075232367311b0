"""Score predicted label maps against references and write the evaluation report.

:func:`evaluate_pairs` loads each :class:`~pipeline.evaluation.pairing.CasePair` with nibabel,
checks that prediction and reference share a grid, remaps label values when asked,
scores the case with :func:`pipeline.evaluation.metrics.evaluate_case` (spacing from the
header's zooms) and writes the report of :mod:`pipeline.evaluation.report.writer`. A case
that fails is recorded with its reason and the others go on. While a case's volumes are in
memory its overlay slice is cut and its slice viewer page written
(:mod:`pipeline.evaluation.report.viewer`); a viewer that cannot be written is a note on
the case, never a failure. The pairing API (:func:`pair_cases`,
:func:`pairs_from_datalist`, :class:`CasePair`, :class:`PairingError`...) lives in
:mod:`pipeline.evaluation.pairing` and is re-exported here.
"""

from __future__ import annotations

import contextlib
import json
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

from pipeline.evaluation.loading import (
    AFFINE_TOLERANCE_MM,
    GridMismatchError,
    LoadedPair,
    check_label_map,
    load_image_on_grid,
    load_pair,
)
from pipeline.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, evaluate_case
from pipeline.evaluation.pairing import (
    CasePair,
    PairingError,
    UnpairedCasesError,
    case_name,
    pair_cases,
    pairs_from_datalist,
)
from pipeline.evaluation.report.figures import extract_overlay
from pipeline.evaluation.report.model import CaseEntry, UnscoredCase, complete_provenance
from pipeline.evaluation.report.viewer import remove_viewer, write_viewer
from pipeline.evaluation.report.writer import write_report
from pipeline.names import split_image_suffix, tumour_probability_path

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


def _inference_qc(pred: Path) -> dict[str, Any] | None:
    """The quality-control verdict in the inference's ``<case>.json`` beside a mask, if any.

    Masks of other tools have no such file: their report shows no verdict.
    """
    split = split_image_suffix(pred.name)
    stem = split[0] if split else pred.stem
    stem = stem.removesuffix("_seg")  # inference writes <case>_seg.nii.gz and <case>.json
    try:
        qc = json.loads((pred.parent / f"{stem}.json").read_text()).get("qc")
    except (OSError, ValueError, AttributeError):
        return None
    return qc if isinstance(qc, dict) else None


def _tumour_probability(pred: Path, loaded: LoadedPair) -> tuple[np.ndarray | None, str | None]:
    """The tumour probability inference kept beside the mask, on the scored grid.

    Returns:
        ``(probability, None)``; ``(None, None)`` when there is none (AUC is then left
        out); ``(None, why)`` when it cannot be used.
    """
    path = tumour_probability_path(pred)
    if not path.is_file():
        return None, None
    image = nib.load(path)
    if image.shape != loaded.pred.shape or loaded.notes:
        return None, f"{path.name} is not on the mask's grid as scored: no tumour AUC"
    return np.asarray(image.get_fdata(dtype=np.float32)), None


def _write_case_viewer(
    out_dir: str | os.PathLike, case_id: str, loaded: LoadedPair, ct: Any | None, axial_index: int
) -> list[str]:
    """Write the case's slice viewer page; notes say what went wrong, nothing is raised.

    The volumes are in memory only now, so the page is written now, starting at the
    overlay's axial slice. A CT that cannot be read in full leaves a labels-only page.
    """
    notes = []
    for image in (ct, None) if ct is not None else (None,):
        try:
            write_viewer(
                out_dir, case_id, loaded.pred, loaded.ref, loaded.affine, image,
                axial_index=axial_index,
            )  # fmt: skip
            return notes
        except Exception as err:  # the viewer is a convenience: never fail a case for it
            what = "slice viewer with CT failed" if image is not None else "no slice viewer"
            notes.append(f"{what} ({type(err).__name__}: {err})")
            logger.warning("case %s: %s", case_id, notes[-1])
    with contextlib.suppress(OSError):  # a page left by an earlier run would show old data
        remove_viewer(out_dir, case_id)
    return notes


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
    viewers: bool = True,
) -> EvaluationResult:
    """Score every pair and write the report into ``out_dir``.

    Args:
        pairs: From :func:`pair_cases` or built directly (e.g. from a datalist:
            ``CasePair(case_id, pred_path, label_path, image_path)``).
        out_dir: Report folder (created).
        image_paths: ``{case_id: CT path}`` for the overlays; overrides ``pair.image``.
        label_map: Remapping of reference values, e.g. ``{5: 1}``; unlisted values
            become 0 (as :class:`pipeline.transforms.labels.RemapLabelsd`).
        pred_label_map: The same for predictions.
        provenance: Checkpoint, its SHA-256, configs, data set...; the date and package
            versions are added when absent, and the checkpoint is hashed when named
            without ``checkpoint_sha256``.
        training_metrics_csv: The training run's ``metrics.csv`` for the curves.
        nsd_tolerance_mm: Tolerance of the normalised surface Dice.
        progress: Show a tqdm progress bar.
        viewers: Write a slice viewer page per case into ``out_dir/viewer`` (about 1 MB
            and 0.7 s for a 272 x 272 x 144 case with its CT; off for repeated scorings
            such as a sweep's).

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
    label_map = check_label_map(label_map, "label_map")
    pred_label_map = check_label_map(pred_label_map, "pred_label_map")
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
            tumour_prob, prob_note = _tumour_probability(Path(pair.pred), loaded)
            result = evaluate_case(
                loaded.pred,
                loaded.ref,
                loaded.spacing,
                case_id=pair.case_id,
                tumour_prob=tumour_prob,
                nsd_tolerance_mm=nsd_tolerance_mm,
            )
        except Exception as err:  # one bad case must not stop a long evaluation
            record.reason = f"{type(err).__name__}: {err}"
            # First line only: grid errors go on with both affines, kept for the report.
            logger.warning("case %s failed: %s", pair.case_id, record.reason.splitlines()[0])
            failures.append(record)
            continue
        notes = list(loaded.notes)  # e.g. a prediction reoriented to the reference
        notes += [prob_note] if prob_note else []
        ct = None
        if image is not None:
            ct, note = load_image_on_grid(image, loaded.affine, loaded.ref.shape)
            notes += [note] if note else []
        # The overlay slice is cut now, while the volumes are in memory; the report keeps
        # it, so a rebuild does not need the volumes again.
        try:
            overlays[pair.case_id] = extract_overlay(loaded.pred, loaded.ref, loaded.affine, ct)
        except Exception as err:  # e.g. a truncated CT file, read only here (lazily)
            notes.append(f"CT slice not read ({err}); overlay and viewer show labels only")
            overlays[pair.case_id] = extract_overlay(loaded.pred, loaded.ref, loaded.affine)
            ct = None
        if viewers:
            axial_index = overlays[pair.case_id].index
            notes += _write_case_viewer(out_dir, pair.case_id, loaded, ct, axial_index)
        entries.append(
            CaseEntry(
                result=result,
                pred=str(pair.pred),
                ref=str(pair.ref),
                image=str(image) if image is not None else None,
                spacing=loaded.spacing,
                notes=notes,
                qc=_inference_qc(Path(pair.pred)),
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
