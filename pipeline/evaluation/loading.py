"""Load a prediction and its reference as label maps on one grid, values 0 / 1 / 2.

Shared by the scoring (``scoring``), the report's overlays (``report.writer``) and the
post-processing tuning, so a pair is read, checked and remapped in exactly one way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    inv_ornt_aff,
    io_orientation,
    ornt2axcodes,
    ornt_transform,
)

from pipeline.evaluation.pairing import STRUCTURE_FILES, CasePair
from pipeline.labels import TUMOUR

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries for them to describe one grid."""


class GridMismatchError(ValueError):
    """A prediction and its reference are not on the same voxel grid."""


@dataclass
class LoadedPair:
    """Label arrays of one case on a common grid, values in 0..2.

    ``notes`` says what was done to put them there (a prediction stored in another axis
    order, reoriented to the reference's).
    """

    pred: np.ndarray
    ref: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)


def _read_structure_folder(folder: Path) -> tuple[np.ndarray, Any]:
    """A per-structure folder (``liver.nii.gz``, ``liver_tumor.nii.gz``) as one label map."""
    found = [(folder / name, value) for name, value in STRUCTURE_FILES.items()]
    found = [(path, value) for path, value in found if path.is_file()]
    if not found:
        raise ValueError(f"{folder} holds none of {', '.join(STRUCTURE_FILES)}")
    labels, first = None, None
    for path, value in found:  # the liver first, then tumour painted over it
        image = nib.load(path)
        mask = np.asanyarray(image.dataobj) > 0
        if first is None:
            labels, first = np.zeros(mask.shape, np.uint8), image
        elif mask.shape != labels.shape or not np.allclose(
            image.affine, first.affine, atol=AFFINE_TOLERANCE_MM
        ):
            raise ValueError(f"{path} is not on the grid of {found[0][0]}")
        labels[mask] = value
    return labels, first


def _read_labels(path: Path) -> tuple[np.ndarray, Any]:
    if path.is_dir():
        return _read_structure_folder(path)
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
        # Same rule as pipeline.transforms.labels.RemapLabelsd: unlisted values become 0, so a
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


def read_label_map(
    path: str | os.PathLike, label_map: Mapping[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A reference label map as uint8 0..2 (remapped when a map is given) and its affine.

    Raises:
        ValueError: not 3D, non-integer values, or labels outside 0..2 without a map.
    """
    data, image = _read_labels(Path(path))
    return _to_labels(data, Path(path), label_map), np.asarray(image.affine, dtype=np.float64)


def check_label_map(label_map: Mapping[int, int] | None, name: str) -> dict[int, int] | None:
    """``label_map`` with int keys and values; ValueError names ``name`` if it maps outside 0-2."""
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
    notes = []
    reoriented = _reoriented(pred_data, pred_img.affine, ref_img.affine, ref_data.shape)
    if reoriented is not None:
        pred_data, note = reoriented
        notes.append(note)
    elif pred_data.shape != ref_data.shape or not np.allclose(
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
        notes=notes,
    )


def _reoriented(
    data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple
) -> tuple[np.ndarray, str] | None:
    """``data`` in the target's axis order, when only axis order or direction differ.

    Returns None when the grids already agree or are not one grid stored two ways.
    """
    if data.shape == tuple(target_shape) and np.allclose(
        affine, target_affine, rtol=0, atol=AFFINE_TOLERANCE_MM
    ):
        return None
    source, target = io_orientation(affine), io_orientation(target_affine)
    transform = ornt_transform(source, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return None  # same axes: a genuine mismatch (shape, spacing or shift)
    moved = apply_orientation(data, transform)
    moved_affine = affine @ inv_ornt_aff(transform, data.shape)
    if moved.shape != tuple(target_shape) or not np.allclose(
        moved_affine, target_affine, rtol=0, atol=AFFINE_TOLERANCE_MM
    ):
        return None
    codes = "".join(ornt2axcodes(source)), "".join(ornt2axcodes(target))
    return moved, f"prediction stored as {codes[0]}, reoriented to the reference's {codes[1]}"


def load_image_on_grid(
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
