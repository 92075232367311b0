"""Connected components, holes, bounding boxes and neighbourhoods of 3D binary masks.

The building blocks of :mod:`pipeline.transforms.postprocess`: connected-component
labelling with the connectivities chosen there, hole filling in one labelling pass, and
the padded bounding box every post-processing step works in.
"""

from __future__ import annotations

from typing import Literal

import cc3d
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

# Objects (liver, tumour) are 26-connected; background in hole filling uses scipy's
# default 6-connectivity, the complementary choice, so that a diagonal crack between
# two liver voxels does not count as an opening to the outside.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def label_components(
    mask: NDArray[np.bool_], connectivity: Literal[6, 26] = 26
) -> tuple[NDArray[np.uint32], int]:
    """Connected components of a 3D mask, numbered as ``scipy.ndimage.label`` numbers them.

    ``ndimage.label(mask, structure)`` with the 26- (full 3 x 3 x 3) or 6-connected
    (scipy's default) structure, by the ``connected-components-3d`` package: 0.025 s
    instead of 0.12-0.23 s for the network grid of a 512 x 512 x 300 scan. On a
    C-ordered array it numbers components in the same raster order as scipy, which the
    tie rules downstream (first component in array order) rely on, so other layouts are
    made C-ordered first.

    Returns:
        ``(components, count)``: 0 outside ``mask``, 1..count inside.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    if not mask.flags.c_contiguous:
        mask = np.ascontiguousarray(mask)
    components, count = cc3d.connected_components(
        mask.astype(bool, copy=False),
        connectivity=connectivity,
        return_N=True,
        out_dtype=np.uint32,
    )
    return components, int(count)


def component_sizes(
    components: NDArray[np.integer], count: int, weights: NDArray[np.floating] | None = None
) -> NDArray[np.float64] | NDArray[np.int64]:
    """Voxels (or summed ``weights``) per label 0..count: ``np.bincount``, in slabs.

    ``np.bincount`` first converts its whole input to int64: a fresh 98 MB array for the
    network grid of a 512 x 512 x 300 scan, 0.03 s warm and 0.12 s in a fresh process.
    One slab at a time the conversions stay in the cache (0.017 s).
    """
    flat = np.asarray(components).reshape(-1)
    weight_flat = None if weights is None else np.asarray(weights).reshape(-1)
    sizes = np.zeros(count + 1, dtype=np.int64 if weights is None else np.float64)
    step = 1 << 20
    for start in range(0, flat.size, step):
        chunk_weights = None if weight_flat is None else weight_flat[start : start + step]
        sizes += np.bincount(flat[start : start + step], chunk_weights, minlength=count + 1)
    return sizes


def largest_component(
    mask: NDArray[np.bool_], weights: NDArray[np.floating] | None = None
) -> NDArray[np.bool_]:
    """Largest 26-connected component of ``mask``.

    With ``weights`` (one per voxel, ``mask``'s shape) a component's size is the sum of
    its voxels' weights. Of components of equal size the first in array order is kept.

    :func:`label_components` rather than MONAI's ``get_largest_connected_component_mask``
    / ``KeepLargestConnectedComponent``: those need scikit-image on CPU, which is not a
    dependency of this project.
    """
    components, n = label_components(mask)
    if n <= 1:
        return mask.copy()
    sizes = component_sizes(components, n, weights)
    sizes[0] = 0
    return np.asarray(components == int(np.argmax(sizes)))


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with its holes filled: exactly ``ndimage.binary_fill_holes(mask)``.

    A hole is background not 6-connected to the array's border. scipy finds them by
    dilating the outside inwards until nothing changes, one voxel layer per pass (1.8 s
    on a liver box of a 512 x 512 x 300 scan); labelling the background once and
    keeping the components that touch the border is the same set in one pass.
    """
    background, _ = label_components(~mask, connectivity=6)
    on_border = np.zeros(int(background.max()) + 1, dtype=bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            on_border[background[(slice(None),) * axis + (index,)]] = True
    on_border[0] = True  # label 0 is the mask itself
    return mask | ~on_border[background]


def padded_box(
    mask: NDArray[np.bool_], margin: int
) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[int, ...]]:
    """Bounding box of ``mask`` grown by ``margin`` voxels, possibly past the image.

    Returns:
        ``(image_box, crop_box, crop_shape)``: ``image_box`` is the part of the grown
        box inside the image, ``crop_box`` where that part sits in a zero-padded crop
        of shape ``crop_shape``. Padding past the image border (rather than clipping)
        gives closing room to dilate, so it does not erode the liver where it touches
        the border of the image.
    """
    image_box: list[slice] = []
    crop_box: list[slice] = []
    crop_shape: list[int] = []
    for axis, size in enumerate(mask.shape):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(mask.any(axis=other_axes))
        lo, hi = int(occupied[0]) - margin, int(occupied[-1]) + 1 + margin
        image_box.append(slice(max(lo, 0), min(hi, size)))
        crop_box.append(slice(max(lo, 0) - lo, min(hi, size) - lo))
        crop_shape.append(hi - lo)
    return tuple(image_box), tuple(crop_box), tuple(crop_shape)


def within_distance(
    mask: NDArray[np.bool_], spacing: ArrayLike, distance_mm: float
) -> NDArray[np.bool_]:
    """The voxels at most ``distance_mm`` from ``mask`` (Euclidean, in mm), ``mask`` included.

    The distance transform runs only over the mask's bounding box grown by the distance,
    which holds every voxel that can qualify: a liver's box instead of the whole scan.

    Args:
        mask: a 3D mask.
        spacing: the voxel size along each array axis, in mm.
        distance_mm: how far from the mask a voxel may lie (>= 0).
    """
    if distance_mm < 0:
        raise ValueError(f"distance_mm must be >= 0, got {distance_mm}")
    mask = np.asarray(mask, dtype=bool)
    near = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return near
    spacing = np.asarray(spacing, dtype=np.float64)
    reach = np.floor(distance_mm / spacing).astype(int)
    box = []
    for axis, size in enumerate(mask.shape):
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(occupied[0]) - reach[axis], int(occupied[-1]) + 1 + reach[axis]
        box.append(slice(max(lo, 0), min(hi, size)))
    region = tuple(box)
    distance = ndimage.distance_transform_edt(~mask[region], sampling=spacing)
    near[region] = distance <= distance_mm
    return near
