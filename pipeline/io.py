"""Reading and atomic writing of NIfTI / NRRD / MetaImage volumes and small text files.

Writes go to a temporary name in the destination folder and are renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Args:
        path: the final file name.
        suffix: suffix of the temporary name (defaults to the final name's suffixes, so
            writers that pick a format from the extension, like nibabel, still work).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes owner-only files; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Save ``array`` with ``affine`` (voxel -> world RAS mm) atomically.

    The header's qform and sform both carry the affine with code 1 (scanner), units mm,
    and the on-disk type is the array's own dtype (int16 CT, uint8 labels).
    """
    return _save_scanner_nifti(np.asarray(array), affine, path)


def _save_scanner_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, slope: float = 1.0
) -> Path:
    """``array`` in its own dtype, qform and sform = ``affine`` (code 1), mm, atomically."""
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=float))
    image.header.set_data_dtype(array.dtype)
    if slope != 1.0:
        image.header.set_slope_inter(slope, 0.0)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return Path(path)


PROBABILITY_LEVELS = 255
"""A probability map is stored as uint8 0..255 with the NIfTI slope 1 / 255."""


def save_probability_map(
    probability: np.ndarray, affine: np.ndarray, path: str | os.PathLike
) -> Path:
    """Save a probability volume (values in [0, 1]) as uint8 with slope 1/255, atomically.

    A quarter of float32's size before gzip and far less after, with a step of 0.004:
    fine for a ROC curve. nibabel's ``get_fdata()`` (and ITK, 3D Slicer) read the
    probabilities back through the header's slope.
    """
    levels = np.rint(np.clip(probability, 0.0, 1.0) * PROBABILITY_LEVELS).astype(np.uint8)
    return _save_scanner_nifti(levels, affine, path, slope=1.0 / PROBABILITY_LEVELS)


def save_label_map_like(
    labels: np.ndarray, reference: str | os.PathLike, path: str | os.PathLike
) -> Path:
    """Save a uint8 label map with the header of the NIfTI scan it was made from.

    The reference's affine, qform / sform (and their codes) and units are kept, so the
    mask overlays the scan exactly in any viewer; only the data type (uint8), the shape
    (a trailing singleton dimension of the scan is dropped) and the scaling change.

    Args:
        labels: (X, Y, Z) labels in the reference's voxel order.
        reference: the NIfTI scan.
        path: the output file.
    """
    scan = nib.load(str(reference))
    if tuple(scan.shape[:3]) != tuple(labels.shape):
        raise ValueError(f"labels {labels.shape} do not match {reference} {scan.shape}")
    header = scan.header.copy()
    image = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), scan.affine, header=header)
    image.header.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    image.set_qform(scan.get_qform(), code=int(scan.header["qform_code"]))
    image.set_sform(scan.get_sform(), code=int(scan.header["sform_code"]))
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return Path(path)


def save_label_map_itk_like(
    labels: np.ndarray, reference: str | os.PathLike, path: str | os.PathLike
) -> Path:
    """Save a uint8 label map in an ITK format (NRRD, MetaImage) with a scan's geometry.

    Only the reference's header is read (origin, spacing, direction); the file type
    follows ``path``'s suffix and the voxels are compressed.

    Args:
        labels: (X, Y, Z) labels in the reference's voxel order, as MONAI's ITK reader
            returns arrays (ITK's own numpy view is (Z, Y, X)).
        reference: the scan (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``).
        path: the output file (``.nrrd`` or ``.mha``).
    """
    import itk  # heavy: imported only when an ITK-format scan is written back

    reader = itk.ImageFileReader.New(FileName=str(reference))
    reader.UpdateOutputInformation()  # the header only, no voxel data
    scan = reader.GetOutput()
    size = tuple(int(n) for n in scan.GetLargestPossibleRegion().GetSize())
    if size[:3] != tuple(labels.shape):
        raise ValueError(f"labels {labels.shape} do not match {reference} {size}")
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(labels, np.uint8).transpose()))
    image.SetOrigin(scan.GetOrigin())
    image.SetSpacing(scan.GetSpacing())
    image.SetDirection(scan.GetDirection())
    with atomic_path(path) as tmp:
        itk.imwrite(image, str(tmp), compression=True)
    return Path(path)


def sha256_of(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_identity(checkpoint: Any) -> tuple[Any, str | None]:
    """How outputs name a model: its path(s) and SHA-256 (several joined by ``+``).

    ``checkpoint`` is one file, several (a fold ensemble), or None. A file that does not
    exist has no hash (None for the whole identity).
    """
    if not checkpoint:
        return None, None
    paths = (
        [Path(checkpoint)]
        if isinstance(checkpoint, (str, os.PathLike))
        else [Path(c) for c in checkpoint]
    )
    named = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
    if not all(p.is_file() for p in paths):
        return named, None
    return named, "+".join(sha256_of(p) for p in paths)


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: NaN and inf -> None, numpy scalars -> Python, tuples -> lists.

    The one sanitiser of every JSON file the project writes (reports, sweep results).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically, indented, keys in insertion order."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)
