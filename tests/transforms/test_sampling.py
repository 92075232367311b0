import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandCropByLabelClassesd
from monai.transforms.utils import map_classes_to_indices

from pipeline.transforms.sampling import (
    ClassIndicesd,
    LesionBalancedIndicesd,
    class_indices,
    lesion_balanced_class_indices,
)


def _two_lesion_label() -> np.ndarray:
    """A 60^3 liver holding one 20^3 lesion (8000 voxels) and one 2^3 lesion (8 voxels)."""
    label = np.zeros((1, 64, 64, 64), np.uint8)
    label[0, 2:62, 2:62, 2:62] = 1
    label[0, 5:25, 5:25, 5:25] = 2
    label[0, 50:52, 50:52, 50:52] = 2
    return label


def test_every_lesion_gets_the_same_number_of_candidates():
    label = _two_lesion_label()
    indices = lesion_balanced_class_indices(label, per_lesion=50)
    tumour = np.unravel_index(indices[2], label.shape[1:])
    in_small = (tumour[0] >= 50) & (tumour[1] >= 50) & (tumour[2] >= 50)
    assert len(indices[2]) == 100
    assert int(in_small.sum()) == 50  # the 8-voxel lesion: as many as the 8000-voxel one
    assert np.all(label[0][tumour] == 2)


@pytest.mark.parametrize("max_per_class", [10, 1000])
def test_other_classes_are_capped_and_belong_to_their_class(max_per_class):
    label = _two_lesion_label()
    indices = lesion_balanced_class_indices(label, per_lesion=5, max_per_class=max_per_class)
    flat = label.reshape(-1)
    for value in (0, 1):
        assert len(indices[value]) == max_per_class
        assert len(np.unique(indices[value])) == max_per_class  # no voxel twice
        assert np.all(flat[indices[value]] == value)


def test_draws_are_deterministic_and_absent_classes_empty():
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:4, 2:4, 2:4] = 1
    first = lesion_balanced_class_indices(label)
    second = lesion_balanced_class_indices(torch.as_tensor(label))
    assert [a.tolist() for a in first] == [b.tolist() for b in second]
    assert len(first[2]) == 0 and len(first[1]) == 8


def _cropper(
    indices_key: str | None, ratios: list[int], size: int, samples: int, seed: int
) -> RandCropByLabelClassesd:
    """``samples`` crops of ``size``^3 centred by ``ratios``, from listed indices or by voxel."""
    cropper = RandCropByLabelClassesd(
        ["image", "label"],
        "label",
        spatial_size=(size, size, size),
        ratios=ratios,
        num_classes=3,
        num_samples=samples,
        indices_key=indices_key,
        warn=False,
    )
    cropper.set_random_state(seed)
    return cropper


def _tumour_cropper(indices_key: str | None) -> RandCropByLabelClassesd:
    """400 tumour-centred 4^3 crops, from precomputed indices or by voxel (None)."""
    return _cropper(indices_key, [0, 0, 1], 4, 400, 0)


def test_crops_centre_on_a_small_lesion_as_often_as_on_a_large_one():
    label = _two_lesion_label()
    image = torch.zeros(1, 64, 64, 64)
    image[0, 50:52, 50:52, 50:52] = 1  # marks the small lesion
    data = LesionBalancedIndicesd("label", per_lesion=100)(
        {"image": image, "label": torch.as_tensor(label)}
    )
    crops = _tumour_cropper("label_cls_indices")(data)
    small = sum(float(c["image"].sum()) > 0 for c in crops)
    assert 0.4 < small / len(crops) < 0.6
    # The same cropper by voxel: the small lesion holds 8 of 8008 tumour voxels.
    data.pop("label_cls_indices")
    by_voxel = _tumour_cropper(None)(data)
    assert sum(float(c["image"].sum()) > 0 for c in by_voxel) < 0.05 * len(crops)


def test_per_lesion_must_be_positive():
    with pytest.raises(ValueError, match="per_lesion"):
        LesionBalancedIndicesd("label", per_lesion=0)


def _three_class_volume(seed: int = 0) -> dict[str, torch.Tensor]:
    """A 40^3 label with background, a liver block and two lesions; the image marks them."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, 40, 40, 40), np.uint8)
    label[0, 8:32, 6:30, 10:34] = 1
    label[0, 12:17, 10:14, 14:19] = 2
    label[0, 25:27, 22:24, 26:29] = 2
    image = torch.as_tensor(label * 10 + rng.random(label.shape), dtype=torch.float32)
    return {"image": MetaTensor(image), "label": MetaTensor(torch.as_tensor(label))}


@pytest.mark.parametrize("as_meta", [True, False])
def test_class_indices_are_the_lists_the_crop_makes_itself(as_meta):
    label = _three_class_volume()["label"]
    label = label if as_meta else label.numpy()
    listed = class_indices(label, num_classes=3)
    expected = map_classes_to_indices(label, 3)  # what RandCropByLabelClasses calls
    assert [type(i) for i in listed] == [torch.Tensor] * 3  # plain tensors, no metadata
    assert [i.dtype for i in listed] == [torch.int32] * 3  # half of MONAI's int64
    assert [i.tolist() for i in listed] == [np.asarray(e).tolist() for e in expected]
    flat = np.asarray(label).reshape(-1)
    for value, indices in enumerate(listed):
        assert np.all(flat[indices.numpy()] == value)
    assert sum(len(i) for i in listed) == flat.size  # every voxel once


def test_crops_from_listed_indices_are_the_crops_drawn_without_them():
    data = _three_class_volume()
    listed = ClassIndicesd("label", num_classes=3)(data)
    assert set(listed) == {"image", "label", "label_cls_indices"}
    for _ in range(2):  # the second call continues the same random stream on both sides
        from_list = _cropper("label_cls_indices", [1, 2, 3], 8, 300, 3)(dict(listed))
        by_scan = _cropper(None, [1, 2, 3], 8, 300, 3)(dict(data))
        for a, b in zip(from_list, by_scan, strict=True):
            assert a["image"].meta["crop_center"] == b["image"].meta["crop_center"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
            assert "label_cls_indices" not in a  # the crop takes the lists out of each crop


def test_crops_from_listed_indices_centre_on_their_class_in_the_ratios():
    # 1^3 crops: the centre is the crop, never moved inward from the border.
    data = ClassIndicesd("label", num_classes=3)(_three_class_volume())
    crops = _cropper("label_cls_indices", [1, 2, 3], 1, 300, 3)(data)
    counts = np.bincount([int(c["label"].item()) for c in crops], minlength=3)
    assert abs(counts / counts.sum() - np.array([1, 2, 3]) / 6).max() < 0.08
    assert all(float(c["image"].item()) // 10 == int(c["label"].item()) for c in crops)
