from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from pipeline import LIVER, TUMOUR
from pipeline.inference.quantify import (
    QUANTIFICATION_COLUMNS,
    axial_feret_diameter_mm,
    quantification_row,
    quantify,
    superior_voxel_axis,
)

# Voxel size (mm) along world R, A, S and grid size along R, A, S.
WORLD_SPACING = np.array([0.8, 0.8, 2.5])
WORLD_SIZE = np.array([80, 64, 24])
CENTRE = np.array([10.3, -20.7, 35.2])
# World position of the grid corner with the lowest R, A, S coordinates; the offset
# keeps the sphere centre away from voxel centres and from grid symmetries.
GRID_LOW = CENTRE - (WORLD_SIZE - 1) * WORLD_SPACING / 2 + np.array([0.13, -0.21, 0.37])

# Array axis j runs along world axis perm[j] with direction sign[j].
ORIENTATIONS = {
    "RAS": ((0, 1, 2), (1, 1, 1)),
    "LPS": ((0, 1, 2), (-1, -1, 1)),
    "LAS": ((0, 1, 2), (-1, 1, 1)),
    "SRA": ((2, 0, 1), (1, 1, 1)),  # axis-permuted: axial slices across array axis 0
    "PIL": ((1, 2, 0), (-1, -1, -1)),
}


