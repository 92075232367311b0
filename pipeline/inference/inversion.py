"""Labels from the network's grid back onto the scan's grid, by a per-axis index map.

MONAI's ``Invertd`` undoes the pre-processing transform by transform: it pads the crop
back, then resamples with a dense sampling grid (three float32 coordinates per output
voxel: about 1 GB for a 512 x 512 x 300 scan) and reorients. For the pre-processing this
project uses (reorientation, resampling to a voxel size, crops and pads) the whole chain
is an axis-aligned map in voxel indices: each axis of the scan maps onto one axis of the
network's grid, by a scale and an offset. Nearest-neighbour inversion is then three 1-D
index lists and three ``take`` calls, exact and in a small fraction of the time and
memory. Written by hand because neither MONAI nor nibabel resamples that way.

The map is read from the transforms the image records (``applied_operations``) and from
its affines. Whatever else the pre-processing did (a rotation, an oblique resampling, a
transform this module does not know) returns None, and the caller falls back on
``Invertd``.

Exactness: a voxel of the scan takes the label of the network voxel whose centre is
nearest, as ``Invertd`` does, with ``Spacingd``'s "border" padding (a scan voxel past the
resampled grid's last centre takes the edge value) and background outside a crop. At an
exact tie (a scan voxel centre half-way between two network voxels, e.g. 2.5 mm slices
resampled to 2 mm) this takes the upper neighbour; ``Invertd``'s float32 sampling grid
takes either, depending on rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

_REORIENT = "Orientation"
# MONAI's Spacingd records "SpatialResample"; the project's faster one records its name.
_RESAMPLES = frozenset({"SpatialResample", "AxisAlignedSpacingd"})
# Transforms that only cut or pad the grid (a shift of indices).
_CROPS = frozenset(
    {"CropForeground", "ThresholdCropForeground", "SpatialCrop", "CenterSpatialCrop"}
)
_PADS = frozenset({"SpatialPad", "BorderPad", "DivisiblePad", "Pad"})
_RELATIVE_TOLERANCE = 1e-6


def _index_shift(operation: dict[str, Any]) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """How a crop or pad moves indices (new = old + shift), and its grid size before.

    Returns None for an operation this module does not handle.
    """
    name = operation["class"]
    extra = operation.get("extra_info", {})
    size_before = tuple(int(s) for s in operation["orig_size"])
    if name in _CROPS:
        shift = -np.asarray(extra["cropped"][0::2], dtype=np.int64)
        pad = extra.get("pad_info")  # CropForeground pads when allow_smaller is off
        if pad is not None:
            shift = shift + np.asarray([lo for lo, _ in pad["extra_info"]["padded"][1:]])
        return shift, size_before
    if name in _PADS:
        padded = extra["padded"]
        return np.asarray([lo for lo, _ in padded[1:]], dtype=np.int64), size_before
    return None


def axis_index_maps(
    image: Any, original_affine: np.ndarray, original_shape: Sequence[int]
) -> tuple[list[int], list[np.ndarray]] | None:
    """The per-axis nearest-neighbour map from the scan's grid to the network's grid.

    Args:
        image: the pre-processed image, a MetaTensor (C, X', Y', Z') whose
            ``applied_operations`` and ``affine`` describe the pre-processing.
        original_affine: the scan's voxel-to-world affine as loaded.
        original_shape: the scan's spatial shape as loaded.

    Returns:
        ``(axes, indices)``: scan axis ``i`` maps onto network axis ``axes[i]``, its voxel
        ``v`` onto network index ``indices[i][v]``, -1 where it lies outside the network's
        grid (background). None when the pre-processing is not such a map.
    """
    operations = list(getattr(image, "applied_operations", []))
    names = [op["class"] for op in operations]
    if any(name not in {_REORIENT} | _RESAMPLES | _CROPS | _PADS for name in names):
        return None
    resamplings = [k for k, name in enumerate(names) if name in _RESAMPLES]
    if len(resamplings) > 1:
        return None
    # Reorientation first; crops and pads before the resampling (the body's box, cut on
    # the scan's grid) only limit which scan voxels the network saw; those after it are
    # index shifts of the network's grid.
    resample_at = resamplings[0] if resamplings else -1
    first_shift = next(
        (k for k, n in enumerate(names) if n in _CROPS | _PADS and k > resample_at), len(names)
    )
    if any(n == _REORIENT for n in names[1:]) or any(
        n not in _CROPS | _PADS for n in names[first_shift:]
    ):
        return None
    seen_region = _seen_region(operations[resample_at]) if resample_at > 0 else None
    shift = np.zeros(3, dtype=np.int64)
    for operation in operations[first_shift:]:
        moved = _index_shift(operation)
        if moved is None:
            return None
        shift += moved[0]
    network_shape = tuple(int(s) for s in image.shape[1:])
    resampled_shape = (
        tuple(int(s) for s in operations[first_shift]["orig_size"])
        if first_shift < len(operations)
        else network_shape
    )
    padding_mode = "border"
    if resamplings:
        padding_mode = str(operations[resample_at]["extra_info"].get("padding_mode"))
        if padding_mode not in {"border", "zeros"}:
            return None
    # Voxel of the resampled (uncropped) grid = network voxel - shift.
    network_affine = np.asarray(image.affine, dtype=np.float64)
    to_shift = np.eye(4)
    to_shift[:3, 3] = shift
    resampled_affine = network_affine @ to_shift
    scan_to_resampled = np.linalg.inv(resampled_affine) @ np.asarray(original_affine, np.float64)
    linear = scan_to_resampled[:3, :3]
    axes = [int(np.argmax(np.abs(linear[:, i]))) for i in range(3)]
    if sorted(axes) != [0, 1, 2]:
        return None
    off_axis = np.abs(linear).copy()
    off_axis[axes, range(3)] = 0.0
    if off_axis.max() > _RELATIVE_TOLERANCE * np.abs(linear).max():
        return None  # a rotation between the grids: not axis-aligned
    indices = []
    for axis, target in enumerate(axes):
        position = linear[target, axis] * np.arange(original_shape[axis])
        position = position + scan_to_resampled[target, 3]
        nearest = np.floor(position + 0.5).astype(np.int64)
        size = resampled_shape[target]
        if padding_mode == "border":
            nearest = np.clip(nearest, 0, size - 1)
        outside = (nearest < 0) | (nearest >= size)
        nearest = nearest + shift[target]
        outside |= (nearest < 0) | (nearest >= network_shape[target])
        if seen_region is not None:
            outside |= _outside(seen_region, original_affine, axis, target, original_shape)
        indices.append(np.where(outside, -1, nearest))
    return axes, indices


def _seen_region(resampling: dict[str, Any]) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The grid the resampling read (affine, shape): a crop of the scan before it, if any."""
    source_affine = resampling.get("extra_info", {}).get("src_affine")
    if source_affine is None:
        return None
    affine = np.asarray(
        source_affine.cpu() if isinstance(source_affine, torch.Tensor) else source_affine,
        dtype=np.float64,
    )
    return affine, tuple(int(s) for s in resampling["orig_size"])


def _outside(
    region: tuple[np.ndarray, tuple[int, ...]],
    original_affine: np.ndarray,
    axis: int,
    target: int,
    original_shape: Sequence[int],
) -> np.ndarray:
    """Which voxels of scan axis ``axis`` lie outside ``region`` (its axis ``target``).

    Outside a crop taken before the resampling the network saw nothing: background there,
    as ``Invertd`` pads the crop back with zeros.
    """
    affine, shape = region
    scan_to_region = np.linalg.inv(affine) @ np.asarray(original_affine, np.float64)
    position = scan_to_region[target, axis] * np.arange(original_shape[axis])
    position = position + scan_to_region[target, 3]
    return (position < -0.5) | (position > shape[target] - 0.5)


IndexMaps = tuple[list[int], list[np.ndarray]]
"""What :func:`axis_index_maps` returns: network axis of each scan axis, index lists."""


def block_sizes(maps: IndexMaps, network_shape: Sequence[int]) -> list[np.ndarray] | None:
    """How many scan voxels take each network voxel's label, per network axis.

    The inverted label map is made of blocks, one per network voxel, of
    ``sizes[0][i] * sizes[1][j] * sizes[2][k]`` scan voxels. When the covered network
    indices leave no gap on any axis (the scan is at least as fine as the network's grid,
    the usual case), two blocks touch exactly when their network voxels are neighbours:
    connected components on the two grids are the same, with sizes weighted by the
    blocks. A network voxel past the covered range has size 0 (it is nowhere on the scan).

    Returns:
        The three size arrays in network axis order, or None when some network index
        between two covered ones is not taken by any scan voxel (a scan coarser than the
        network along that axis): components could then join on the scan's grid only.
    """
    axes, indices = maps
    sizes: list[np.ndarray] = [np.zeros(0)] * 3
    for scan_axis, network_axis in enumerate(axes):
        taken = indices[scan_axis][indices[scan_axis] >= 0]
        count = np.bincount(taken, minlength=network_shape[network_axis])
        covered = np.flatnonzero(count)
        if covered.size and covered[-1] - covered[0] + 1 != covered.size:
            return None
        sizes[network_axis] = count
    return sizes


def invert_labels(
    labels: torch.Tensor | np.ndarray,
    image: Any,
    original_affine: np.ndarray,
    original_shape: Sequence[int],
    maps: IndexMaps | None = None,
) -> np.ndarray | None:
    """Labels (1, X', Y', Z') on the network's grid, as uint8 (X, Y, Z) on the scan's grid.

    Args:
        labels: the label map on the network's grid.
        image: the pre-processed image (its transform history and affine).
        original_affine: the scan's affine as loaded.
        original_shape: the scan's spatial shape as loaded.
        maps: :func:`axis_index_maps` of these, when already computed.

    Returns:
        The labels on the scan's grid, or None when the pre-processing is not an
        axis-aligned index map (see :func:`axis_index_maps`); use ``Invertd`` then.
    """
    maps = maps or axis_index_maps(image, original_affine, original_shape)
    if maps is None:
        return None
    array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)[0]
    return _gather(array.astype(np.uint8, copy=False), maps, outside=0)


