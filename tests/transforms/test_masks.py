"""Connected components (the same labels as scipy's, which the tie rules rely on) and
neighbourhoods of masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.transforms.masks import (
    component_sizes,
    label_components,
    largest_component,
    within_distance,
)

FULL_26 = np.ones((3, 3, 3), dtype=bool)


def _random_mask(seed: int, shape: tuple[int, int, int] = (23, 31, 17)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.88


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_components_numbers_as_scipy_in_every_layout(seed: int) -> None:
    mask = _random_mask(seed)
    expected_26, count_26 = ndimage.label(mask, structure=FULL_26)
    expected_6, count_6 = ndimage.label(mask)
    assert count_26 > 10 and count_6 > count_26  # a mask with something to number
    layouts = {
        "C": mask,
        "Fortran": np.asfortranarray(mask),
        "strided view": np.asfortranarray(np.pad(mask, 2))[2:-2, 2:-2, 2:-2],
        "uint8": mask.astype(np.uint8),
    }
    for name, array in layouts.items():
        components, count = label_components(array)
        assert count == count_26, name
        np.testing.assert_array_equal(components, expected_26, err_msg=name)
        components, count = label_components(array, connectivity=6)
        assert count == count_6, name
        np.testing.assert_array_equal(components, expected_6, err_msg=name)


def test_label_components_corner_contact_and_empty() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # touching at a corner only
    mask[4, 4, 4] = True
    components, count = label_components(mask)
    assert count == 2
    assert components[1, 1, 1] == components[2, 2, 2] == 1 and components[4, 4, 4] == 2
    assert label_components(mask, connectivity=6)[1] == 3
    empty, n_empty = label_components(np.zeros((4, 4, 4), dtype=bool))
    assert n_empty == 0 and not empty.any()


def test_label_components_rejects_other_dimensions() -> None:
    with pytest.raises(ValueError, match="3D mask"):
        label_components(np.ones((4, 4), dtype=bool))


def test_largest_component_tie_keeps_the_first_in_array_order() -> None:
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[0, 0, 0:2] = True  # first in C raster order
    mask[4, 4, 3:5] = True  # same size, later
    kept = largest_component(np.asfortranarray(mask))
    assert kept[0, 0, 0] and kept[0, 0, 1] and not kept[4, 4, 3]
    assert int(kept.sum()) == 2


def test_component_sizes_equal_bincount_across_slabs() -> None:
    # 1.3 million voxels: more than one slab of the chunked count.
    mask = np.random.default_rng(4).random((128, 128, 80)) > 0.9
    components, count = label_components(mask)
    sizes = component_sizes(components, count)
    np.testing.assert_array_equal(sizes, np.bincount(components.ravel(), minlength=count + 1))
    assert sizes[0] == np.count_nonzero(~mask) and sizes.sum() == mask.size
    weights = np.random.default_rng(5).random(mask.shape)
    np.testing.assert_allclose(
        component_sizes(components, count, weights),
        np.bincount(components.ravel(), weights.ravel(), minlength=count + 1),
    )


def test_within_distance_of_one_voxel_counts_the_anisotropic_ball() -> None:
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[4, 4, 4] = True
    near = within_distance(mask, (1.0, 2.0, 3.0), 3.0)
    # dx^2 + (2 dy)^2 + (3 dz)^2 <= 9: 7 voxels along x, 5 + 5 at dy = +-1, 2 at dz = +-1.
    assert np.count_nonzero(near) == 19
    assert near[1, 4, 4] and near[2, 5, 4] and near[4, 4, 5]
    assert not near[0, 4, 4] and not near[1, 5, 4] and not near[4, 6, 4] and not near[4, 5, 5]


@pytest.mark.parametrize("seed", [0, 1])
def test_within_distance_equals_the_whole_volumes_distance_transform(seed: int) -> None:
    # A few voxels, some at the border: the transform over the grown box must give what
    # the transform over the whole volume gives.
    mask = np.random.default_rng(seed).random((30, 25, 20)) > 0.9995
    mask[0, 3, 5] = True
    spacing = (0.7, 1.1, 2.5)
    expected = ndimage.distance_transform_edt(~mask, sampling=spacing) <= 4.0
    np.testing.assert_array_equal(within_distance(mask, spacing, 4.0), expected)
    assert not within_distance(np.zeros((4, 4, 4), bool), spacing, 4.0).any()
    with pytest.raises(ValueError, match="distance_mm"):
        within_distance(mask, spacing, -1.0)