def _grid(name: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the same world grid of voxel centres, stored as ``name``."""
    perm, sign = ORIENTATIONS[name]
    affine = np.eye(4)
    shape = []
    for j, (axis, direction) in enumerate(zip(perm, sign, strict=True)):
        affine[:, j] = 0.0
        affine[axis, j] = direction * WORLD_SPACING[axis]
        last = GRID_LOW[axis] + (WORLD_SIZE[axis] - 1) * WORLD_SPACING[axis]
        affine[axis, 3] = GRID_LOW[axis] if direction > 0 else last
        shape.append(int(WORLD_SIZE[axis]))
    affine[3] = [0, 0, 0, 1]
    return affine, (shape[0], shape[1], shape[2])


def _world_coordinates(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    index = np.indices(shape).reshape(3, -1).T
    return (index @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def _ellipsoid(
    name: str, semi_axes_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Tumour ellipsoid (world-axis aligned, around CENTRE) inside a liver slab."""
    affine, shape = _grid(name)
    world = _world_coordinates(affine, shape)
    inside = (((world - CENTRE) / np.array(semi_axes_mm)) ** 2).sum(axis=-1) <= 1.0
    labels = np.full(shape, LIVER, dtype=np.uint8)
    labels[inside] = TUMOUR
    return labels, affine


def _assert_plain_json(value: Any) -> None:
    """Only builtin JSON types, no numpy scalars or arrays."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for item in value.values():
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert type(value) in (int, float, str, bool), type(value)
        if type(value) is float:
            assert math.isfinite(value)


def test_grids_describe_the_same_world_points() -> None:
    def sorted_points(name: str) -> np.ndarray:
        points = np.round(_world_coordinates(*_grid(name)).reshape(-1, 3), 6)
        return points[np.lexsort(points.T[::-1])]

    reference = sorted_points("RAS")
    for name in ORIENTATIONS:
        np.testing.assert_allclose(sorted_points(name), reference, atol=1e-9)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_sphere_volume_diameter_and_centroid(name: str) -> None:
    radius = 20.0
    labels, affine = _ellipsoid(name, (radius, radius, radius))
    q = quantify(labels, affine)

    assert q["n_tumours"] == 1
    tumour = q["tumours"][0]
    true_ml = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    assert tumour["volume_ml"] == pytest.approx(true_ml, rel=0.03)
    assert q["tumour_volume_ml"] == pytest.approx(tumour["volume_ml"])
    # Within one in-plane voxel of the true diameter.
    assert abs(tumour["largest_axial_diameter_mm"] - 2 * radius) <= WORLD_SPACING[0]
    # Centroid in world mm within half a voxel of the centre, per world axis.
    error = np.abs(np.array(tumour["centroid_mm"]) - CENTRE)
    assert (error <= WORLD_SPACING / 2).all(), error
    assert q["voxel_volume_mm3"] == pytest.approx(float(np.prod(WORLD_SPACING)))
    liver_ml = labels.size * np.prod(WORLD_SPACING) / 1000.0
    assert q["liver_volume_ml"] == pytest.approx(liver_ml)


def test_measurements_do_not_depend_on_the_array_orientation() -> None:
    results = [quantify(*_ellipsoid(name, (20.0, 20.0, 20.0))) for name in ORIENTATIONS]
    for other in results[1:]:
        a, b = results[0]["tumours"][0], other["tumours"][0]
        assert a["n_voxels"] == b["n_voxels"]
        assert a["largest_axial_diameter_mm"] == pytest.approx(b["largest_axial_diameter_mm"])
        np.testing.assert_allclose(a["centroid_mm"], b["centroid_mm"], atol=1e-9)


def _widest_axial_section(semi_axes_mm: tuple[float, float, float]) -> float:
    """Largest in-plane diameter of the ellipsoid over the grid's axial slice positions."""
    slice_s = GRID_LOW[2] + np.arange(WORLD_SIZE[2]) * WORLD_SPACING[2]
    nearest = np.min(np.abs(slice_s - CENTRE[2]))
    return 2 * max(semi_axes_mm[:2]) * math.sqrt(1 - (nearest / semi_axes_mm[2]) ** 2)


@pytest.mark.parametrize("name", ["RAS", "SRA", "PIL"])
@pytest.mark.parametrize(
    "semi_axes_mm",
    [
        (8.0, 8.0, 25.0),  # long along S: the axial diameter is the ~16 mm width
        (25.0, 8.0, 8.0),  # long along R: the ~50 mm length is in the axial plane
        (8.0, 20.0, 8.0),  # long along A: ~40 mm
    ],
)
def test_diameter_is_measured_in_the_axial_plane(
    name: str, semi_axes_mm: tuple[float, float, float]
) -> None:
    labels, affine = _ellipsoid(name, semi_axes_mm)
    diameter = quantify(labels, affine)["tumours"][0]["largest_axial_diameter_mm"]
    # Voxel centres inside a convex section never overshoot it; each end of the diameter
    # can fall short by up to about one in-plane voxel (0.84 mm in total at the sharp
    # 2.6 mm-radius tips of the R-long ellipsoid).
    expected = _widest_axial_section(semi_axes_mm)
    assert expected - 2 * WORLD_SPACING[0] <= diameter <= expected + 1e-9


@pytest.mark.parametrize("name", ["RAS", "LPS", "SRA"])
def test_diameter_of_a_box_is_the_voxel_centre_diagonal(name: str) -> None:
    # 5 x 3 voxels in-plane at 0.8 x 1.2 mm (2 slices thick at 2.5 mm): the centres of
    # opposite corner voxels are 4 * 0.8 = 3.2 mm and 2 * 1.2 = 2.4 mm apart: 4.0 mm.
    perm, sign = ORIENTATIONS[name]
    world_spacing = (0.8, 1.2, 2.5)
    affine = np.eye(4)
    for j, (axis, direction) in enumerate(zip(perm, sign, strict=True)):
        affine[:3, j] = 0.0
        affine[axis, j] = direction * world_spacing[axis]
    world_box = ((3, 8), (2, 5), (4, 6))
    shape = [12, 12, 12]
    box = [slice(0)] * 3
    for j, axis in enumerate(perm):
        lo, hi = world_box[axis]
        box[j] = slice(lo, hi) if sign[j] > 0 else slice(shape[j] - hi, shape[j] - lo)
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(box)] = True
    assert mask.sum() == 30
    assert axial_feret_diameter_mm(mask, affine) == pytest.approx(4.0)


def test_diameter_edge_cases() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    assert axial_feret_diameter_mm(mask, np.eye(4)) == 0.0
    mask[2, 2, 2] = True
    assert axial_feret_diameter_mm(mask, np.eye(4)) == 0.0
    mask[:, 2, 2] = True  # a collinear line of 5 voxels: 4 mm between end centres
    assert axial_feret_diameter_mm(mask, np.eye(4)) == pytest.approx(4.0)
    # Many points (past the brute-force limit): collinear, where Qhull fails, then not.
    line = np.zeros((90, 3, 3), dtype=bool)
    line[:, 1, 1] = True
    assert axial_feret_diameter_mm(line, np.eye(4)) == pytest.approx(89.0)
    line[:, 2, 1] = True
    assert axial_feret_diameter_mm(line, np.eye(4)) == pytest.approx(math.hypot(89.0, 1.0))


