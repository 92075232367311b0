"""Read the headers of a DICOM series folder and refuse series that would be read wrongly.

ITK, which reads the pixels, silently takes one series when a folder holds several, and
builds the grid from the first slices' spacing when a slice is missing, so the volume is
plausible and wrong. Reading the headers first (pydicom, no pixel data) catches both
and names the series or the positions at fault. The headers are also what a DICOM-SEG
must reference (``dicom_seg.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from pipeline.inference.scans import InvalidScanError

# Two slice distances are "equal" within this share of the median distance (or 0.02 mm):
# scanners write positions with float noise, a missing slice doubles the distance.
SPACING_TOLERANCE = 0.01
SPACING_TOLERANCE_MM = 0.02
_SHOWN = 5  # offending positions listed in a message


@dataclass
class DicomSeries:
    """The image headers of one DICOM series, in slice order.

    Attributes:
        folder: the series folder.
        files: the image files, sorted along the slice normal (ascending position).
        datasets: their headers (no pixel data), same order. Empty SOP Instance / Class
            UIDs (an anonymiser's doing) are filled from each file's meta header, which
            names the same instance.
        positions_mm: each slice's position along the normal (row x column direction).
        notes: what the user should know about the series' identity (missing study or
            series UIDs and the generated ones used instead).
    """

    folder: Path
    files: list[Path]
    datasets: list[Dataset]
    positions_mm: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def series_uid(self) -> str:
        """The Series Instance UID (generated when the files carry none; see ``notes``)."""
        return str(self.datasets[0].SeriesInstanceUID)


def _is_image(ds: Dataset) -> bool:
    return all(key in ds for key in ("ImagePositionPatient", "ImageOrientationPatient", "Rows"))


def _read_headers(folder: Path) -> list[tuple[Path, Dataset]]:
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue  # not DICOM (a README, a thumbnail): ITK ignores it as well
        if _is_image(ds):
            found.append((path, ds))
    return found


def _describe_series(uid: str, items: list[tuple[Path, Dataset]]) -> str:
    description = str(items[0][1].get("SeriesDescription", "") or "")
    number = items[0][1].get("SeriesNumber")
    label = f"series {number}" if number not in (None, "") else "series"
    text = f"{label} {uid or '(no Series Instance UID)'}: {len(items)} images"
    return text + (f", '{description}'" if description else "")


def _one_series(folder: Path, headers: list[tuple[Path, Dataset]]) -> None:
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((path, ds))
    if len(groups) > 1:
        listed = "; ".join(_describe_series(uid, items) for uid, items in groups.items())
        raise InvalidScanError(
            f"{folder}: holds {len(groups)} DICOM series ({listed}); put each series in its "
            "own folder (each becomes its own case), they are never merged"
        )


def _common_value(folder: Path, headers: list[tuple[Path, Dataset]], key: str) -> list[float]:
    values = Counter(
        tuple(round(float(v), 4) for v in np.atleast_1d(ds[key].value)) for _, ds in headers
    )
    if len(values) > 1:
        shown = ", ".join(f"{list(v)} ({n} images)" for v, n in values.most_common(_SHOWN))
        raise InvalidScanError(f"{folder}: the images disagree on {key}: {shown}")
    return list(next(iter(values)))


def _check_even_spacing(folder: Path, positions: np.ndarray, numbers: list[str]) -> None:
    """Refuse duplicate positions and uneven slice distances, naming the positions."""
    if len(positions) < 2:
        return
    steps = np.diff(positions)
    duplicate = np.flatnonzero(steps < 1e-3)
    if duplicate.size:
        at = ", ".join(
            f"{positions[i]:.2f} mm (instances {numbers[i]} and {numbers[i + 1]})"
            for i in duplicate[:_SHOWN]
        )
        raise InvalidScanError(
            f"{folder}: {duplicate.size} pair(s) of images at the same slice position: {at}; "
            "several acquisitions or phases in one series?"
        )
    expected = float(np.median(steps))
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE * expected)
    uneven = np.flatnonzero(np.abs(steps - expected) > tolerance)
    if uneven.size:
        at = ", ".join(
            f"{steps[i]:.2f} mm between {positions[i]:.2f} and {positions[i + 1]:.2f} mm "
            f"(instances {numbers[i]} and {numbers[i + 1]})"
            for i in uneven[:_SHOWN]
        )
        raise InvalidScanError(
            f"{folder}: slices are not evenly spaced (most are {expected:.2f} mm apart; "
            f"{uneven.size} distance(s) differ: {at}): missing slices or mixed spacing "
            "would give a wrongly scaled volume"
        )


def _fill_identity(series: DicomSeries) -> None:
    """Fill UIDs an anonymiser emptied, so the series can be referenced; note what was made."""
    for ds in series.datasets:
        meta = getattr(ds, "file_meta", None)
        if not str(ds.get("SOPInstanceUID", "") or "") and meta is not None:
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        if not str(ds.get("SOPClassUID", "") or "") and meta is not None:
            ds.SOPClassUID = meta.MediaStorageSOPClassUID
    instances = sorted(str(ds.SOPInstanceUID) for ds in series.datasets)
    for key, name in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
        if str(series.datasets[0].get(key, "") or ""):
            continue
        # Derived from the instances, so a re-run references the same made-up UID.
        uid = generate_uid(entropy_srcs=[key, *instances])
        for ds in series.datasets:
            setattr(ds, key, uid)
        series.notes.append(
            f"the series has no {key} (anonymised?): a generated {name} UID {uid} is used, "
            "so a DICOM-SEG made from it cannot be filed with the original study"
        )


def read_series(folder: str | Path) -> DicomSeries:
    """Read and check the headers of the one DICOM series in ``folder``.

    Args:
        folder: a folder of DICOM files (one image per file).

    Returns:
        The series, sorted along the slice normal.

    Raises:
        InvalidScanError: no image file; several series (each named by its Series Instance
            UID); images that disagree on orientation, size or pixel spacing; two images at
            one position; or uneven slice distances (a missing slice), with the positions.
    """
    folder = Path(folder)
    headers = _read_headers(folder)
    if not headers:
        raise InvalidScanError(f"{folder}: no DICOM image with a position and orientation")
    _one_series(folder, headers)
    orientation = np.array(_common_value(folder, headers, "ImageOrientationPatient"))
    _common_value(folder, headers, "Rows")
    _common_value(folder, headers, "Columns")
    if all("PixelSpacing" in ds for _, ds in headers):
        _common_value(folder, headers, "PixelSpacing")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for _, ds in headers]
    )
    order = np.argsort(positions, kind="stable")
    headers = [headers[i] for i in order]
    positions = positions[order]
    numbers = [str(ds.get("InstanceNumber", "?")) for _, ds in headers]
    _check_even_spacing(folder, positions, numbers)
    series = DicomSeries(
        folder=folder,
        files=[path for path, _ in headers],
        datasets=[ds for _, ds in headers],
        positions_mm=positions,
    )
    _fill_identity(series)
    return series
