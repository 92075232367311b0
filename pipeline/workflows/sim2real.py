"""Sim-to-real check: a model trained on phantoms, scored on real CT with liver labels.

``liver-tumor sim2real --ckpt MODEL --overlay demo.yaml --out DIR`` segments each real scan
(by default the two of ``../shared/data/real_ct``: a 3 mm NIfTI and a DICOM series, with
TotalSegmentator organ labels where 5 is the liver), scores the predicted liver
(label >= 1) against the reference liver, and writes ``sim2real.json`` and one overlay
figure per scan. Only the liver is scored: the real labels have no tumour class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations

from pipeline.bundle import config_file
from pipeline.evaluation.metrics import evaluate_case
from pipeline.evaluation.report.figures import extract_overlay, overlay_figure
from pipeline.inference.api import build_predictor, predict
from pipeline.io import atomic_path, write_json

# The real CTs beside a checkout (../shared/data/real_ct from the repository root); any
# other folder is passed as ``root`` (``liver-tumor sim2real --real-ct DIR``).
SHARED_REAL_CT = Path("..") / "shared" / "data" / "real_ct"


@dataclass(frozen=True)
class RealCase:
    """A real scan and its organ label map (on the same voxels, any axis order)."""

    name: str
    scan: Path
    labels: Path
    liver_label: int = 5


def default_cases(root: Path = SHARED_REAL_CT) -> list[RealCase]:
    """The two real CTs shipped beside the project (``../shared/data/real_ct``)."""
    return [
        RealCase(
            "abdomen_ct_3mm", root / "abdomen_ct_3mm.nii.gz", root / "abdomen_ct_3mm_organs.nii.gz"
        ),
        RealCase(
            "abdomen_ct_dicom", root / "abdomen_ct_dicom", root / "abdomen_ct_dicom_organs.nii.gz"
        ),
    ]


def on_reference_grid(
    labels: np.ndarray, affine: np.ndarray, reference: nib.Nifti1Image
) -> np.ndarray:
    """Reorder the axes of ``labels`` onto the reference's voxel order (no resampling).

    A DICOM series read by ITK and its label map written by another tool can store the
    same voxels with an axis flipped; this maps one onto the other exactly.

    Raises:
        ValueError: the two grids are not the same voxels (different spacing or extent).
    """
    source = orientations.io_orientation(affine)
    target = orientations.io_orientation(reference.affine)
    transform = orientations.ornt_transform(source, target)
    moved = orientations.apply_orientation(labels, transform)
    moved_affine = affine @ orientations.inv_ornt_aff(transform, labels.shape)
    if moved.shape != reference.shape[:3] or not np.allclose(
        moved_affine, reference.affine, atol=1e-2
    ):
        raise ValueError(
            f"prediction grid {moved.shape} / {np.round(moved_affine, 3).tolist()} is not the "
            f"reference grid {reference.shape} / {np.round(reference.affine, 3).tolist()}"
        )
    return moved


def score_case(case: RealCase, predictor: Any, out_dir: Path) -> dict[str, Any]:
    """Segment one real scan, score its liver, and draw the overlay figure."""
    result = predict(case.scan, predictor=predictor)
    reference = nib.load(str(case.labels))
    pred = on_reference_grid(result.labels, result.affine, reference)
    ref_liver = (np.asarray(reference.dataobj) == case.liver_label).astype(np.uint8)
    pred_liver = (pred >= 1).astype(np.uint8)
    spacing = [float(z) for z in reference.header.get_zooms()[:3]]
    scored = evaluate_case(pred_liver, ref_liver, spacing, case_id=case.name)
    ct = _ct_on_grid(case, reference)
    overlay = extract_overlay(pred_liver, ref_liver, reference.affine, ct=ct)
    figure = out_dir / f"{case.name}_liver.png"
    with atomic_path(figure, suffix=".png") as tmp:
        tmp.write_bytes(
            overlay_figure(
                overlay, f"{case.name}: liver, reference (label {case.liver_label}) vs model"
            )
        )
    return {
        "case": case.name,
        "scan": str(case.scan),
        "reference": str(case.labels),
        "liver_dice": float(scored["liver_dice"]),
        "liver_hd95_mm": float(scored["liver_hd95"]),
        "liver_volume_pred_ml": float(scored["liver_vol_pred_ml"]),
        "liver_volume_ref_ml": float(scored["liver_vol_ref_ml"]),
        # The real scans have no tumour labels: every predicted tumour is to be looked at.
        "tumours_predicted": int(result.quantification["n_tumours"]),
        "tumour_volume_predicted_ml": float(result.quantification["tumour_volume_ml"]),
        "warnings": result.warnings,
        # A cascade's decisions (which located region, the mL removed far from it): why a
        # liver is shorter or longer than the scan's, next to the Dice.
        "notes": result.notes,
        # The quality control's verdict on scan and mask (a field of view that cuts the
        # liver, too few slices): the reason a Dice may be low, next to the Dice.
        "qc": result.qc,
        "figure": str(figure),
        "seconds": result.seconds,
    }


def _ct_on_grid(case: RealCase, reference: nib.Nifti1Image) -> np.ndarray | None:
    """The CT on the reference's voxels, for the figure (NIfTI scans only)."""
    if case.scan.is_dir():
        from monai.transforms import LoadImage

        image = LoadImage(image_only=True)(str(case.scan))
        return on_reference_grid(np.asarray(image), np.asarray(image.affine), reference)
    scan = nib.load(str(case.scan))
    return on_reference_grid(np.asarray(scan.dataobj), scan.affine, reference)


def run_sim2real(
    ckpt: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    overlays: Sequence[str | os.PathLike] = (),
    cases: Sequence[RealCase] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Score ``ckpt`` on real scans; writes ``sim2real.json`` and the figures.

    Args:
        ckpt: the weights (trained on phantoms), or several: an ensemble.
        out_dir: output folder.
        overlays: configs stacked on common.yaml (the ones the model was trained with):
            paths, or names of the bundle's configs (``demo.yaml``).
        cases: real scans with labels (default: ``../shared/data/real_ct``).
        **overrides: common.yaml ids (e.g. ``tta=True``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = list(cases) if cases is not None else default_cases()
    missing = [str(p) for c in cases for p in (c.scan, c.labels) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"real CT data not found: {', '.join(missing)}")
    # A bare name that is not a file here is one of the bundle's configs.
    overlays = [o if Path(o).exists() else config_file(str(o)) for o in overlays]
    predictor = build_predictor(ckpt, [config_file("common.yaml"), *overlays], **overrides)
    results = [score_case(case, predictor, out) for case in cases]
    checkpoint = str(ckpt) if isinstance(ckpt, (str, os.PathLike)) else [str(c) for c in ckpt]
    record = {"checkpoint": checkpoint, "overlays": [str(o) for o in overlays], "cases": results}
    write_json(record, out / "sim2real.json")
    return record