def test_superior_axis_follows_the_affine() -> None:
    for name, expected in (("RAS", 2), ("LPS", 2), ("SRA", 0), ("PIL", 1)):
        assert superior_voxel_axis(_grid(name)[0]) == expected


def _burden_volume() -> np.ndarray:
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[5:25, 5:25, 5:15] = LIVER  # 4000 voxels including the tumours below
    labels[6:8, 6:8, 6:8] = TUMOUR  # 8 voxels, first in scan order
    labels[10:13, 10:13, 6:9] = TUMOUR  # 27 voxels
    labels[18:22, 18:22, 8:12] = TUMOUR  # 64 voxels
    # Two cubes touching at a corner: one 26-connected tumour of 2 * 8 voxels.
    labels[6:8, 20:22, 10:12] = TUMOUR
    labels[8:10, 22:24, 12:14] = TUMOUR
    return labels


def test_tumour_burden_counts_and_sorting() -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm3 voxels
    labels = _burden_volume()
    q = quantify(labels, affine)

    n_tumour_voxels = 8 + 27 + 64 + 16
    n_liver_voxels = 4000  # all tumours lie inside the liver slab
    assert np.count_nonzero(labels) == n_liver_voxels
    assert q["liver_volume_ml"] == pytest.approx(n_liver_voxels * 2 / 1000, abs=1e-12)
    parenchyma_ml = (n_liver_voxels - n_tumour_voxels) * 2 / 1000
    assert q["liver_parenchyma_volume_ml"] == pytest.approx(parenchyma_ml, abs=1e-12)
    assert q["tumour_volume_ml"] == pytest.approx(n_tumour_voxels * 2 / 1000, abs=1e-12)
    assert q["tumour_burden_pct"] == pytest.approx(2.875, rel=1e-12)

    assert q["n_tumours"] == 4
    assert [t["n_voxels"] for t in q["tumours"]] == [64, 27, 16, 8]
    assert [t["id"] for t in q["tumours"]] == [1, 2, 3, 4]
    volumes = [t["volume_ml"] for t in q["tumours"]]
    assert volumes == pytest.approx([0.128, 0.054, 0.032, 0.016])
    # Centroid of the 64-voxel cube (indices 18..21, 18..21, 8..11) through the affine.
    assert q["tumours"][0]["centroid_mm"] == pytest.approx([19.5, 19.5, 19.0])


def test_burden_of_a_half_tumour_liver_is_exactly_fifty_percent() -> None:
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:8, 2:8, 2:4] = LIVER
    labels[2:8, 2:8, 4:6] = TUMOUR
    q = quantify(labels, np.diag([0.7, 0.7, 3.0, 1.0]))
    assert q["tumour_burden_pct"] == 50.0
    assert q["n_tumours"] == 1


def test_output_is_json_serialisable() -> None:
    labels, affine = _ellipsoid("LPS", (10.0, 12.0, 8.0))
    labels[:3, :3, :3] = TUMOUR  # a second tumour, in a corner
    q = quantify(torch.as_tensor(labels[None]), torch.as_tensor(affine))
    _assert_plain_json(q)
    assert json.loads(json.dumps(q, allow_nan=False)) == q
    assert set(q) == {
        "voxel_volume_mm3",
        "liver_volume_ml",
        "liver_parenchyma_volume_ml",
        "tumour_volume_ml",
        "tumour_burden_pct",
        "n_tumours",
        "tumours",
    }
    assert set(q["tumours"][0]) == {
        "id",
        "n_voxels",
        "volume_ml",
        "largest_axial_diameter_mm",
        "centroid_mm",
    }


def test_quantification_row() -> None:
    labels = _burden_volume()
    labels[5:25, 24, 5] = TUMOUR  # a 20-voxel rod: not the largest tumour, the longest
    q = quantify(labels, np.diag([1.0, 1.0, 2.0, 1.0]))
    row = quantification_row("case_007", q)
    assert tuple(row) == QUANTIFICATION_COLUMNS
    _assert_plain_json(row)
    assert row["case_id"] == "case_007"
    assert row["n_tumours"] == 5
    assert row["liver_volume_ml"] == q["liver_volume_ml"]
    assert row["tumour_volume_ml"] == q["tumour_volume_ml"]
    assert row["tumour_burden_pct"] == q["tumour_burden_pct"]
    # The largest tumour (64-voxel cube) is 3 * sqrt(2) mm across; the rod, 19 mm.
    assert q["tumours"][0]["largest_axial_diameter_mm"] == pytest.approx(3 * math.sqrt(2))
    assert row["largest_tumour_diameter_mm"] == pytest.approx(19.0)


