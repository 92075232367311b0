"""Write a small CT volume as a DICOM series (one file per slice), for the DICOM tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(
    folder: Path,
    volume_hu: np.ndarray,
    spacing: Sequence[float] = (0.8, 0.9, 2.5),
    origin_lps: Sequence[float] = (-120.0, -35.5, -300.25),
    positions_mm: Sequence[float] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    prefix: str = "slice",
) -> list[Path]:
    """Write ``volume_hu`` (X columns, Y rows, Z slices) as an axial CT series in LPS.

    Args:
        folder: where the files go (created).
        volume_hu: int16 HU values; slice ``k`` is ``volume_hu[:, :, k].T`` (rows, columns).
        spacing: column (x), row (y) and slice spacing in mm.
        origin_lps: the first pixel of the first slice, in patient LPS mm.
        positions_mm: each slice's z position (default: evenly spaced by ``spacing[2]``).
        series_uid: the Series Instance UID (default: a new one).
        study_uid: the Study Instance UID (default: a new one).
        prefix: file name prefix (two series in one folder need different ones).

    Returns:
        The written files, slice by slice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = volume_hu.shape[2]
    zs = (
        positions_mm
        if positions_mm is not None
        else [origin_lps[2] + k * spacing[2] for k in range(n)]
    )
    series_uid, study_uid = series_uid or generate_uid(), study_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for k, z in enumerate(zs):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "PHANTOM-1", "Phantom^Test"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261203", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "synthetic"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{origin_lps[0]:.4f}", f"{origin_lps[1]:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = volume_hu.shape[1], volume_hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(
            volume_hu[:, :, min(k, n - 1)].T.astype("<i2")
        ).tobytes()
        path = folder / f"{prefix}{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
