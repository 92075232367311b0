"""Where and how a folder run writes a scan's mask: NIfTI, DICOM-SEG or the input's format.

``output_paths`` names the files of an ``--output_format`` (and refuses a DICOM-SEG for a
scan that is not a DICOM series, before any work); ``save_masks`` writes them. Split from
``folder_run.py``, which runs the loop and writes the tables.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.inference.dicom_seg import save_dicom_seg
from pipeline.inference.dicom_series import read_series
from pipeline.inference.prediction import Prediction
from pipeline.inference.scans import OUTPUT_SUFFIX, InvalidScanError, Scan
from pipeline.io import save_label_map_itk_like, save_label_map_like, save_nifti
from pipeline.names import split_image_suffix

OUTPUT_FORMATS = ("nifti", "dicom_seg", "both", "native")


def mask_path(output_dir: Path, case: str) -> Path:
    """Where the NIfTI mask of ``case`` goes."""
    return output_dir / f"{case}{OUTPUT_SUFFIX}.nii.gz"


def output_paths(output_dir: Path, scan: Scan, output_format: str) -> dict[str, Path]:
    """The mask files ``scan`` gets in ``output_format``, by writer: nifti, dicom_seg, itk.

    Raises:
        InvalidScanError: a DICOM-SEG asked for a scan that is not a DICOM series.
    """
    stem = output_dir / f"{scan.case}{OUTPUT_SUFFIX}"
    if output_format == "native":
        if scan.kind == "dicom":
            return {"dicom_seg": stem.with_name(stem.name + ".dcm")}
        if scan.kind == "itk":
            # One file back: NRRD stays NRRD, MetaImage is written as a single .mha.
            split = split_image_suffix(scan.path.name)
            suffix = ".nrrd" if split is not None and split[1] in (".nrrd", ".nhdr") else ".mha"
            return {"itk": stem.with_name(stem.name + suffix)}
        return {"nifti": mask_path(output_dir, scan.case)}
    paths = {}
    if output_format in ("nifti", "both"):
        paths["nifti"] = mask_path(output_dir, scan.case)
    if output_format == "dicom_seg" and scan.kind != "dicom":
        kind = {"nifti": "NIfTI", "itk": "NRRD / MetaImage"}.get(scan.kind, scan.kind)
        raise InvalidScanError(
            f"{scan.path}: --output_format dicom_seg writes a DICOM-SEG, which needs a DICOM "
            f"series as input, not a {kind} file (use --output_format nifti, both or native)"
        )
    # "both" in a mixed folder: every scan gets its NIfTI, DICOM series their SEG too.
    if output_format in ("dicom_seg", "both") and scan.kind == "dicom":
        paths["dicom_seg"] = stem.with_name(stem.name + ".dcm")
    return paths


def save_masks(
    scan: Scan, prediction: Prediction, outputs: dict[str, Path], checkpoint_sha256: str | None
) -> list[str]:
    """Write the mask to each of ``outputs``; returns notes for the case's warnings."""
    notes = []
    for writer, path in outputs.items():
        if writer == "nifti" and scan.kind == "nifti":
            save_label_map_like(prediction.labels, scan.path, path)
        elif writer == "nifti":  # DICOM or ITK input: its grid as ITK read it, in RAS
            save_nifti(prediction.labels, prediction.affine, path)
        elif writer == "itk":
            save_label_map_itk_like(prediction.labels, scan.path, path)
        else:
            series = read_series(scan.path)
            save_dicom_seg(prediction.labels, prediction.affine, series, path, checkpoint_sha256)
            notes += series.notes
    return notes