def test_empty_and_liver_only_volumes() -> None:
    q = quantify(np.zeros((6, 6, 6), dtype=np.uint8), np.eye(4))
    assert q["liver_volume_ml"] == 0.0 and q["tumour_burden_pct"] == 0.0
    assert q["n_tumours"] == 0 and q["tumours"] == []
    row = quantification_row("empty", q)
    assert row["largest_tumour_diameter_mm"] == 0.0 and row["n_tumours"] == 0

    liver_only = np.full((6, 6, 6), LIVER, dtype=np.uint8)
    q = quantify(liver_only, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert q["liver_volume_ml"] == pytest.approx(6**3 * 8 / 1000)
    assert q["tumour_burden_pct"] == 0.0


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="4x4"):
        quantify(np.zeros((4, 4, 4), np.uint8), np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        quantify(np.zeros((4, 4, 4), np.uint8), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="3D"):
        quantify(np.zeros((4, 4), np.uint8), np.eye(4))


def test_a_liver_in_a_large_scan_measures_as_in_its_own_box():
    # quantify crops to the labelled box first: the numbers, centroids in world mm
    # included, must not depend on how much empty scan surrounds the liver.
    tight = np.zeros((30, 24, 12), dtype=np.uint8)
    tight[2:28, 3:22, 1:11] = 1
    tight[5:9, 6:10, 3:6] = 2
    tight[20:26, 12:20, 5:10] = 2
    spacing = np.diag([-0.8, -0.8, 2.0, 1.0])  # LPS-like
    spacing[:3, 3] = [100.0, 80.0, -40.0]
    large = np.zeros((90, 70, 40), dtype=np.uint8)
    large[40:70, 25:49, 17:29] = tight
    tight_affine = spacing.copy()
    tight_affine[:3, 3] = spacing[:3, :3] @ np.array([40.0, 25.0, 17.0]) + spacing[:3, 3]
    in_large, in_tight = quantify(large, spacing), quantify(tight, tight_affine)
    assert in_large["n_tumours"] == 2
    assert in_large["liver_volume_ml"] == pytest.approx(26 * 19 * 10 * 0.8 * 0.8 * 2.0 / 1000)
    for large_tumour, tight_tumour in zip(
        in_large.pop("tumours"), in_tight.pop("tumours"), strict=True
    ):
        assert large_tumour.pop("centroid_mm") == pytest.approx(tight_tumour.pop("centroid_mm"))
        assert large_tumour == tight_tumour
    assert in_large == in_tight


def test_a_fortran_ordered_mask_measures_as_its_c_ordered_copy() -> None:
    # The predictor's masks are Fortran-ordered (NIfTI's order); quantify labels their
    # transpose. Two tumours of equal volume keep one order: by world centroid.
    labels = np.zeros((30, 24, 16), dtype=np.uint8)
    labels[2:28, 2:22, 2:14] = 1
    labels[20:23, 4:7, 5:8] = 2  # 27 voxels, further right (larger x)
    labels[4:7, 15:18, 9:12] = 2  # 27 voxels
    labels[10:14, 10:15, 3:5] = 2  # 40 voxels
    affine = np.diag([-0.7, 0.9, 2.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    c_order = quantify(labels, affine)
    f_order = quantify(np.asfortranarray(labels), affine)
    assert [t["n_voxels"] for t in c_order["tumours"]] == [40, 27, 27]
    # x = 10 - 0.7 i: the tumour at i 4-6 lies at larger world x than the one at 20-22.
    assert c_order["tumours"][1]["centroid_mm"][0] < c_order["tumours"][2]["centroid_mm"][0]
    for a, b in zip(c_order["tumours"], f_order["tumours"], strict=True):
        assert a["n_voxels"] == b["n_voxels"]
        assert a["largest_axial_diameter_mm"] == pytest.approx(b["largest_axial_diameter_mm"])
        np.testing.assert_allclose(a["centroid_mm"], b["centroid_mm"], atol=1e-9)
    assert {k: v for k, v in c_order.items() if k != "tumours"} == pytest.approx(
        {k: v for k, v in f_order.items() if k != "tumours"}
    )
