from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose

from pipeline import BACKGROUND, LIVER, TUMOUR
from pipeline.inference.inversion import block_sizes
from pipeline.transforms.masks import fill_holes
from pipeline.transforms.postprocess import (
    PostprocessConfig,
    PostprocessLabels,
    PostprocessLabelsd,
    ball_structure,
    postprocess_labels,
)
from pipeline.transforms.postprocess_blocks import (
    keep_largest_liver_blocks,
    postprocess_label_blocks,
)

SHAPE = (48, 48, 48)
ISO = (1.0, 1.0, 1.0)
LIVER_BOX = (slice(8, 40),) * 3


def _box(*bounds: tuple[int, int]) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in bounds)


# Every structure of the reference scene, 1 mm isotropic voxels, default config.
DETACHED_LIVER = _box((42, 45), (42, 45), (42, 45))  # 27 voxels, not touching the liver
HOLE = _box((20, 23), (20, 23), (20, 23))  # enclosed background inside the liver
EDGE_TUMOUR = _box((36, 44), (20, 24), (20, 24))  # straddles the liver face x = 40
FLOATING_TUMOUR = _box((1, 5), (1, 5), (1, 5))  # 64 voxels, no liver around
TINY_TUMOUR = _box((12, 14), (12, 14), (12, 14))  # 8 voxels = 8 mm3 < 10
SMALL_KEPT_TUMOUR = _box((12, 14), (28, 30), (28, 31))  # 12 voxels = 12 mm3 >= 10
# Two 8-voxel cubes touching only at a corner: one 16 mm3 tumour with 26-connectivity,
# two 8 mm3 ones (both removed) with 6-connectivity.
DIAGONAL_PAIR = (_box((28, 30), (12, 14), (12, 14)), _box((30, 32), (14, 16), (14, 16)))


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Return (prediction, expected output with the default config)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[LIVER_BOX] = LIVER
    labels[DETACHED_LIVER] = LIVER
    labels[HOLE] = BACKGROUND
    for box in (EDGE_TUMOUR, FLOATING_TUMOUR, TINY_TUMOUR, SMALL_KEPT_TUMOUR, *DIAGONAL_PAIR):
        labels[box] = TUMOUR

    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[LIVER_BOX] = LIVER  # hole filled, tiny tumour relabelled as liver
    for box in (EDGE_TUMOUR, SMALL_KEPT_TUMOUR, *DIAGONAL_PAIR):
        expected[box] = TUMOUR  # the edge tumour is kept whole, also outside the liver box
    return labels, expected


def test_default_config_keeps_and_drops_exactly_the_expected_components() -> None:
    labels, expected = _scene()
    out = postprocess_labels(labels, ISO)
    np.testing.assert_array_equal(out, expected)
    # Spot checks that name each decision.
    assert (out[DETACHED_LIVER] == BACKGROUND).all()
    assert (out[FLOATING_TUMOUR] == BACKGROUND).all()
    assert (out[HOLE] == LIVER).all()
    assert (out[TINY_TUMOUR] == LIVER).all()
    assert (out[SMALL_KEPT_TUMOUR] == TUMOUR).all()
    assert (out[EDGE_TUMOUR] == TUMOUR).all()


def test_input_is_not_modified_and_dtype_is_kept() -> None:
    labels, expected = _scene()
    before = labels.copy()
    postprocess_labels(labels, ISO)
    np.testing.assert_array_equal(labels, before)

    as_float = labels.astype(np.float32)
    out = postprocess_labels(as_float, ISO)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_liver_split_by_a_tumour_is_one_component() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[_box((4, 20), (4, 40), (4, 40))] = LIVER  # big lobe
    labels[_box((20, 24), (18, 26), (18, 26))] = TUMOUR  # the only link between lobes
    small_lobe = _box((24, 30), (4, 40), (4, 40))
    labels[small_lobe] = LIVER
    out = postprocess_labels(labels, ISO)
    np.testing.assert_array_equal(out, labels)
    assert (out[small_lobe] == LIVER).all()