def invert_probabilities(probabilities: torch.Tensor, maps: IndexMaps) -> np.ndarray:
    """Class probabilities (C, X', Y', Z') onto the scan's grid, float32 (C, X, Y, Z).

    Nearest neighbour, as the labels: each scan voxel gets the probabilities of the
    network voxel its label came from, so the argmax of the result is the unfiltered
    label map. Outside the network's grid (the foreground crop) a voxel is background
    with probability 1.
    """
    array = np.asarray(probabilities.cpu(), dtype=np.float32)
    return np.stack(
        [_gather(channel, maps, outside=1.0 if c == 0 else 0.0) for c, channel in enumerate(array)]
    )


def _gather(array: np.ndarray, maps: IndexMaps, outside: float) -> np.ndarray:
    """``array`` (X', Y', Z') read at the index maps; ``outside`` where an index is -1.

    Returns:
        The scan-grid array, Fortran-ordered.
    """
    axes, indices = maps
    # One voxel of ``outside`` past the end of every axis: index -1 reads it.
    padded = np.pad(array, [(0, 1)] * 3, constant_values=outside)
    moved = np.transpose(padded, axes)  # scan axis order
    # Gather the axis that grows least first: the intermediate arrays stay small.
    growth = [len(indices[a]) / moved.shape[a] for a in range(3)]
    # The gather runs on the reversed axes, so that the result comes out in Fortran order
    # (its transpose is C-contiguous) at no extra cost. NIfTI stores Fortran order:
    # nibabel then writes the mask with plain copies, where a C-ordered 512 x 512 x 300
    # mask cost 0.35 s of strided copying in the save. numpy and scipy take either order.
    # (np.take copies an input that is not C-ordered; this copy of the network's grid is
    # made once instead of at the first take.)
    reversed_axes = np.ascontiguousarray(moved.T)
    for axis in np.argsort(growth):
        reversed_axes = np.take(reversed_axes, indices[axis], axis=2 - int(axis))
    return np.ascontiguousarray(reversed_axes).T
