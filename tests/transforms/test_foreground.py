"""The body's box by threshold: MONAI's CropForegroundd's box and crop, found in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CropForegroundd
from monai.transforms.utils import generate_spatial_bounding_box

from pipeline.transforms.foreground import ThresholdCropForegroundd, threshold_box


def _body(shape=(40, 36, 24), seed=0) -> np.ndarray:
    """Air (-1000) with a body block and a few scattered voxels above -500."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[7:31, 5:29, 3:20] = 40.0
    for _ in range(3):
        image[tuple(int(rng.integers(0, n)) for n in shape)] = 200.0
    return image


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_box_equals_monai_search(seed, layout):
    image = _body(seed=seed)[None]
    if layout == "F":
        image = np.asfortranarray(image[0])[None]
        assert image[0].flags.f_contiguous and not image[0].flags.c_contiguous
    start, end = generate_spatial_bounding_box(torch.as_tensor(image), lambda x: x > -500)
    assert threshold_box(image, -500.0) == (list(start), list(end))


def test_box_known_values_small_slabs(monkeypatch):
    # Slabs of one row: the footprint and the slice profile are merged across slabs.
    monkeypatch.setattr("pipeline.transforms.foreground.SLAB_BYTES", 1)
    image = np.full((1, 10, 8, 6), -1000.0, dtype=np.float32)
    image[0, 2, 3, 1] = 0.0
    image[0, 7, 5, 4] = 0.0
    assert threshold_box(image, -500.0) == ([2, 3, 1], [8, 6, 5])
    # The threshold is strict, as x > t.
    assert threshold_box(image, 0.0) is None


def test_box_over_channels_and_errors():
    image = np.full((2, 6, 6, 6), -1000.0, dtype=np.float32)
    image[0, 1, 1, 1] = 100.0
    image[1, 4, 4, 3] = 100.0
    assert threshold_box(image, -500.0) == ([1, 1, 1], [5, 5, 4])
    with pytest.raises(ValueError, match="channel-first 3D"):
        threshold_box(image[0], -500.0)


@pytest.mark.parametrize("allow_smaller", [True, False])
def test_transform_crops_as_cropforegroundd_and_inverts(allow_smaller):
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 30.0]
    image = MetaTensor(torch.from_numpy(_body(seed=5))[None], affine=torch.as_tensor(affine))
    label = MetaTensor((image > 0).to(torch.uint8), affine=torch.as_tensor(affine))
    kwargs = {"keys": ["image", "label"], "source_key": "image", "allow_smaller": allow_smaller}
    ours = ThresholdCropForegroundd(threshold=-500, **kwargs)
    monai = CropForegroundd(select_fn=lambda x: x > -500, **kwargs)
    got = ours({"image": image.clone(), "label": label.clone()})
    want = monai({"image": image.clone(), "label": label.clone()})
    for key in ("image", "label"):
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
        np.testing.assert_allclose(got[key].affine.numpy(), want[key].affine.numpy())
        assert (
            got[key].applied_operations[-1]["extra_info"]["cropped"]
            == (want[key].applied_operations[-1]["extra_info"]["cropped"])
        )
    np.testing.assert_array_equal(got["foreground_start_coord"], want["foreground_start_coord"])
    restored = ours.inverse(got)["image"]
    assert restored.shape == image.shape
    np.testing.assert_allclose(restored.affine.numpy(), affine)
    # Inside the box the crop and its inverse give the image back; outside it is padding.
    box = tuple(
        slice(lo, hi)
        for lo, hi in zip(got["foreground_start_coord"], got["foreground_end_coord"], strict=True)
    )
    np.testing.assert_array_equal(restored[0][box].numpy(), image[0][box].numpy())


def test_margin_falls_back_to_monai():
    image = MetaTensor(torch.from_numpy(_body(seed=1))[None])
    ours = ThresholdCropForegroundd("image", "image", threshold=-500, margin=2)
    monai = CropForegroundd("image", "image", select_fn=lambda x: x > -500, margin=2)
    np.testing.assert_array_equal(
        ours({"image": image.clone()})["image"].numpy(),
        monai({"image": image.clone()})["image"].numpy(),
    )


def test_empty_image_gives_monai_empty_box():
    image = MetaTensor(torch.full((1, 6, 6, 6), -1000.0))
    ours = ThresholdCropForegroundd("image", "image", threshold=-500, allow_smaller=True)
    monai = CropForegroundd("image", "image", select_fn=lambda x: x > -500, allow_smaller=True)
    assert ours({"image": image.clone()})["image"].shape == (
        monai({"image": image.clone()})["image"].shape
    )
