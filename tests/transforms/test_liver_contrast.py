"""The liver-relative contrast channel: HU against the case's own liver median."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.transforms.liver_contrast import LiverContrastd, liver_contrast


def _liver_with_lesion(liver_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """A 20^3 liver of ``liver_hu`` in fat, a 4^3 lesion 25 HU darker, a mask 1 voxel too wide."""
    image = np.full((1, 24, 24, 24), -100.0, dtype=np.float32)
    image[0, 2:22, 2:22, 2:22] = liver_hu
    image[0, 10:14, 10:14, 10:14] = liver_hu - 25.0
    mask = np.zeros((1, 24, 24, 24), dtype=np.uint8)
    mask[0, 1:23, 1:23, 1:23] = 1  # a coarse mask: 2,648 fat voxels of its 10,648
    return image, mask


@pytest.mark.parametrize("liver_hu", [45.0, 105.0])  # non-contrast, portal-venous
def test_a_lesion_reads_the_same_in_both_phases_and_the_rest_is_clipped(liver_hu):
    image, mask = _liver_with_lesion(liver_hu)
    out = liver_contrast(image, mask, 100.0)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out[0, 5, 5, 5] == pytest.approx(0.0)  # liver: the median, despite the fat
    assert out[0, 11, 11, 11] == pytest.approx(-0.25)  # 25 HU darker, in either phase
    assert out[0, 0, 0, 0] == pytest.approx(-1.0)  # fat, 145-205 HU below: clipped
    assert liver_contrast(image, mask, 50.0)[0, 11, 11, 11] == pytest.approx(-0.5)


def test_the_dictionary_version_adds_a_channel_with_the_images_metadata():
    image, mask = _liver_with_lesion(60.0)
    affine = torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0], dtype=torch.float64))
    data = {"image": MetaTensor(torch.from_numpy(image), affine=affine), "liver_box": mask}
    out = LiverContrastd("image", "liver_box", 100.0)(data)
    assert out["image"] is data["image"]  # the HU image is left as it is
    added = out["liver_contrast"]
    assert isinstance(added, MetaTensor)
    torch.testing.assert_close(added.affine, affine)
    assert float(added[0, 11, 11, 11]) == pytest.approx(-0.25)


def test_an_empty_or_misshapen_mask_and_a_bad_width_are_refused():
    image, mask = _liver_with_lesion(60.0)
    with pytest.raises(ValueError, match="liver mask is empty"):
        liver_contrast(image, np.zeros_like(mask), 100.0)
    with pytest.raises(ValueError, match="liver mask of shape"):
        liver_contrast(image, mask[:, :20], 100.0)
    with pytest.raises(ValueError, match="half_width_hu must be positive"):
        liver_contrast(image, mask, 0.0)
    with pytest.raises(KeyError, match="liver_box"):
        LiverContrastd("image")({"image": image})
