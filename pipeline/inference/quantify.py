"""Clinical quantification of a liver / liver-tumour label map.

Given a label map (0 background, 1 liver, 2 tumour) and its voxel-to-world affine
(4x4, RAS millimetres, as nibabel returns it), :func:`quantify` reports:

* the liver volume (liver parenchyma plus tumour, in mL) and the parenchyma alone;
* the tumours, as 26-connected components of the tumour label, sorted by volume
  (largest first), each with its volume, largest axial diameter and world centroid;
* the total tumour volume and the tumour burden (% of the liver volume, tumour included).

The result is made of plain ``int`` / ``float`` / ``list`` / ``dict`` values, so it
can go straight to :func:`json.dumps`. :func:`quantification_row` flattens it into
one row per case for a CSV summary.

Geometry is always taken from the affine rather than from assumptions about the
array layout, so RAS, LPS, LAS or axis-permuted arrays give the same numbers for
the same anatomy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from pipeline.geometry import superior_voxel_axis
from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.masks import label_components

__all__ = [
    "QUANTIFICATION_COLUMNS",
    "axial_feret_diameter_mm",
    "quantification_row",
    "quantify",
    "superior_voxel_axis",
]

QUANTIFICATION_COLUMNS: tuple[str, ...] = (
    "case_id",
    "liver_volume_ml",
    "n_tumours",
    "tumour_volume_ml",
    "tumour_burden_pct",
    "largest_tumour_diameter_mm",
)
"""Column order of :func:`quantification_row`, e.g. for ``csv.DictWriter(fieldnames=...)``."""

_MM3_PER_ML = 1000.0
# Below this many candidate points a brute-force pairwise search is cheaper than Qhull
# and sidesteps its failures on degenerate (collinear) inputs.
_BRUTE_FORCE_MAX_POINTS = 64


def _as_label_volume(labels: ArrayLike) -> NDArray[Any]:
    """Return ``labels`` as a 3D numpy array, dropping a leading singleton channel."""
    array = np.asarray(labels)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"expected a 3D label map (or 1xXxYxZ), got shape {array.shape}")
    return array


def _as_affine(affine: ArrayLike) -> NDArray[np.float64]:
    """Return ``affine`` as a validated 4x4 float64 array."""
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {matrix.shape}")
    if abs(np.linalg.det(matrix[:3, :3])) <= 0.0:
        raise ValueError("affine is singular: voxels would have zero volume")
    return matrix


def _max_pairwise_distance(points: NDArray[np.float64]) -> float:
    """Return the largest distance between any two of ``points`` (N x D)."""
    if len(points) < 2:
        return 0.0
    if len(points) > _BRUTE_FORCE_MAX_POINTS:
        # The farthest pair always lies on the convex hull, which for a rasterised
        # blob has far fewer vertices than the blob has boundary voxels.
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:
            # Degenerate (e.g. all collinear): fall through to brute force on all points.
            pass
    diffs = points[:, None, :] - points[None, :, :]
    return float(np.sqrt(np.max(np.einsum("ijk,ijk->ij", diffs, diffs))))


def axial_feret_diameter_mm(mask: ArrayLike, affine: ArrayLike) -> float:
    """Largest axial diameter of a binary lesion mask, in millimetres.

    For every axial slice of the lesion (slices across :func:`superior_voxel_axis`),
    the maximum Feret diameter is the largest distance between two voxel centres of
    the lesion in that slice; the result is the maximum over slices. Voxel indices
    are mapped through the affine, so any axis order or flip is handled, and the
    points are projected on the world axial (R-A) plane, which for the oblique-free
    images this is meant for is exactly the slice plane.

    Only the left-most and right-most lesion voxels of each row of a slice are used:
    they are boundary voxels and include every vertex of the lesion's convex hull,
    the only points a Feret diameter can end on. This reduction is written by hand
    because neither scipy nor MONAI offers a Feret diameter.

    Approximation: distances are between voxel centres, so the diameter is accurate
    to within about one in-plane voxel. Voxel centres lie inside the lesion, so for a
    convex lesion it never over-estimates; each end can fall short by up to about a
    voxel, and a single voxel has diameter 0.

    Args:
        mask: 3D boolean (or 0/1) array, non-zero inside the lesion.
        affine: 4x4 voxel-to-world matrix (RAS mm).

    Returns:
        The diameter in mm, 0.0 for an empty or one-voxel mask.
    """
    lesion = _as_label_volume(mask).astype(bool)
    matrix = _as_affine(affine)
    axial_axis = superior_voxel_axis(matrix)
    in_plane_axes = [axis for axis in range(3) if axis != axial_axis]
    # World R and A rows of the affine: projecting onto them drops the S component.
    projection = matrix[:2, :3]
    translation = matrix[:2, 3]

    best = 0.0
    # Move the axial axis first so that lesion[k] is the k-th axial slice.
    slices = np.moveaxis(lesion, axial_axis, 0)
    for k in np.flatnonzero(slices.any(axis=(1, 2))):
        rows, cols = np.nonzero(slices[k])
        # np.nonzero walks in C order, so each row's voxels are contiguous and sorted:
        # the first and last entry of each run are the row's extreme voxels.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        ends = np.r_[starts[1:] - 1, len(rows) - 1]
        keep = np.unique(np.r_[starts, ends])
        index = np.empty((len(keep), 3), dtype=np.float64)
        index[:, axial_axis] = k
        index[:, in_plane_axes[0]] = rows[keep]
        index[:, in_plane_axes[1]] = cols[keep]
        world = index @ projection.T + translation
        best = max(best, _max_pairwise_distance(world))
    return best


def _labelled_box(
    volume: NDArray[Any], affine: NDArray[np.float64]
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """The bounding box of the non-zero labels and its affine (the same world positions).

    Every measure below is the same on the box as on the whole scan, and a liver fills a
    small part of a 512 x 512 x N scan: counting and labelling only the box is several
    times faster.
    """
    box = []
    for axis in range(3):
        occupied = np.flatnonzero(volume.any(axis=tuple(a for a in range(3) if a != axis)))
        if occupied.size == 0:  # nothing labelled: one background voxel measures the same
            return volume[:1, :1, :1], affine
        box.append((int(occupied[0]), int(occupied[-1]) + 1))
    shifted = affine.copy()
    origin = np.array([lo for lo, _ in box], dtype=np.float64)
    shifted[:3, 3] = affine[:3, :3] @ origin + affine[:3, 3]
    return volume[tuple(slice(lo, hi) for lo, hi in box)], shifted


def quantify(labels: ArrayLike, affine: ArrayLike) -> dict[str, Any]:
    """Measure liver and tumours in a label map.

    Args:
        labels: 3D label map (0 background, 1 liver, 2 tumour), or 1xXxYxZ with a
            channel dimension; any array-like, e.g. a numpy array or a CPU tensor.
        affine: 4x4 voxel-to-world matrix in RAS millimetres (nibabel's ``img.affine``).

    Returns:
        A JSON-serialisable dict with keys:

        * ``voxel_volume_mm3``: volume of one voxel (|det| of the affine's 3x3 part);
        * ``liver_volume_ml``: liver including tumour (labels 1 and 2);
        * ``liver_parenchyma_volume_ml``: label 1 only;
        * ``tumour_volume_ml``: all tumour voxels;
        * ``tumour_burden_pct``: ``100 * tumour_volume_ml / liver_volume_ml`` (0.0 when
          there is no liver);
        * ``n_tumours``: number of 26-connected tumour components;
        * ``tumours``: one dict per tumour, largest volume first, with ``id`` (1-based
          rank in that order), ``n_voxels``, ``volume_ml``,
          ``largest_axial_diameter_mm`` (see :func:`axial_feret_diameter_mm`) and
          ``centroid_mm`` (``[x, y, z]`` world RAS mm, mean of the voxel centres).
    """
    volume, matrix = _labelled_box(_as_label_volume(labels), _as_affine(affine))
    if volume.strides[0] < volume.strides[-1]:
        # A box of a Fortran-ordered mask (NIfTI's order, as the predictor makes them):
        # its transpose, with the affine's columns reversed, is the same image laid out
        # as C order, which is labelled without a copy. Every measure is in world
        # coordinates.
        volume, matrix = volume.T, matrix[:, [2, 1, 0, 3]]
    voxel_mm3 = float(abs(np.linalg.det(matrix[:3, :3])))

    tumour_mask = volume == TUMOUR
    n_liver_tissue = int(np.count_nonzero(volume == LIVER))
    n_tumour = int(np.count_nonzero(tumour_mask))
    n_liver = n_liver_tissue + n_tumour

    # By hand, not scikit-image's regionprops: skimage is not a dependency, and the axial
    # diameter in mm on an anisotropic, possibly oblique grid is not one of its properties.
    # 26-connected: lesions touching by an edge or a corner are one lesion, which is how a
    # reader would count them on screen.
    components, n_components = label_components(tumour_mask)
    tumours: list[dict[str, Any]] = []
    for index, bbox in enumerate(ndimage.find_objects(components), start=1):
        if bbox is None:
            continue
        # Work in the component's bounding box: cheap, and the offset keeps the affine valid.
        lesion = components[bbox] == index
        offset = np.array([s.start for s in bbox], dtype=np.float64)
        n_voxels = int(np.count_nonzero(lesion))
        mean_index = np.argwhere(lesion).mean(axis=0) + offset
        # The affine is linear, so the mean of world points is the image of the mean index.
        centroid = matrix[:3, :3] @ mean_index + matrix[:3, 3]
        sub_affine = matrix.copy()
        sub_affine[:3, 3] = matrix[:3, :3] @ offset + matrix[:3, 3]
        tumours.append(
            {
                "n_voxels": n_voxels,
                "volume_ml": n_voxels * voxel_mm3 / _MM3_PER_ML,
                "largest_axial_diameter_mm": axial_feret_diameter_mm(lesion, sub_affine),
                "centroid_mm": [float(c) for c in centroid],
            }
        )
    # Equal volumes in order of their world centroids: deterministic, and the same for
    # a mask in either memory order.
    tumours.sort(key=lambda t: (-t["n_voxels"], t["centroid_mm"]))
    tumours = [{"id": rank, **t} for rank, t in enumerate(tumours, start=1)]

    liver_ml = n_liver * voxel_mm3 / _MM3_PER_ML
    tumour_ml = n_tumour * voxel_mm3 / _MM3_PER_ML
    return {
        "voxel_volume_mm3": voxel_mm3,
        "liver_volume_ml": liver_ml,
        "liver_parenchyma_volume_ml": n_liver_tissue * voxel_mm3 / _MM3_PER_ML,
        "tumour_volume_ml": tumour_ml,
        # Ratio of voxel counts, so the burden is exact and independent of voxel size.
        "tumour_burden_pct": 100.0 * n_tumour / n_liver if n_liver else 0.0,
        "n_tumours": int(n_components),
        "tumours": tumours,
    }


def quantification_row(case_id: str, q: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a :func:`quantify` result into one CSV row.

    Args:
        case_id: Identifier of the case, written in the ``case_id`` column.
        q: The dict returned by :func:`quantify`.

    Returns:
        A dict with the keys of :data:`QUANTIFICATION_COLUMNS`.
        ``largest_tumour_diameter_mm`` is the largest axial diameter over all tumours
        (not necessarily the one of the largest-volume tumour), 0.0 when there is none.
    """
    diameters = [float(t["largest_axial_diameter_mm"]) for t in q["tumours"]]
    return {
        "case_id": str(case_id),
        "liver_volume_ml": float(q["liver_volume_ml"]),
        "n_tumours": int(q["n_tumours"]),
        "tumour_volume_ml": float(q["tumour_volume_ml"]),
        "tumour_burden_pct": float(q["tumour_burden_pct"]),
        "largest_tumour_diameter_mm": max(diameters, default=0.0),
    }
