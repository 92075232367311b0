"""The Gaussian with a border of edge voxels: MONAI's values inside, no darkened faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth

from pipeline.transforms.smoothing import PaddedGaussianSmooth, PaddedGaussianSmoothd, kernel_radius


def test_a_flat_image_stays_flat_up_to_its_faces_with_the_edge_border():
    flat = torch.full((1, 10, 10, 6), 0.4)
    edge = PaddedGaussianSmooth(1.0)(flat)
    np.testing.assert_allclose(edge.numpy(), 0.4, atol=1e-5)
    # MONAI's zero border: the corner voxel keeps 0.4 x (1 - 0.31)^3 of its level.
    zeros = PaddedGaussianSmooth(1.0, border="zeros")(flat)
    assert float(zeros[0, 0, 0, 0]) == pytest.approx(0.4 * 0.69**3, abs=0.01)
    np.testing.assert_array_equal(zeros.numpy(), GaussianSmooth(1.0)(flat).numpy())


def test_away_from_the_faces_the_result_is_monais_and_the_metadata_is_kept():
    generator = torch.Generator().manual_seed(0)
    affine = torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.rand(1, 20, 18, 16, generator=generator), affine=affine)
    sigma = [1.0, 1.0, 0.5]
    out = PaddedGaussianSmooth(sigma)(image)
    reference = GaussianSmooth(sigma)(image)
    inside = (slice(None), slice(4, -4), slice(4, -4), slice(2, -2))  # radii 4, 4, 2
    assert [kernel_radius(s) for s in sigma] == [4, 4, 2]
    np.testing.assert_array_equal(out[inside].numpy(), reference[inside].numpy())
    assert not np.array_equal(out.numpy(), reference.numpy())  # the faces differ
    assert isinstance(out, MetaTensor) and out.shape == image.shape
    np.testing.assert_array_equal(out.affine.numpy(), affine.numpy())


def test_the_dictionary_version_smooths_its_keys_only_and_numpy_stays_numpy():
    step = np.zeros((1, 8, 8, 8), dtype=np.float32)
    step[:, 4:] = 1.0
    data = PaddedGaussianSmoothd("image", sigma=1.0)({"image": step, "label": step.copy()})
    assert isinstance(data["image"], np.ndarray)
    np.testing.assert_array_equal(data["label"], step)
    # Across the step the Gaussian's CDF: 0.5 halfway, symmetric on both sides.
    profile = data["image"][0, :, 4, 4]
    np.testing.assert_allclose(profile[3] + profile[4], 1.0, atol=1e-4)
    assert 0.2 < profile[3] < 0.4 and profile[0] < 1e-3


def test_a_wrong_border_or_sigma_count_is_refused():
    with pytest.raises(ValueError, match="border 'wrap'"):
        PaddedGaussianSmooth(1.0, border="wrap")
    with pytest.raises(ValueError, match="2 sigmas"):
        PaddedGaussianSmooth([1.0, 1.0])(torch.zeros(1, 4, 4, 4))
