"""Post-processing on a coarse grid that is later up-sampled by whole blocks.

At inference the network's label map is brought onto the scan's grid by a per-axis
index map (``pipeline/inference/inversion.py``): each network voxel becomes a block of
scan voxels, and blocks touch exactly when their voxels are neighbours. The
component-based steps of :func:`~pipeline.transforms.postprocess.postprocess_labels`
then give the same result on the network's grid, with each voxel weighted by its block,
at a fraction of the cost. Split from ``postprocess.py``, whose steps these reuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.labels import BACKGROUND, LIVER
from pipeline.transforms.masks import component_sizes, label_components, padded_box
from pipeline.transforms.postprocess import PostprocessConfig, postprocess_labels

__all__ = ["keep_largest_liver_blocks", "postprocess_label_blocks"]


def keep_largest_liver_blocks(
    labels: NDArray[Any], block_sizes: Sequence[NDArray[Any]]
) -> NDArray[Any] | None:
    """Step 1 (largest liver component) on a coarse grid that is later up-sampled.

    Each voxel of ``labels`` stands for a block of ``block_sizes[0][i] *
    block_sizes[1][j] * block_sizes[2][k]`` voxels of the final grid, blocks that touch
    exactly when their voxels are neighbours (see
    :func:`pipeline.inference.inversion.block_sizes`). The largest component by weighted
    size is then the one step 1 keeps on the final grid, and removing the others here
    gives the same result at a fraction of the cost: a weak model's thousands of islands
    are labelled on the network's grid, and the full-resolution steps work in the box of
    one liver.

    Returns:
        The labels with liver and tumour outside that component set to background; None
        (nothing done) when two components tie for largest, whose order on the final grid
        this grid cannot tell.
    """
    sizes = [np.asarray(size, dtype=np.float64) for size in block_sizes]
    liver = _on_final_grid(labels >= LIVER, sizes)
    if not liver.any():
        return np.where(liver, labels, BACKGROUND).astype(labels.dtype, copy=False)
    image_box, _, _ = padded_box(liver, 0)
    components, n = label_components(liver[image_box])
    box_sizes = [size[box] for size, box in zip(sizes, image_box, strict=True)]
    largest = _largest_weighted_component(components, n, box_sizes)
    if largest is None:
        return None
    kept = np.zeros(labels.shape, dtype=bool)
    kept[image_box] = components == largest
    return np.where(kept, labels, BACKGROUND).astype(labels.dtype, copy=False)


def _largest_weighted_component(
    components: NDArray[Any], n: int, block_sizes: Sequence[NDArray[np.float64]]
) -> int | None:
    """The component of largest total block volume; None for a tie.

    A component's total lies between its voxel count times the smallest and the largest
    block volume. Only components whose upper bound reaches the best lower bound can be
    the largest; usually that is the liver alone, and no voxel needs weighing (weighing
    every liver voxel of a 512 x 512 x 300 scan's network grid took 0.06 s).
    """
    counts = component_sizes(components, n).astype(np.float64)
    counts[0] = 0.0
    occupied = [size[size > 0] for size in block_sizes]
    smallest = float(np.prod([size.min() for size in occupied]))
    biggest = float(np.prod([size.max() for size in occupied]))
    candidates = np.flatnonzero(counts * biggest >= (counts * smallest).max())
    candidates = candidates[candidates > 0]
    if len(candidates) == 1:
        return int(candidates[0])
    # Weights of the candidates' voxels only.
    where = np.nonzero(np.isin(components, candidates))
    weights = block_sizes[0][where[0]] * block_sizes[1][where[1]]
    weights *= block_sizes[2][where[2]]
    totals = np.bincount(components[where], weights=weights, minlength=n + 1)
    order = np.argsort(totals)
    if totals[order[-1]] == totals[order[-2]]:
        return None
    return int(order[-1])


def postprocess_label_blocks(
    labels: NDArray[Any],
    block_sizes: Sequence[NDArray[Any]],
    spacing: Sequence[float] | NDArray[Any],
    config: PostprocessConfig | None = None,
) -> NDArray[Any] | None:
    """All of :func:`postprocess_labels` on a coarse grid that is later up-sampled.

    ``labels`` and ``block_sizes`` are as for :func:`keep_largest_liver_blocks`: each voxel
    stands for a block of voxels of the final grid, and blocks touch exactly when their
    voxels are neighbours. Every step but the morphology is then a matter of connected
    components (26-connected objects, 6-connected background for holes) and of their
    volumes, so on the coarse grid with each component weighted by its blocks the steps
    give exactly the final grid's result, up-sampled (tested against it): the full-size
    scan needs no post-processing pass of its own.

    Args:
        labels: 3D label map on the coarse grid.
        block_sizes: per coarse axis, how many final-grid voxels each index stands for
            (0: nowhere on the final grid).
        spacing: voxel size (mm) of the final grid, along the coarse grid's axes.
        config: the steps; ``PostprocessConfig()`` when None.

    Returns:
        The post-processed coarse labels; None when the result would not be exact here
        (opening, closing or the slice-wise hole filling asked for, or two largest liver
        components of equal weight), so the caller post-processes the final grid instead.
    """
    config = config or PostprocessConfig()
    if config.liver_opening_mm or config.liver_closing_mm or config.fill_holes_axial:
        return None
    sizes = [np.asarray(size) for size in block_sizes]
    if config.keep_largest_liver:
        kept = keep_largest_liver_blocks(labels, sizes)
        if kept is None:
            return None
        # One liver component is left: labelling it again would change nothing.
        config = dataclasses.replace(config, keep_largest_liver=False)
    else:
        on_final_grid = _on_final_grid(np.ones(labels.shape, dtype=bool), sizes)
        kept = np.where(on_final_grid, labels, BACKGROUND).astype(labels.dtype, copy=False)
    return postprocess_labels(kept, spacing, config, block_sizes=sizes)


def _on_final_grid(mask: NDArray[np.bool_], block_sizes: Sequence[NDArray[Any]]) -> NDArray[Any]:
    """``mask`` without the voxels of size 0 (nowhere on the final grid), a new array."""
    mask = mask.copy()
    for axis, size in enumerate(block_sizes):
        index = [slice(None)] * mask.ndim
        index[axis] = np.flatnonzero(np.asarray(size) == 0)
        mask[tuple(index)] = False
    return mask
