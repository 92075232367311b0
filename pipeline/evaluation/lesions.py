"""Lesion-level (per connected component) tumour detection, LiTS style.

MONAI has no lesion matching (its metrics are all voxel or surface based), so this
module implements it by hand on connected components
(:func:`pipeline.transforms.masks.label_components`).

Definitions used throughout:

* A lesion is a 3D connected component of a binary tumour mask under 26-connectivity
  (faces, edges and corners all connect). Consequence: two
  reference lesions that touch, even at a single corner, are one lesion. A binary
  mask cannot tell touching lesions apart, so no connectivity choice is "right";
  26 is the most permissive and avoids counting a diagonal staircase as many lesions.
* Lesion size is the equivalent-sphere diameter ``(6 V / pi) ** (1/3)`` in mm, from
  the physical volume ``V`` (voxel count times voxel volume), so it is comparable
  across anisotropic spacings. Size bins: ``< 10`` mm, ``10-20`` mm (20 included),
  ``> 20`` mm (``SIZE_BINS``).
* IoU criterion (LiTS): a reference lesion is detected when its IoU with the union of
  *all* predicted components that overlap it exceeds 0.5 (strictly). Merging the
  overlapping predicted pieces means a lesion predicted in two fragments (a split) is
  still judged on how well the fragments cover it together; the best single fragment
  IoU is reported as ``best_iou`` for comparison. Reference lesions are never merged,
  so a predicted blob that swallows two lesions (a merge) is scored against each
  lesion separately and is penalised by its extra volume.
* Any-overlap criterion: detected when at least one predicted voxel lies inside the
  reference lesion.
* TP counts detected reference lesions, FN the undetected ones (per criterion). FP
  counts predicted components that touch no reference lesion at all, identical for
  both criteria. TP and FP therefore count different objects (reference vs predicted
  components), which is the usual LiTS convention; precision = TP / (TP + FP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from pipeline.transforms.masks import label_components

DETECTION_IOU_THRESHOLD = 0.5
"""A lesion is detected under the IoU criterion when IoU > this value (strict)."""
SIZE_BINS: tuple[str, ...] = ("<10mm", "10-20mm", ">20mm")
"""Names of the equivalent-diameter bins, see :func:`size_bin`."""


def validate_pair(pred: ArrayLike, ref: ArrayLike, spacing: Sequence[float]) -> tuple[float, ...]:
    """Check that two volumes are comparable 3D arrays and return a clean spacing.

    Args:
        pred: Predicted volume.
        ref: Reference volume.
        spacing: Voxel spacing in mm along the three array axes.

    Returns:
        The spacing as a tuple of three floats.

    Raises:
        ValueError: On a shape mismatch (both shapes are named), a non-3D array or a
            spacing that is not three finite positive numbers.
    """
    pred_shape, ref_shape = np.shape(pred), np.shape(ref)
    if pred_shape != ref_shape:
        raise ValueError(f"shape mismatch: pred has shape {pred_shape}, ref has shape {ref_shape}")
    if len(ref_shape) != 3:
        raise ValueError(f"expected 3D volumes, got shape {ref_shape}")
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}") from err
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    return values


def bounding_box(mask: np.ndarray, margin: Sequence[int] | int = 0) -> tuple[slice, ...] | None:
    """Return the slices of the smallest box holding every True voxel, grown by a margin.

    Args:
        mask: Boolean volume.
        margin: Voxels added on each side (one value or one per axis), clipped to the
            array bounds.

    Returns:
        One slice per axis, or None when the mask is empty.
    """
    margins = [margin] * mask.ndim if isinstance(margin, int) else list(margin)
    box = []
    for axis in range(mask.ndim):
        # Project onto one axis at a time: much cheaper than np.argwhere on big volumes.
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        lo = max(int(hits[0]) - margins[axis], 0)
        hi = min(int(hits[-1]) + 1 + margins[axis], mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Diameter in mm of the sphere with the given volume in mm^3."""
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0))


def size_bin(diameter_mm: float) -> str:
    """Name of the size bin (``SIZE_BINS``) for an equivalent diameter in mm."""
    if diameter_mm < 10.0:
        return SIZE_BINS[0]
    if diameter_mm <= 20.0:
        return SIZE_BINS[1]
    return SIZE_BINS[2]


@dataclass(frozen=True)
class RefLesion:
    """One reference lesion and how it was detected."""

    case_id: str
    lesion_id: int
    diameter_mm: float
    volume_ml: float
    size_bin: str
    n_pred_overlapping: int
    best_iou: float
    """IoU with the single best-overlapping predicted component."""
    merged_iou: float
    """IoU with the union of all overlapping predicted components (the criterion)."""
    detected_iou: bool
    detected_any: bool


@dataclass(frozen=True)
class PredLesion:
    """One predicted lesion; a false positive when it touches no reference lesion."""

    case_id: str
    lesion_id: int
    diameter_mm: float
    volume_ml: float
    size_bin: str
    n_ref_overlapping: int
    false_positive: bool


@dataclass
class LesionDetection:
    """Lesion matching result of one case."""

    case_id: str
    ref: list[RefLesion] = field(default_factory=list)
    pred: list[PredLesion] = field(default_factory=list)

    @property
    def tp_iou(self) -> int:
        """Reference lesions detected under the IoU > 0.5 criterion."""
        return sum(lesion.detected_iou for lesion in self.ref)

    @property
    def tp_any(self) -> int:
        """Reference lesions detected under the any-overlap criterion."""
        return sum(lesion.detected_any for lesion in self.ref)

    @property
    def fn_iou(self) -> int:
        """Reference lesions missed under the IoU criterion."""
        return len(self.ref) - self.tp_iou

    @property
    def fn_any(self) -> int:
        """Reference lesions missed under the any-overlap criterion."""
        return len(self.ref) - self.tp_any

    @property
    def fp(self) -> int:
        """Predicted lesions overlapping no reference lesion."""
        return sum(lesion.false_positive for lesion in self.pred)


