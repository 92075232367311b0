"""Voxel-grid geometry every stage needs: which array axis is axial."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def superior_voxel_axis(affine: ArrayLike) -> int:
    """Return the array axis that runs closest to the world superior-inferior axis.

    Slices taken across this axis are the axial slices. Row 2 of a RAS (or LPS)
    affine holds the S component of each voxel axis' direction, so the axis with the
    largest absolute S component wins; it works for any flip or permutation of the
    array axes.

    Args:
        affine: 4x4 (or 3x3) voxel-to-world matrix in RAS or LPS millimetres.

    Returns:
        The axis index, 0, 1 or 2.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    return int(np.argmax(np.abs(matrix[2, :3])))