def test_tumour_inside_liver_without_largest_component() -> None:
    labels, _ = _scene()
    config = PostprocessConfig(keep_largest_liver=False)
    out = postprocess_labels(labels, ISO, config)
    assert (out[DETACHED_LIVER] == LIVER).all()  # no longer removed
    assert (out[FLOATING_TUMOUR] == BACKGROUND).all()  # no liver tissue attached
    assert (out[EDGE_TUMOUR] == TUMOUR).all()

    config = PostprocessConfig(keep_largest_liver=False, tumour_inside_liver=False)
    out = postprocess_labels(labels, ISO, config)
    assert (out[FLOATING_TUMOUR] == TUMOUR).all()  # 64 mm3: survives the size filter


@pytest.mark.parametrize(
    ("spacing", "tiny", "small"),
    [
        # voxel volume (mm3) -> tumour volumes of 8 and 12 voxels, threshold 10 mm3
        ((1.0, 1.0, 1.0), LIVER, TUMOUR),  # 8 < 10, 12 >= 10
        ((1.0, 1.0, 2.0), TUMOUR, TUMOUR),  # 16, 24
        ((0.5, 1.0, 1.0), LIVER, LIVER),  # 4, 6
        ((1.0, 1.0, 1.25), TUMOUR, TUMOUR),  # 10 (not smaller than 10), 15
        ((0.8, 0.8, 1.5), LIVER, TUMOUR),  # 7.68, 11.52
    ],
)
def test_min_tumour_volume_uses_spacing(
    spacing: tuple[float, float, float], tiny: int, small: int
) -> None:
    labels, _ = _scene()
    out = postprocess_labels(labels, spacing)
    assert (out[TINY_TUMOUR] == tiny).all()
    assert (out[SMALL_KEPT_TUMOUR] == small).all()
    assert (out[EDGE_TUMOUR] == TUMOUR).all()  # 128 voxels: kept at every spacing


def test_min_tumour_uses_26_connectivity() -> None:
    labels, _ = _scene()
    out = postprocess_labels(labels, ISO)
    for box in DIAGONAL_PAIR:
        assert (out[box] == TUMOUR).all()
    # Threshold 17 mm3: the 16 mm3 pair goes, as a whole.
    out = postprocess_labels(labels, ISO, PostprocessConfig(min_tumour_mm3=17.0))
    for box in DIAGONAL_PAIR:
        assert (out[box] == LIVER).all()


def test_hole_filling_can_be_disabled() -> None:
    labels, _ = _scene()
    out = postprocess_labels(labels, ISO, PostprocessConfig(fill_liver_holes=False))
    assert (out[HOLE] == BACKGROUND).all()


