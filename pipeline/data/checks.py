"""Checks of a training data set before the first epoch: labels that belong to their images.

Training resamples each volume on its own affine, so a label map of another shape than
its image, or one shifted by 30 mm, trains without a word on misplaced labels. The grids
are compared from the NIfTI headers (no voxel data is read): same shape, and the same
world positions of the grid's eight corner voxels within a tolerance in mm, matched as a
set, so one grid stored in another axis order (RAS against LAS) still agrees. Label
values are checked as the labels are loaded (:class:`CheckLabelValuesd`), where the
voxels are read anyway.

Written by hand: MONAI checks neither before training.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pipeline.names import NIFTI_SUFFIXES

GRID_TOLERANCE_MM = 1.0
"""Largest distance between an image's and its label's corner voxels; a tenth of the
usual slice and enough for headers rounded to float32."""


class TrainingDataError(ValueError):
    """A training case whose label does not fit its image; the message names both files."""


@dataclass(frozen=True)
class BadCase:
    """A case left out of training (``skip_bad_cases``), with the problem."""

    image: str
    label: str
    problem: str


def _corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World positions (mm) of the grid's eight corner voxel centres, sorted."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape[:3]])), dtype=float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world[np.lexsort(world.T[::-1])]


def grid_problem(image: str | Path, label: str | Path, tolerance_mm: float) -> str | None:
    """Why ``label`` does not lie on ``image``'s grid (None when it does, or when unknown).

    Only NIfTI pairs are compared (from their headers); a DICOM series is not.
    """
    if not all(str(p).endswith(NIFTI_SUFFIXES) for p in (image, label)):
        return None
    try:
        image_nii, label_nii = nib.load(str(image)), nib.load(str(label))
    except Exception as err:  # nibabel raises several types for unreadable files
        return f"unreadable NIfTI header ({type(err).__name__}: {err})"
    shape, label_shape = image_nii.shape[:3], label_nii.shape[:3]
    if sorted(shape) != sorted(label_shape):
        return f"label shape {label_shape} differs from the image's {shape}"
    # One grid stored in another axis order has the same corners in the world.
    shift = np.abs(
        _corners(image_nii.affine, shape) - _corners(label_nii.affine, label_shape)
    ).max()
    if shift > tolerance_mm:
        return (
            f"label grid is {shift:.1f} mm away from the image's (corner voxels; tolerance "
            f"{tolerance_mm:g} mm): misaligned or another scan's label"
        )
    return None


def check_training_cases(
    split: Mapping[str, Sequence[Mapping[str, Any]]],
    tolerance_mm: float = GRID_TOLERANCE_MM,
    skip_bad_cases: bool = False,
) -> tuple[dict[str, list[dict[str, Any]]], list[BadCase]]:
    """Check that every labelled case's label lies on its image's grid.

    Args:
        split: ``{"training": [...], "validation": [...], ...}`` of ``{"image", "label"}``.
        tolerance_mm: see :data:`GRID_TOLERANCE_MM`.
        skip_bad_cases: leave failing cases out (returned) instead of stopping.

    Returns:
        The split without the bad cases, and the bad cases.

    Raises:
        TrainingDataError: the first failing cases (up to five, each with both files),
            unless ``skip_bad_cases``.
    """
    kept: dict[str, list[dict[str, Any]]] = {}
    bad: list[BadCase] = []
    for part, cases in split.items():
        kept[part] = []
        for case in cases:
            problem = None
            if case.get("label"):
                problem = grid_problem(case["image"], case["label"], tolerance_mm)
            if problem is None:
                kept[part].append(dict(case))
            else:
                bad.append(BadCase(str(case["image"]), str(case["label"]), problem))
    if bad and not skip_bad_cases:
        listed = "; ".join(f"{b.label} (for {b.image}): {b.problem}" for b in bad[:5])
        raise TrainingDataError(
            f"{len(bad)} training case(s) whose label does not fit the image: {listed}. Fix "
            "them, or pass --skip_bad_cases True to train without them (they are listed)"
        )
    return kept, bad


class CheckLabelValuesd(MapTransform):
    """Refuse a label map with values other than background, liver and tumour.

    Without it a label value 5 (another data set's liver) reaches the loss as "index 5 is
    out of bounds", naming no file.

    Args:
        keys: label keys.
        num_classes: allowed values are ``0 .. num_classes - 1``.
        allow_missing_keys: pass data without labels.
    """

    def __init__(
        self, keys: KeysCollection, num_classes: int = 3, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = int(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check the labels under ``keys``; the data passes through unchanged."""
        d = dict(data)
        for key in self.key_iterator(d):
            labels = torch.as_tensor(d[key])
            if self._all_class_indices(labels):
                continue
            # Only a bad map pays for the sort that lists its values (0.6 s at 272^2 x 144).
            bad = [v for v in torch.unique(labels).tolist() if not self._is_class_index(v)]
            if bad:
                meta = getattr(d[key], "meta", {}) or {}
                source = meta.get("filename_or_obj", f"the '{key}' entry")
                shown = ", ".join(f"{v:g}" for v in bad[:10])
                raise TrainingDataError(
                    f"{source}: label values {shown} outside 0-{self.num_classes - 1} "
                    "(0 background, 1 liver, 2 tumour); for another convention pass a "
                    'label map, e.g. --label_map "{5: 1}" (5 -> liver, the rest background)'
                )
        return d

    def _is_class_index(self, value: float) -> bool:
        # value == value is False for NaN, which int() would not convert.
        return value == value and 0 <= value < self.num_classes and value == int(value)

    def _all_class_indices(self, labels: torch.Tensor) -> bool:
        """Whether every value is a whole number in ``0 .. num_classes - 1``.

        Two reductions instead of ``torch.unique``'s sort of the whole map, which took more
        than half of the time a training run spent caching its cases. NaN fails both bounds.
        """
        if labels.numel() == 0:
            return True
        low, high = torch.aminmax(labels)
        if not (bool(low >= 0) and bool(high < self.num_classes)):
            return False
        return not labels.is_floating_point() or torch.equal(labels, labels.trunc())
