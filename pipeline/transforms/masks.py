"""Connected components, holes and bounding boxes of 3D binary masks.

The building blocks of :mod:`pipeline.transforms.postprocess`: scipy's labelling with the
connectivities chosen there, hole filling in one labelling pass, and the padded bounding
box every post-processing step works in.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

# Objects (liver, tumour) are 26-connected; background in hole filling uses scipy's
# default 6-connectivity, the complementary choice, so that a diagonal crack between
# two liver voxels does not count as an opening to the outside.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def largest_component(
    mask: NDArray[np.bool_], weights: NDArray[np.floating] | None = None
) -> NDArray[np.bool_]:
    """Largest 26-connected component of ``mask``.

    With ``weights`` (one per voxel, ``mask``'s shape) a component's size is the sum of
    its voxels' weights. Of components of equal size the first in array order is kept.

    scipy rather than MONAI's ``get_largest_connected_component_mask`` /
    ``KeepLargestConnectedComponent``: those need scikit-image on CPU, which is not
    a dependency of this project.
    """
    components, n = ndimage.label(mask, structure=CONNECTIVITY_26)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel(), None if weights is None else weights.ravel())
    sizes[0] = 0
    return np.asarray(components == int(np.argmax(sizes)))


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with its holes filled: exactly ``ndimage.binary_fill_holes(mask)``.

    A hole is background not 6-connected to the array's border. scipy finds them by
    dilating the outside inwards until nothing changes, one voxel layer per pass (1.8 s
    on a liver box of a 512 x 512 x 300 scan); labelling the background once and
    keeping the components that touch the border is the same set in one pass.
    """
    background, _ = ndimage.label(~mask)  # scipy's default structure: 6-connectivity
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
