"""A corpus of bad inputs, each with the outcome it must get: inference, evaluation, training.

Made from a synthetic phantom, so it needs no data; ``python tests/bad_inputs.py OUT``
writes it for trying by hand (``OUT/inference``, ``OUT/evaluation``, ``OUT/training``).
Each entry says what the command must do with it: ``fail`` (named, with a message holding
``expect``: failures.csv of a folder run or of an evaluation, the error or the excluded
list of a training run), ``warn`` (segmented, a QC reason holding ``expect``) or
``left_out`` (not a scan, listed in run.json with a reason holding ``expect``), and
``done`` for the good inputs beside them.
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
from synthetic_dicom import write_ct_series

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.io import save_nifti


@dataclass(frozen=True)
class Expected:
    """What the run must do with one input: ``fail``, ``warn``, ``left_out`` or ``done``."""

    outcome: str
    expect: str = ""


def _phantom():
    # A realistic abdomen at a small size: air around the body, a 1-2 L liver.
    return generate_phantom(11, PhantomConfig(shape=(64, 64, 48), orientation="RAS"))


def write_corpus(folder: Path) -> dict[str, Expected]:
    """Write the corpus into ``folder``; returns the expected outcome per case name."""
    folder.mkdir(parents=True, exist_ok=True)
    p = _phantom()
    image, affine = p.image, p.affine
    out: dict[str, Expected] = {}

    def nifti(name: str, data: np.ndarray, aff: np.ndarray = affine) -> Path:
        return save_nifti(data, aff, folder / f"{name}.nii.gz")

    # Good scans: segmented whatever their neighbours are.
    nifti("good_a", image)
    nifti("good_b", np.flip(image, axis=0).copy(), affine @ np.diag([-1, 1, 1, 1]))
    out["good_a"] = out["good_b"] = Expected("done")

    # Files that cannot be read.
    good_bytes = (folder / "good_a.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(good_bytes[: len(good_bytes) // 2])
    out["truncated"] = Expected("fail", "truncated")
    (folder / "not_gzip.nii.gz").write_bytes(b"this is not a NIfTI file at all" * 20)
    out["not_gzip"] = Expected("fail", "unreadable")
    (folder / "empty.nii.gz").write_bytes(b"")
    out["empty"] = Expected("fail", "unreadable")
    (folder / "bad_header.nii").write_bytes(gzip.decompress(good_bytes)[:200])
    out["bad_header"] = Expected("fail", "unreadable")

    # Not a 3D volume, or not finite.
    nifti("flat_2d", image[:, :, 20])
    out["flat_2d"] = Expected("fail", "2D image")
    nifti("series_4d", np.stack([image, image], axis=-1))
    out["series_4d"] = Expected("fail", "channels or time points")
    nifti("one_slice", image[:, :, 20:21])
    out["one_slice"] = Expected("fail", "single slice")
    nan = image.astype(np.float32)
    nan[5, 5, 5] = np.nan
    nifti("nan_voxel", nan)
    out["nan_voxel"] = Expected("fail", "NaN or infinite")
    inf = image.astype(np.float32)
    inf[6, 6, 6] = np.inf
    nifti("inf_voxel", inf)
    out["inf_voxel"] = Expected("fail", "NaN or infinite")

    # Broken or doubtful geometry.
    # No sform / qform: the grid comes from pixdim, where one voxel size is zero.
    zero = nib.Nifti1Image(image, None)
    zero.header["pixdim"][1:4] = (0.8, 0.0, 2.5)
    nib.save(zero, folder / "zero_pixdim.nii.gz")
    out["zero_pixdim"] = Expected("fail", "not positive")
    degenerate = nib.Nifti1Image(image, affine)
    degenerate.set_qform(affine, code=1)
    broken = affine.copy()
    broken[:, 1] = 0
    degenerate.set_sform(broken, code=1)
    nib.save(degenerate, folder / "zero_sform_column.nii.gz")
    out["zero_sform_column"] = Expected("fail", "sform (code 1) is degenerate")
    disagree = nib.Nifti1Image(image, affine)
    shifted = affine.copy()
    shifted[2, 3] += 50.0
    disagree.set_qform(shifted, code=1)
    disagree.set_sform(affine, code=1)
    nib.save(disagree, folder / "sform_qform_disagree.nii.gz")
    out["sform_qform_disagree"] = Expected("warn", "sform and qform place the grid")
    stale = affine.copy()
    stale[:3, :2] /= 8
    nifti("stale_spacing", image, stale)
    out["stale_spacing"] = Expected("warn", "a stale voxel size")
    nifti("three_slices", image[:, :, 20:23])
    out["three_slices"] = Expected("warn", "3 slices cover")

    # Not CT in HU.
    nifti("constant", np.full(image.shape, 40, np.int16))
    out["constant"] = Expected("fail", "constant image")
    nifti("raw_stored_values", (image.astype(np.int32) + 1024).astype(np.int16))
    out["raw_stored_values"] = Expected("fail", "none below 0")
    nifti("cropped_no_air", np.clip(image, -150, None))
    out["cropped_no_air"] = Expected("warn", "no air")
    nifti("mr_like_uint8", np.clip((image + 1000) // 8, 0, 255).astype(np.uint8))
    out["mr_like_uint8"] = Expected("warn", "no air")

    # DICOM folders.
    (folder / "dicom_empty").mkdir()
    out["dicom_empty"] = Expected("fail", "empty folder")
    (folder / "dicom_not_dicom").mkdir()
    (folder / "dicom_not_dicom" / "readme.txt").write_text("not an image")
    out["dicom_not_dicom"] = Expected("fail", "no DICOM file")
    ct = image[16:48, 16:48, 16:28]  # 32 x 32 x 12: small series
    write_ct_series(folder / "dicom_two_series", ct, series_uid="1.2.826.0.1.1", prefix="a")
    write_ct_series(folder / "dicom_two_series", ct, series_uid="1.2.826.0.1.2", prefix="b")
    out["dicom_two_series"] = Expected("fail", "1.2.826.0.1.1")
    gap = [-300.0 + 2.5 * k for k in range(12)]
    del gap[5]
    write_ct_series(folder / "dicom_missing_slice", ct[:, :, :11], positions_mm=gap)
    out["dicom_missing_slice"] = Expected("fail", "not evenly spaced")
    same = [-300.0 + 2.5 * k for k in range(12)]
    same[4] = same[3]
    write_ct_series(folder / "dicom_duplicate_position", ct, positions_mm=same)
    out["dicom_duplicate_position"] = Expected("fail", "same slice position")

    # ITK formats.
    itk.imwrite(itk.image_from_array(np.zeros((30, 40), np.int16)), str(folder / "flat.mha"))
    out["flat"] = Expected("fail", "2D image")
    nan_itk = np.ascontiguousarray(image.T.astype(np.float32))
    nan_itk[3, 3, 3] = np.nan
    itk.imwrite(itk.image_from_array(nan_itk), str(folder / "nan.nrrd"))
    out["nan"] = Expected("fail", "NaN or infinite")

    # Not scans: listed as left out, never silently dropped, never segmented.
    nifti("old_result_seg", (image > 100).astype(np.uint8))
    out["old_result_seg.nii.gz"] = Expected("left_out", "a mask")
    (folder / "notes.txt").write_text("scanned on Tuesday")
    out["notes.txt"] = Expected("left_out", "not an image file")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out["scan.png"] = Expected("left_out", "not an image file")
    return out


def write_evaluation_corpus(folder: Path) -> dict[str, Expected]:
    """Predictions (``pred/<case>_seg.nii.gz``) and references (``ref/<case>.nii.gz``)."""
    p = _phantom()
    pred, ref = folder / "pred", folder / "ref"
    out: dict[str, Expected] = {}
    for name in ("good", "corrupt_pred", "shifted_pred", "wrong_shape_pred", "organ_labels"):
        save_nifti(p.label, p.affine, ref / f"{name}.nii.gz")
    save_nifti(p.label, p.affine, pred / "good_seg.nii.gz")
    out["good"] = Expected("done")
    (pred / "corrupt_pred_seg.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out["corrupt_pred"] = Expected("fail", "corrupt_pred_seg.nii.gz")
    shifted = p.affine.copy()
    shifted[2, 3] += 30.0
    save_nifti(p.label, shifted, pred / "shifted_pred_seg.nii.gz")
    out["shifted_pred"] = Expected("fail", "prediction and reference grids differ")
    save_nifti(p.label[:, :, :-4], p.affine, pred / "wrong_shape_pred_seg.nii.gz")
    out["wrong_shape_pred"] = Expected("fail", "prediction and reference grids differ")
    save_nifti(p.label * 5, p.affine, pred / "organ_labels_seg.nii.gz")  # 5 (and 10)
    out["organ_labels"] = Expected("fail", "label values [5")
    return out


def write_training_corpus(folder: Path) -> tuple[Path, dict[str, Expected]]:
    """A datalist of labelled cases, some whose label does not fit its image."""
    p = _phantom()
    records, out = [], {}

    def case(name: str, label: np.ndarray, label_affine: np.ndarray, outcome: Expected) -> None:
        image = save_nifti(p.image, p.affine, folder / f"{name}.nii.gz")
        label_path = save_nifti(label, label_affine, folder / f"{name}_label.nii.gz")
        records.append({"image": str(image), "label": str(label_path)})
        out[name] = outcome

    for i in range(3):
        case(f"good{i}", p.label, p.affine, Expected("done"))
    shifted = p.affine.copy()
    shifted[0, 3] += 30.0
    case("shifted_label", p.label, shifted, Expected("fail", "30.0 mm away"))
    case("cropped_label", p.label[:, :, 4:], p.affine, Expected("fail", "label shape"))
    case("organ_values", p.label * 5, p.affine, Expected("fail", "label values 5"))
    datalist = folder / "datalist.json"
    datalist.write_text(
        json.dumps({"training": records[:1] + records[2:], "validation": records[1:2]})
    )
    return datalist, out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/bad_inputs.py OUT_FOLDER")
    root = Path(sys.argv[1])
    corpora = {
        "inference": write_corpus(root / "inference"),
        "evaluation": write_evaluation_corpus(root / "evaluation"),
        "training": write_training_corpus(root / "training")[1],
    }
    for part, corpus in corpora.items():
        for name, expected in corpus.items():
            print(f"{part:10s} {name:28s} {expected.outcome:9s} {expected.expect}")
