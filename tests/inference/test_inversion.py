"""The per-axis index map puts labels back where MONAI's Invertd does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Rotated

from pipeline.bundle import bundle_root_of, config_file
from pipeline.inference.inversion import axis_index_maps, invert_labels
from pipeline.io import save_nifti


def _bundle_transforms() -> tuple[Compose, list]:
    files = [str(config_file("common.yaml"))]
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": bundle_root_of(files)})
    return (
        Compose(parser.get_parsed_content("load_transforms")),
        list(parser.get_parsed_content("preprocess_transforms")),
    )


def _scan(tmp_path, shape, spacing, axcodes_flip) -> str:
    """A body (0 HU) in air (-1000 HU), off-centre so the foreground crop cuts the grid."""
    image = np.full(shape, -1000, dtype=np.int16)
    x, y, z = shape
    image[x // 5 : x - x // 8, y // 6 : y - 2, :] = 40
    affine = np.diag([*spacing, 1.0])
    for axis in axcodes_flip:  # LPS-like storage: flipped axes, origin at the far side
        affine[axis, axis] *= -1
        affine[axis, 3] = spacing[axis] * (shape[axis] - 1)
    return str(save_nifti(image, affine, tmp_path / "scan.nii.gz"))


def _resampled_before_cropped(preprocess: list) -> list:
    """The bundle's pre-processing with the body crop after the resampling, not before."""
    names = [type(t).__name__ for t in preprocess]
    crop, spacing = names.index("ThresholdCropForegroundd"), names.index("AxisAlignedSpacingd")
    assert crop < spacing, "the bundle crops before it resamples"
    reordered = list(preprocess)
    reordered.insert(spacing, reordered.pop(crop))
    return reordered


def _both(tmp_path, shape, spacing, flips, preprocess_extra=(), crop_first=True):
    load, preprocess = _bundle_transforms()
    if not crop_first:
        preprocess = _resampled_before_cropped(preprocess)
    pipeline = Compose([*preprocess, *preprocess_extra])
    data = load({"image": _scan(tmp_path, shape, spacing, flips)})
    original_affine = np.asarray(data["image"].affine, dtype=np.float64)
    original_shape = tuple(data["image"].shape[1:])
    data = pipeline(data)
    image = data["image"]
    labels = torch.as_tensor(
        np.random.default_rng(0).integers(0, 3, size=image.shape[1:]), dtype=torch.uint8
    )[None]
    data["pred"] = MetaTensor(labels, meta=dict(image.meta))
    inverter = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=True)
    reference = np.asarray(inverter(data)["pred"][0]).round().astype(np.uint8)
    fast = invert_labels(labels, image, original_affine, original_shape)
    return fast, reference, image, original_affine, original_shape


@pytest.mark.parametrize(
    ("shape", "spacing", "flips"),
    [
        ((120, 110, 30), (0.8, 0.8, 2.0), (0, 1)),  # LPS, in-plane down-sampling
        ((90, 100, 28), (1.2, 1.1, 2.4), (0,)),  # LAS, odd ratios
        ((60, 70, 50), (1.7, 1.9, 1.2), ()),  # RAS, up-sampling in plane
    ],
)
@pytest.mark.parametrize("crop_first", [True, False], ids=["crop_first", "resample_first"])
def test_index_map_equals_invertd_voxel_for_voxel(tmp_path, shape, spacing, flips, crop_first):
    # Voxel sizes whose ratios to the network's (1.5, 1.5, 2) have odd denominators: no
    # scan voxel lies half-way between two network voxels (ties: the next test).
    fast, reference, image, *_ = _both(tmp_path, shape, spacing, flips, crop_first=crop_first)
    crop = next(op for op in image.applied_operations if op["class"] == "ThresholdCropForeground")
    assert any(crop["extra_info"]["cropped"])  # the crop really moved the grid
    assert fast is not None and fast.dtype == np.uint8
    assert fast.shape == reference.shape == shape
    # Fortran order, as NIfTI stores it: the save needs no strided copy.
    assert fast.flags.f_contiguous
    np.testing.assert_array_equal(fast, reference)


def test_ties_differ_only_where_two_network_voxels_are_equally_near(tmp_path):
    # 2.5 mm slices resampled to 2 mm: slice k lies at network index 1.25 k, a tie for
    # k = 2, 6, 10, ... Elsewhere the two inversions must agree exactly.
    shape = (60, 64, 40)
    fast, reference, *_ = _both(tmp_path, shape, (1.5, 1.5, 2.5), ())
    differing = set(np.flatnonzero((fast != reference).any(axis=(0, 1))).tolist())
    ties = {k for k in range(shape[2]) if (1.25 * k) % 1 == 0.5}
    assert differing <= ties
    assert (fast == reference)[..., sorted(set(range(shape[2])) - ties)].all()


@pytest.mark.parametrize("crop_first", [True, False], ids=["crop_first", "resample_first"])
def test_scan_voxel_takes_the_nearest_network_voxel(tmp_path, crop_first):
    # Up-sampled x (1.7 mm to 1.5 mm): network voxel j lies at scan index
    # (j + 0.5) 1.5 / 1.7 - 0.5 (pipeline/transforms/spacing.py), so scan voxel v at
    # network index (v + 0.5) 1.7 / 1.5 - 0.5, nearest floor((v + 0.5) 1.7 / 1.5), shifted
    # by the foreground crop; check the map against that formula.
    _, _, image, affine, shape = _both(
        tmp_path, (60, 70, 50), (1.7, 1.9, 1.2), (), crop_first=crop_first
    )
    axes, indices = axis_index_maps(image, affine, shape)
    assert axes == [0, 1, 2]
    crop_low, crop_high = next(
        op["extra_info"]["cropped"][0:2]
        for op in image.applied_operations
        if op["class"] == "ThresholdCropForeground"
    )
    voxels = np.arange(60)
    if crop_first:
        # The crop is in scan voxels (the body's x // 5 = 12 and 60 // 8 = 7): the network
        # saw scan voxels 12-52, its grid starts at scan voxel 12, and past its last
        # centre a voxel takes the edge value ("border" padding).
        assert (crop_low, crop_high) == (12, 7)
        expected = np.floor((voxels - crop_low + 0.5) * 1.7 / 1.5).astype(int)
        expected = np.minimum(expected, image.shape[1] - 1)
        expected[(voxels < crop_low) | (voxels >= 60 - crop_high)] = -1
    else:
        # The crop is in network voxels, after the resampling.
        expected = np.floor((voxels + 0.5) * 1.7 / 1.5).astype(int) - crop_low
        expected[(expected < 0) | (expected >= image.shape[1])] = -1
    np.testing.assert_array_equal(indices[0], expected)


def test_a_rotation_in_the_preprocessing_is_left_to_invertd(tmp_path):
    rotation = Rotated(keys="image", angle=(0.0, 0.0, 0.3), keep_size=True)
    fast, reference, image, affine, shape = _both(
        tmp_path, (60, 64, 30), (1.5, 1.5, 2.0), (), preprocess_extra=[rotation]
    )
    assert fast is None
    assert axis_index_maps(image, affine, shape) is None
    assert reference.shape == (60, 64, 30)
