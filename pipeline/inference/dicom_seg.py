"""Write a mask as a DICOM Segmentation object (DICOM-SEG) of its source series.

A DICOM-SEG goes back into the archive the scan came from: PACS, OHIF, 3D Slicer and
MONAI Label read it. The object is built by ``highdicom``; this module only maps the
pipeline's label map onto the source images and names what was segmented and by what:

* one frame per source image that holds liver or tumour, each referencing that image's
  SOP Instance UID, in the series' frame of reference;
* two non-overlapping segments, numbered as the NIfTI labels (1 liver outside tumour,
  2 liver tumour), with SNOMED CT codes, so the SEG and the NIfTI mask are the same
  label map (the whole liver is both segments together, as LiTS scores it);
* the algorithm: this pipeline, its version and the checkpoint's SHA-256.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from pipeline import __version__
from pipeline.inference.dicom_series import DicomSeries
from pipeline.io import atomic_path
from pipeline.labels import LIVER, TUMOUR

ALGORITHM_NAME = "liver-tumor-pipeline"
SERIES_NUMBER = 901  # the SEG's own series; sorts after the usual scanner series numbers
# 5 % of a voxel: positions written by scanners round to 1e-3 mm or better.
_INDEX_TOLERANCE = 0.05
# highdicom logs each module it copies at INFO, which bundle runs show: ten lines per case.
logging.getLogger("highdicom").setLevel(logging.WARNING)


class DicomGeometryError(ValueError):
    """The mask's grid and the series' headers disagree (the SEG would be misplaced)."""


def segment_descriptions(checkpoint_sha256: str | None) -> list[hd.seg.SegmentDescription]:
    """The two segments (liver, liver tumour) with their codes and the algorithm."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        parameters={"checkpoint_sha256": checkpoint_sha256 or "unknown"},
    )
    liver = hd.seg.SegmentDescription(
        segment_number=LIVER,
        segment_label="Liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    tumour = hd.seg.SegmentDescription(
        segment_number=TUMOUR,
        segment_label="Liver tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[codes.SCT.Liver],
    )
    return [liver, tumour]


def _lps_to_ras(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, -1.0, 1.0])


def frames_of(labels: np.ndarray, affine: np.ndarray, series: DicomSeries) -> np.ndarray:
    """The label map as one (rows, columns) frame per source image, in ``series`` order.

    Each image's position and row / column directions are looked up in the mask's grid
    (``affine``: voxel -> RAS mm); the mask must hold that image as one whole slice.

    Args:
        labels: (X, Y, Z) labels as the series was read (ITK: X along the rows, Y along
            the columns of an image).
        affine: the mask's voxel-to-world (RAS mm) matrix.
        series: the source series.

    Returns:
        uint8 array (images, rows, columns).

    Raises:
        DicomGeometryError: an image that is not a slice of the mask's grid.
    """
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    frames = []
    for path, ds in zip(series.files, series.datasets, strict=True):
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, column_spacing = (float(v) for v in ds.get("PixelSpacing", [1.0, 1.0]))
        origin = _lps_to_ras(np.array([float(v) for v in ds.ImagePositionPatient]))
        # Where the image's first pixel and its next pixel along a row / column fall.
        corners = np.stack(
            [
                origin,
                origin + _lps_to_ras(orientation[:3]) * column_spacing,
                origin + _lps_to_ras(orientation[3:]) * row_spacing,
            ]
        )
        index = (inverse @ np.c_[corners, np.ones(3)].T)[:3].T
        expected = index[0] + np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
        z = int(round(index[0, 2]))
        if (
            np.abs(index - expected).max() > _INDEX_TOLERANCE
            or np.abs(index[0, :2]).max() > _INDEX_TOLERANCE
            or not 0 <= z < labels.shape[2]
            or (int(ds.Columns), int(ds.Rows)) != labels.shape[:2]
        ):
            raise DicomGeometryError(
                f"{path}: the image (position {list(ds.ImagePositionPatient)}, orientation "
                f"{orientation.tolist()}, {ds.Rows} x {ds.Columns}) is not a slice of the "
                f"mask's grid {labels.shape} (voxel {np.round(index[0], 3).tolist()})"
            )
        frames.append(np.ascontiguousarray(labels[:, :, z].T))
    return np.stack(frames).astype(np.uint8)


def build_segmentation(
    labels: np.ndarray,
    affine: np.ndarray,
    series: DicomSeries,
    checkpoint_sha256: str | None = None,
) -> hd.seg.Segmentation:
    """A binary DICOM-SEG of ``labels`` referencing every image of ``series``.

    Args:
        labels: (X, Y, Z) uint8 labels (0 background, 1 liver, 2 tumour) on the grid the
            series was read on.
        affine: that grid's voxel-to-world (RAS mm) matrix.
        series: the source series' headers (``dicom_series.read_series``).
        checkpoint_sha256: recorded as the algorithm's parameter.
    """
    frames = frames_of(labels, affine, series)
    bad = sorted(set(np.unique(frames).tolist()) - {0, LIVER, TUMOUR})
    if bad:
        raise ValueError(f"labels {bad} are not liver ({LIVER}) or tumour ({TUMOUR})")
    return hd.seg.Segmentation(
        source_images=series.datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(checkpoint_sha256),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=ALGORITHM_NAME,
        manufacturer_model_name="liver_tumor MONAI bundle",
        software_versions=__version__,
        # A model has no serial number; its weights' hash identifies it.
        device_serial_number=(checkpoint_sha256 or "unknown")[:16],
        content_description="Liver and liver tumour, automatic",
        series_description="Liver and liver tumour segmentation",
        # An empty prediction still gives a valid SEG (all frames kept, all zero).
        omit_empty_frames=bool(frames.any()),
    )


def save_dicom_seg(
    labels: np.ndarray,
    affine: np.ndarray,
    series: DicomSeries,
    path: str | os.PathLike,
    checkpoint_sha256: str | None = None,
) -> Path:
    """Build the DICOM-SEG (see :func:`build_segmentation`) and write it atomically."""
    segmentation = build_segmentation(labels, affine, series, checkpoint_sha256)
    with atomic_path(path, suffix=".dcm") as tmp:
        segmentation.save_as(tmp)
    return Path(path)
