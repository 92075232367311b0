"""AxisAlignedSpacingd: exact voxel size, values where its affine says, undone by Invertd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from pipeline.transforms.spacing import AxisAlignedSpacingd, voxel_sizes


def _volume(shape=(40, 33, 12), spacing=(0.8, 0.9, 2.5), signs=(-1, -1, 1)):
    affine = np.diag([s * d for s, d in zip(signs, spacing, strict=True)] + [1.0])
    affine[:3, 3] = (100.0, 80.0, -300.0)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    return affine, world


@pytest.mark.parametrize("pixdim", [(1.5, 1.5, 2.0), (0.5, 2.0, 3.0)], ids=["down", "mixed"])
def test_linear_image_lands_where_the_new_affine_says(pixdim):
    affine, world = _volume()
    # Intensity = a linear function of the world position: linear interpolation keeps
    # it exact wherever no clamping at the edge is involved.
    weights = np.array([0.5, -0.25, 2.0])
    image = MetaTensor(torch.as_tensor(world @ weights, dtype=torch.float32)[None], affine=affine)
    out = AxisAlignedSpacingd("image", pixdim)({"image": image})["image"]
    new_affine = np.asarray(out.affine, np.float64)
    np.testing.assert_allclose(voxel_sizes(new_affine), pixdim, rtol=1e-12)
    np.testing.assert_array_equal(np.sign(np.diag(new_affine)[:3]), [-1, -1, 1])
    ratios = np.asarray(pixdim) / np.array([0.8, 0.9, 2.5])
    assert tuple(out.shape[1:]) == tuple(np.floor(np.array([40, 33, 12]) / ratios).astype(int))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape[1:]], indexing="ij"), -1)
    expected = (index @ new_affine[:3, :3].T + new_affine[:3, 3]) @ weights
    # Output voxels whose position lies inside the input's first and last centres.
    source = (index + 0.5) * ratios - 0.5
    inside = ((source >= 0) & (source <= np.array([39, 32, 11]))).all(-1)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(np.asarray(out[0])[inside], expected[inside], atol=1e-3)


def test_labels_take_the_nearest_voxel_by_the_affines():
    affine, world = _volume()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(40, 33, 12)).astype(np.float32)
    image = MetaTensor(torch.as_tensor(labels)[None], affine=affine)
    out = AxisAlignedSpacingd("label", (1.5, 1.7, 2.0), mode="nearest")({"label": image})["label"]
    to_input = np.linalg.inv(affine) @ np.asarray(out.affine, np.float64)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape[1:]], indexing="ij"), -1)
    position = index @ to_input[:3, :3].T + to_input[:3, 3]
    nearest = np.floor(position + 0.5).astype(int)
    nearest = np.minimum(nearest, np.array(labels.shape) - 1)
    expected = labels[nearest[..., 0], nearest[..., 1], nearest[..., 2]]
    # 2.5 mm slices to 2 mm put every fifth output slice half-way between two input
    # slices: either is nearest, and rounding decides. Everywhere else the labels agree.
    tie = (np.abs((position % 1.0) - 0.5) < 1e-6).any(-1)
    assert 0 < tie.mean() < 0.25
    np.testing.assert_array_equal(np.asarray(out[0])[~tie], expected[~tie])


def test_invertd_restores_the_grid_and_the_labels_it_can():
    affine, _ = _volume()
    labels = np.zeros((40, 33, 12), dtype=np.float32)
    labels[10:30, 8:24, 3:9] = 1.0  # whole 2 x 2 x 1 blocks of the network grid
    image = MetaTensor(torch.as_tensor(labels)[None], affine=affine)
    pipeline = Compose([AxisAlignedSpacingd("image", (1.6, 1.8, 2.5), mode="bilinear")])
    data = pipeline({"image": image})
    assert tuple(data["image"].shape[1:]) == (20, 16, 12)  # blocks of 2 x 2 x 1: exact
    data["pred"] = MetaTensor(data["image"].as_tensor().round(), meta=dict(data["image"].meta))
    inverted = Invertd("pred", pipeline, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert tuple(inverted.shape[1:]) == (40, 33, 12)
    np.testing.assert_allclose(np.asarray(inverted.affine, np.float64), affine, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(inverted[0]), labels)


def _no_interpolation(*args, **kwargs):
    raise AssertionError("a volume already at pixdim is copied, not interpolated")


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_a_volume_already_at_pixdim_keeps_its_grid_values_and_inverts(mode, monkeypatch):
    affine, world = _volume(spacing=(1.5, 1.5, 2.0))
    values = torch.as_tensor(world @ np.array([0.5, -0.25, 2.0]), dtype=torch.float32)[None]
    image = MetaTensor(values.clone(), affine=affine)
    pipeline = Compose([AxisAlignedSpacingd("image", (1.5, 1.5, 2.0), mode=mode)])
    with monkeypatch.context() as patched:
        # Nothing to interpolate: the volume is copied.
        patched.setattr(torch.nn.functional, "interpolate", _no_interpolation)
        out = pipeline({"image": image})
    # The same values on the same grid, in a tensor of its own (the input is not aliased).
    np.testing.assert_array_equal(np.asarray(out["image"]), values.numpy())
    np.testing.assert_allclose(np.asarray(out["image"].affine, np.float64), affine, atol=1e-12)
    out["image"][0, 0, 0, 0] = -1.0
    assert float(image[0, 0, 0, 0]) == float(values[0, 0, 0, 0])
    # Recorded like any resampling, so Invertd undoes it to the same grid.
    assert out["image"].applied_operations[-1]["class"] == "AxisAlignedSpacingd"
    out["image"][0, 0, 0, 0] = values[0, 0, 0, 0]
    inverted = pipeline.inverse(out)["image"]
    np.testing.assert_allclose(np.asarray(inverted), values.numpy(), atol=1e-4)
    assert tuple(inverted.shape) == tuple(values.shape)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="pixdim"):
        AxisAlignedSpacingd("image", (1.5, 0.0, 2.0))
    with pytest.raises(ValueError, match="mode"):
        AxisAlignedSpacingd("image", (1.5, 1.5, 2.0), mode="cubic")
    with pytest.raises(ValueError, match="MetaTensor"):
        AxisAlignedSpacingd("image", (1.5, 1.5, 2.0))({"image": torch.zeros(1, 4, 4, 4)})