def _as_tumour_mask(mask: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(mask)
    # Guard against passing a label map: its liver voxels would all become "lesions".
    if array.dtype != bool and array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must be a binary tumour mask (e.g. label == TUMOUR)")
    return array.astype(bool, copy=False)


def lesion_detection(
    pred_tumour: ArrayLike,
    ref_tumour: ArrayLike,
    spacing: Sequence[float],
    case_id: str = "",
) -> LesionDetection:
    """Match predicted and reference tumour components of one case.

    Args:
        pred_tumour: Binary predicted tumour mask (3D).
        ref_tumour: Binary reference tumour mask (3D, same shape).
        spacing: Voxel spacing in mm along the three array axes.
        case_id: Identifier copied into every lesion record.

    Returns:
        Per-lesion records for both masks; TP / FP / FN are properties of the result.

    Raises:
        ValueError: On invalid shapes or spacing, or masks with values other than 0/1.
    """
    spacing = validate_pair(pred_tumour, ref_tumour, spacing)
    pred = _as_tumour_mask(pred_tumour, "pred_tumour")
    ref = _as_tumour_mask(ref_tumour, "ref_tumour")
    result = LesionDetection(case_id=case_id)
    # Labelling only the box around both masks gives the same components far faster.
    box = bounding_box(pred | ref, margin=1)
    if box is None:
        return result
    ref_lab, n_ref = label_components(ref[box])
    pred_lab, n_pred = label_components(pred[box])
    ref_sizes = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)

    # Contingency table of (ref component, pred component) overlaps in one pass.
    both = (ref_lab > 0) & (pred_lab > 0)
    codes = ref_lab[both].astype(np.int64) * (n_pred + 1) + pred_lab[both]
    pair_codes, pair_inter = np.unique(codes, return_counts=True)
    pair_ref, pair_pred = np.divmod(pair_codes, n_pred + 1)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    for k in range(1, n_ref + 1):
        sel = pair_ref == k
        inter, sizes = pair_inter[sel], pred_sizes[pair_pred[sel]]
        if inter.size:
            # Predicted components are disjoint, so the union's overlap and size are sums.
            merged = inter.sum() / (ref_sizes[k] + sizes.sum() - inter.sum())
            best = float(np.max(inter / (ref_sizes[k] + sizes - inter)))
        else:
            merged = best = 0.0
        volume_ml = ref_sizes[k] * voxel_ml
        diameter = equivalent_diameter_mm(volume_ml * 1000.0)
        result.ref.append(
            RefLesion(
                case_id=case_id,
                lesion_id=k,
                diameter_mm=diameter,
                volume_ml=float(volume_ml),
                size_bin=size_bin(diameter),
                n_pred_overlapping=int(inter.size),
                best_iou=best,
                merged_iou=float(merged),
                detected_iou=bool(merged > DETECTION_IOU_THRESHOLD),
                detected_any=bool(inter.size > 0),
            )
        )
    n_ref_touching = np.bincount(pair_pred, minlength=n_pred + 1)
    for j in range(1, n_pred + 1):
        volume_ml = pred_sizes[j] * voxel_ml
        diameter = equivalent_diameter_mm(volume_ml * 1000.0)
        result.pred.append(
            PredLesion(
                case_id=case_id,
                lesion_id=j,
                diameter_mm=diameter,
                volume_ml=float(volume_ml),
                size_bin=size_bin(diameter),
                n_ref_overlapping=int(n_ref_touching[j]),
                false_positive=bool(n_ref_touching[j] == 0),
            )
        )
    return result


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def summarize_detection(detections: Sequence[LesionDetection]) -> dict[str, object]:
    """Pool lesion detection over cases.

    Precision, recall and F1 are NaN when their denominator is zero (e.g. a data set
    without any reference or predicted lesion).

    Args:
        detections: One :class:`LesionDetection` per case.

    Returns:
        ``{"iou": {...}, "any": {...}, "by_size": {bin: {...}}, "n_ref", "n_pred"}``
        where each criterion holds ``tp, fp, fn, precision, recall, f1`` and each size
        bin holds ``n_ref, tp_iou, tp_any, recall_iou, recall_any`` (binned by reference
        size) and ``n_pred, fp`` (binned by predicted size).
    """
    refs = [lesion for d in detections for lesion in d.ref]
    preds = [lesion for d in detections for lesion in d.pred]
    fp = sum(p.false_positive for p in preds)
    tp_iou = sum(r.detected_iou for r in refs)
    tp_any = sum(r.detected_any for r in refs)
    by_size: dict[str, dict[str, float]] = {}
    for name in SIZE_BINS:
        bin_refs = [r for r in refs if r.size_bin == name]
        bin_preds = [p for p in preds if p.size_bin == name]
        n_iou = sum(r.detected_iou for r in bin_refs)
        n_any = sum(r.detected_any for r in bin_refs)
        by_size[name] = {
            "n_ref": len(bin_refs),
            "tp_iou": n_iou,
            "tp_any": n_any,
            "recall_iou": _ratio(n_iou, len(bin_refs)),
            "recall_any": _ratio(n_any, len(bin_refs)),
            "n_pred": len(bin_preds),
            "fp": sum(p.false_positive for p in bin_preds),
        }
    return {
        "n_ref": len(refs),
        "n_pred": len(preds),
        "iou": _prf(tp_iou, fp, len(refs) - tp_iou),
        "any": _prf(tp_any, fp, len(refs) - tp_any),
        "by_size": by_size,
    }