def _liver_with_vessel(axis: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Liver box crossed end to end by a 3x3 'vessel' along ``axis`` (open in 3D)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[LIVER_BOX] = LIVER
    vessel = [slice(22, 25)] * 3
    vessel[axis] = slice(None)
    labels[tuple(vessel)] = BACKGROUND
    return labels, tuple(vessel)


def test_axial_slice_fill_closes_a_vessel_the_3d_fill_misses() -> None:
    labels, vessel = _liver_with_vessel(axis=2)
    inside = (slice(22, 25), slice(22, 25), slice(8, 40))
    out = postprocess_labels(labels, ISO)
    assert (out[vessel] == BACKGROUND).all()  # open at both ends: not a 3D hole

    out = postprocess_labels(labels, ISO, PostprocessConfig(fill_holes_axial=True))
    assert (out[inside] == LIVER).all()
    assert out[vessel].sum() == 3 * 3 * 32  # only the part inside the liver is filled

    # Slices across another axis see the vessel as a channel open to the outside.
    config = PostprocessConfig(fill_holes_axial=True, axial_axis=0)
    out = postprocess_labels(labels, ISO, config)
    assert (out[vessel] == BACKGROUND).all()


def test_ball_structure_is_anisotropic() -> None:
    ball = ball_structure((1.0, 1.0, 2.5), 2.5)
    assert ball.shape == (5, 5, 3)
    assert ball[2, 2].tolist() == [True, True, True]  # 2.5 mm up and down: on the sphere
    assert ball[:, 2, 1].all() and ball[2, :, 1].all()
    assert not ball[0, 0, 1]  # sqrt(8) mm > 2.5 mm
    assert not ball[0, 2, 0]  # sqrt(2^2 + 2.5^2) mm > 2.5 mm
    assert ball.sum() == 21 + 2
    assert ball_structure((1.0, 1.0, 1.0), 0.5).shape == (1, 1, 1)


def test_closing_bridges_a_cleft_only_if_the_radius_spans_the_voxels() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[LIVER_BOX] = LIVER
    cleft = _box((12, 36), (12, 36), (23, 24))  # one voxel thick along axis 2
    labels[cleft] = BACKGROUND
    box_only = np.zeros(SHAPE, dtype=np.uint8)
    box_only[LIVER_BOX] = LIVER

    def close(spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
        # Hole filling off, so that only the closing can fill the (enclosed) cleft.
        config = PostprocessConfig(fill_liver_holes=False, liver_closing_mm=radius_mm)
        return postprocess_labels(labels, spacing, config)

    np.testing.assert_array_equal(close(ISO, 1.5), box_only)
    # 3 mm slices: a 1.5 mm ball is a single voxel along axis 2 and cannot bridge it...
    np.testing.assert_array_equal(close((1.0, 1.0, 3.0), 1.5), labels)
    # ...a 3 mm ball can.
    np.testing.assert_array_equal(close((1.0, 1.0, 3.0), 3.0), box_only)


def test_closing_near_the_image_border_does_not_erode_the_liver() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[0:20, 0:20, 0:20] = LIVER
    out = postprocess_labels(labels, ISO, PostprocessConfig(liver_closing_mm=3.0))
    np.testing.assert_array_equal(out, labels)


def test_opening_removes_a_spur_and_a_thin_bridge() -> None:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[LIVER_BOX] = LIVER
    spur = _box((40, 46), (24, 25), (24, 25))  # 1x1 voxel cross-section
    labels[spur] = LIVER
    island = _box((2, 5), (20, 23), (20, 23))  # e.g. spleen, joined to the liver by a bridge
    labels[island] = LIVER
    bridge = _box((5, 8), (21, 22), (21, 22))
    labels[bridge] = LIVER
    assert (postprocess_labels(labels, ISO)[island] == LIVER).all()  # connected before opening
    config = PostprocessConfig(liver_opening_mm=1.5)
    out = postprocess_labels(labels, ISO, config)
    assert (out[spur] == BACKGROUND).all()
    assert (out[bridge] == BACKGROUND).all()
    assert (out[island] == BACKGROUND).all()  # cut loose by the opening, then dropped
    # The 1.5 mm ball (3x3x3 without corners) only shaves the box's 8 corner voxels.
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[LIVER_BOX] = LIVER
    for corner in np.ndindex(2, 2, 2):
        expected[tuple(8 + 31 * c for c in corner)] = BACKGROUND
    np.testing.assert_array_equal(out, expected)


def test_empty_prediction_stays_empty() -> None:
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    out = postprocess_labels(labels, ISO)
    assert out.dtype == np.uint8 and not out.any()


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="spacing"):
        postprocess_labels(np.zeros((4, 4, 4), np.uint8), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        postprocess_labels(np.zeros((4, 4), np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="min_tumour_mm3"):
        PostprocessConfig(min_tumour_mm3=-1.0)


# An LPS-stored array: flipped first two axes, anisotropic, with an origin.
LPS_AFFINE = np.array(
    [
        [-0.8, 0.0, 0.0, 120.0],
        [0.0, -0.8, 0.0, 95.0],
        [0.0, 0.0, 1.25, -300.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def test_dict_transform_on_metatensor_matches_the_function() -> None:
    labels, _ = _scene()
    pred = MetaTensor(
        torch.as_tensor(labels[None], dtype=torch.float32),
        affine=torch.as_tensor(LPS_AFFINE),
        meta={"filename_or_obj": "case_001.nii.gz"},
    )
    out = PostprocessLabelsd(keys="pred")({"pred": pred, "other": 3})

    result = out["pred"]
    assert isinstance(result, MetaTensor)
    assert result.shape == (1, *SHAPE) and result.dtype == torch.float32
    np.testing.assert_allclose(result.affine.numpy(), LPS_AFFINE)
    assert result.meta["filename_or_obj"] == "case_001.nii.gz"
    assert out["other"] == 3

    expected = postprocess_labels(labels, (0.8, 0.8, 1.25))
    np.testing.assert_array_equal(result[0].numpy().astype(np.uint8), expected)
    # The spacing really came from the affine: 0.8 mm3 voxels remove the 12-voxel tumour.
    assert not np.array_equal(expected, postprocess_labels(labels, ISO))
    assert (result[0][SMALL_KEPT_TUMOUR] == LIVER).all()


def test_dict_transform_in_a_compose_after_argmax() -> None:
    labels, _ = _scene()
    logits = np.stack([labels == k for k in (BACKGROUND, LIVER, TUMOUR)]).astype(np.float32)
    chain = Compose(
        [
            AsDiscreted(keys="pred", argmax=True),
            PostprocessLabelsd(keys="pred", min_tumour_mm3=5.0),
        ]
    )
    pred = MetaTensor(torch.as_tensor(logits), affine=torch.as_tensor(LPS_AFFINE))
    result = chain({"pred": pred})["pred"]
    assert isinstance(result, MetaTensor) and result.shape == (1, *SHAPE)
    np.testing.assert_allclose(result.affine.numpy(), LPS_AFFINE)
    config = PostprocessConfig(min_tumour_mm3=5.0)
    expected = postprocess_labels(labels, (0.8, 0.8, 1.25), config)
    np.testing.assert_array_equal(result[0].numpy().astype(np.uint8), expected)


def test_transforms_without_metatensor_need_an_explicit_spacing() -> None:
    labels, _ = _scene()
    spacing = (0.5, 1.0, 1.0)
    expected = postprocess_labels(labels, spacing)

    out = PostprocessLabelsd(keys="pred", spacing=spacing)({"pred": torch.as_tensor(labels[None])})
    assert type(out["pred"]) is torch.Tensor and out["pred"].dtype == torch.uint8
    np.testing.assert_array_equal(out["pred"][0].numpy(), expected)

    data = {"pred": labels[None].copy(), "spacing": np.array(spacing)}
    out = PostprocessLabelsd(keys="pred", spacing_key="spacing", spacing=ISO)(data)
    assert isinstance(out["pred"], np.ndarray)
    np.testing.assert_array_equal(out["pred"][0], expected)

    np.testing.assert_array_equal(PostprocessLabels(spacing=spacing)(labels), expected)
    with pytest.raises(ValueError, match="spacing"):
        PostprocessLabelsd(keys="pred")({"pred": torch.as_tensor(labels[None])})
    with pytest.raises(ValueError, match="single-channel"):
        PostprocessLabels(spacing=ISO)(np.zeros((3, 4, 4, 4), np.uint8))


def test_dict_transform_takes_the_axial_axis_from_the_affine() -> None:
    # Array axis 0 runs along world S (then R, then A): axial slices are across axis 0.
    permuted = np.array(
        [
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    labels, vessel = _liver_with_vessel(axis=0)
    pred = MetaTensor(torch.as_tensor(labels[None]), affine=torch.as_tensor(permuted))
    out = PostprocessLabelsd(keys="pred", fill_holes_axial=True)({"pred": pred})["pred"]
    assert (out[0][22:25, 22:25, 22:25] == LIVER).all()
    assert out[0][vessel].sum() == 3 * 3 * 32

    # Forcing axis 2 overrides the affine and the vessel stays open.
    tf = PostprocessLabelsd(keys="pred", fill_holes_axial=True, axial_axis=2)
    out = tf({"pred": pred})["pred"]
    assert (out[0][vessel] == BACKGROUND).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hole_filling_by_labelling_equals_scipy(seed):
    from scipy import ndimage

    # Random blobs with cavities, tunnels to the border and holes touching the faces.
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_dilation(rng.random((40, 36, 30)) > 0.93, iterations=2)
    mask[10:20, 10:20, 10:20] = True
    mask[13:17, 13:17, 13:17] = False  # a closed cavity
    filled = fill_holes(mask)
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(mask))
    assert filled[13:17, 13:17, 13:17].all()


def _upsample(labels, sizes):
    """Each voxel as a block of sizes[0][i] x sizes[1][j] x sizes[2][k] (an index map)."""
    for axis, size in enumerate(sizes):
        labels = np.repeat(labels, size, axis=axis)
    return labels


def test_largest_liver_on_the_coarse_grid_is_the_fine_grids_by_block_size():
    coarse = np.zeros((12, 10, 8), dtype=np.uint8)
    coarse[1:4, 1:4, 1:4] = LIVER  # 27 coarse voxels, in thin blocks
    coarse[2, 2, 2] = TUMOUR
    coarse[7:10, 6:8, 4:6] = LIVER  # 12 coarse voxels, in thick blocks: larger on the fine grid
    coarse[11, 9, 7] = LIVER  # on a slab that no fine voxel takes (size 0)
    sizes = [
        np.array([1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 2, 0]),
        np.array([1, 1, 1, 1, 1, 1, 3, 3, 2, 0]),
        np.array([1, 1, 1, 1, 2, 2, 1, 1]),
    ]
    kept = keep_largest_liver_blocks(coarse, sizes)
    assert kept[1:4, 1:4, 1:4].sum() == 0 and kept[7:10, 6:8, 4:6].all()
    only_largest = PostprocessConfig(
        fill_liver_holes=False, tumour_inside_liver=False, min_tumour_mm3=0
    )
    spacing = (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(
        postprocess_labels(_upsample(kept, sizes), spacing, only_largest),
        postprocess_labels(_upsample(coarse, sizes), spacing, only_largest),
    )


def test_largest_liver_blocks_tie_of_block_volumes_and_a_clear_winner():
    # A: 4 voxels in blocks of 1; B: 2 voxels in blocks of 2: the same volume, a tie the
    # coarse grid cannot order (None), though the voxel counts differ.
    coarse = np.zeros((8, 6, 6), dtype=np.uint8)
    coarse[1, 1, 1:5] = LIVER
    coarse[6, 4, 2:4] = LIVER
    sizes = [np.array([1, 1, 1, 1, 1, 1, 2, 1]), np.ones(6, int), np.ones(6, int)]
    assert keep_largest_liver_blocks(coarse, sizes) is None
    # B's blocks of 3: B (6) beats A (4) with half A's voxels.
    sizes[0] = np.array([1, 1, 1, 1, 1, 1, 3, 1])
    kept = keep_largest_liver_blocks(coarse, sizes)
    assert kept[6, 4, 2:4].all() and kept.sum() == 2 * LIVER
    # Beside a 48-voxel liver, B (2 voxels, blocks of 3) cannot win: the liver is kept.
    coarse[1:4, 0:4, 0:4] = LIVER
    kept = keep_largest_liver_blocks(coarse, sizes)
    assert kept[1:4, 0:4, 0:4].all() and not kept[6, 4, 2:4].any()


def _random_scene(seed):
    """Coarse labels with islands, enclosed and open holes, tumours in and out of the
    liver, and block sizes of 1-3 with size-0 slabs at the ends (as an index map makes)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (18, 16, 12)
    liver = ndimage.binary_dilation(rng.random(shape) > 0.9, iterations=1)
    liver[3:13, 3:12, 2:9] = True
    liver[6:9, 6:9, 4:6] = False  # a cavity, enclosed on the coarse grid
    coarse = np.where(liver, LIVER, BACKGROUND).astype(np.uint8)
    tumour = (rng.random(shape) > 0.93) | (rng.random(shape) > 0.995)[..., ::-1]
    coarse[tumour] = TUMOUR  # single voxels and pairs: some in liver, some floating
    sizes = []
    for n in shape:
        size = rng.integers(1, 4, n)
        size[: rng.integers(0, 2)] = 0
        size[n - rng.integers(0, 3) :] = 0
        sizes.append(size)
    return coarse, sizes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "config",
    [
        PostprocessConfig(),  # the bundle's steps
        PostprocessConfig(min_tumour_mm3=30.0),
        PostprocessConfig(keep_largest_liver=False, min_tumour_mm3=5.0),
    ],
    ids=["default", "min_30mm3", "all_components"],
)
def test_postprocessing_on_the_coarse_grid_is_the_fine_grids_result(seed, config):
    coarse, sizes = _random_scene(seed)
    spacing = (0.8, 0.7, 2.0)  # tumour volumes weigh blocks in mm^3 of the fine grid
    on_fine = postprocess_labels(_upsample(coarse, sizes), spacing, config)
    on_coarse = postprocess_label_blocks(coarse, sizes, spacing, config)
    assert on_coarse is not None
    np.testing.assert_array_equal(_upsample(on_coarse, sizes), on_fine)
    # The scene exercises the steps: the cavity is filled, islands and tumours change.
    assert (on_fine != _upsample(coarse, sizes)).any()
    assert (on_coarse[6:9, 6:9, 4:6] != BACKGROUND).all()


def test_a_tumour_volume_on_the_coarse_grid_counts_its_blocks():
    coarse = np.full((8, 8, 8), LIVER, dtype=np.uint8)
    coarse[0, :, :] = coarse[-1, :, :] = BACKGROUND
    coarse[3, 3, 3] = TUMOUR  # one coarse voxel: a 2 x 2 x 1 block of 1 mm^3 = 4 mm^3
    sizes = [np.full(8, 2), np.full(8, 2), np.full(8, 1)]
    kept = postprocess_label_blocks(coarse, sizes, ISO, PostprocessConfig(min_tumour_mm3=4.0))
    dropped = postprocess_label_blocks(coarse, sizes, ISO, PostprocessConfig(min_tumour_mm3=4.5))
    assert kept[3, 3, 3] == TUMOUR and dropped[3, 3, 3] == LIVER


def test_morphology_is_left_to_the_fine_grid():
    coarse, sizes = _random_scene(0)
    for config in (
        PostprocessConfig(liver_opening_mm=2.0),
        PostprocessConfig(liver_closing_mm=2.0),
        PostprocessConfig(fill_holes_axial=True),
    ):
        assert postprocess_label_blocks(coarse, sizes, ISO, config) is None


def test_blocks_with_a_gap_are_left_to_the_fine_grid():
    # Scan voxel i takes network index 2 i (a scan twice as coarse): index 1, 3... never.
    maps = ([0, 1, 2], [np.arange(0, 10, 2), np.arange(6), np.arange(4)])
    assert block_sizes(maps, (10, 6, 4)) is None
    maps = ([0, 1, 2], [np.repeat(np.arange(5), 2), np.arange(6), np.array([-1, 0, 1, 2])])
    sizes = block_sizes(maps, (5, 6, 4))
    assert [s.tolist() for s in sizes] == [[2] * 5, [1] * 6, [1, 1, 1, 0]]
