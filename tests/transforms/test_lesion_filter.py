"""pipeline.transforms.lesion_filter: confidence rules per lesion and per case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.lesion_filter import LesionFilter, component_depths_mm


def _two_lesions() -> tuple[torch.Tensor, torch.Tensor]:
    """A liver with a confident lesion (mean 0.9, max 0.95) and an unsure one (mean 0.5)."""
    labels = torch.full((1, 12, 12, 12), LIVER, dtype=torch.uint8)
    probabilities = torch.zeros(3, 12, 12, 12)
    probabilities[LIVER] = 0.9
    labels[0, 1:4, 1:4, 1:4] = TUMOUR
    probabilities[TUMOUR, 1:4, 1:4, 1:4] = 0.85
    probabilities[TUMOUR, 2, 2, 2] = 0.95  # mean over 27 voxels: (26 * 0.85 + 0.95) / 27
    labels[0, 8:10, 8:10, 8:10] = TUMOUR
    probabilities[TUMOUR, 8:10, 8:10, 8:10] = 0.5
    return labels, probabilities


def test_off_by_default_and_the_labels_pass_unchanged():
    labels, probabilities = _two_lesions()
    assert LesionFilter()(labels, probabilities) is labels


def test_the_unsure_lesion_becomes_liver_and_the_confident_one_stays():
    labels, probabilities = _two_lesions()
    out = LesionFilter(min_lesion_mean_prob=0.6)(labels, probabilities)
    assert (out[0, 1:4, 1:4, 1:4] == TUMOUR).all()
    assert (out[0, 8:10, 8:10, 8:10] == LIVER).all()
    assert int((out == TUMOUR).sum()) == 27 and out.dtype == torch.uint8
    # The mean is per lesion: 0.8537 keeps the first at 0.85 and drops it at 0.86.
    assert (
        int((LesionFilter(min_lesion_mean_prob=0.86)(labels, probabilities) == TUMOUR).sum()) == 0
    )


def test_a_case_without_a_confident_voxel_has_no_tumour():
    labels, probabilities = _two_lesions()
    assert int((LesionFilter(min_case_max_prob=0.95)(labels, probabilities) == TUMOUR).sum()) == 35
    cleared = LesionFilter(min_case_max_prob=0.96)(labels, probabilities)
    assert int((cleared == TUMOUR).sum()) == 0 and int((cleared == LIVER).sum()) == 12**3


def test_thresholds_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match="min_case_max_prob"):
        LesionFilter(min_case_max_prob=1.5)


def test_depth_refused_when_negative():
    with pytest.raises(ValueError, match="min_lesion_depth_mm"):
        LesionFilter(min_lesion_depth_mm=-1.0)


def _liver_with_a_deep_lesion_and_a_rim() -> tuple[torch.Tensor, torch.Tensor]:
    """A 20^3 liver block in a 30^3 volume (background around it): a 5^3 lesion at its
    centre, and a one-voxel-thick 1 x 6 x 6 tumour shell on its x = 5 face."""
    labels = torch.zeros((1, 30, 30, 30), dtype=torch.uint8)
    labels[0, 5:25, 5:25, 5:25] = LIVER
    labels[0, 13:18, 13:18, 13:18] = TUMOUR
    labels[0, 5, 10:16, 10:16] = TUMOUR
    probabilities = torch.zeros(3, 30, 30, 30)
    probabilities[TUMOUR][labels[0] == TUMOUR] = 0.99
    return labels, probabilities


def test_component_depths_are_distances_to_the_nearest_voxel_outside_the_organ():
    labels, _ = _liver_with_a_deep_lesion_and_a_rim()
    array = labels[0].numpy()
    components = np.zeros(array.shape, np.int32)
    components[13:18, 13:18, 13:18] = 1
    components[5, 10:16, 10:16] = 2
    organ = array > 0
    # The lesion's deepest voxels, (14, 14, 14) and its neighbours, are 10 voxels from
    # the nearest background (index 4 or 25 on some axis); the shell lies on the face,
    # one voxel from the background.
    depths = component_depths_mm(components, 2, organ, (1.0, 1.0, 1.0), cap_mm=20.0)
    np.testing.assert_allclose(depths, [10.0, 1.0])
    # Voxel sizes scale the distances axis by axis: at 2 mm along x the shell is 2 mm deep
    # and the lesion 20 mm away along x, but still 10 x 1 mm along y or z.
    depths = component_depths_mm(components, 2, organ, (2.0, 1.0, 1.0), cap_mm=30.0)
    np.testing.assert_allclose(depths, [10.0, 2.0])
    # The whole-volume distance transform agrees below the cap.
    full = ndimage.distance_transform_edt(organ, sampling=(1.0, 1.5, 2.0))
    expected = [full[components == k].max() for k in (1, 2)]
    depths = component_depths_mm(components, 2, organ, (1.0, 1.5, 2.0), cap_mm=40.0)
    np.testing.assert_allclose(depths, expected)
    # Above the cap a depth is only known to be at least the cap.
    capped = component_depths_mm(components, 2, organ, (1.0, 1.0, 1.0), cap_mm=3.0)
    assert capped[0] >= 3.0 and capped[1] == 1.0


def test_the_array_edge_is_not_the_organs_surface():
    # A liver filling the array, cut by the scan's edge, with one background voxel in the
    # far corner: a lesion in the near corner is as deep as its distance to that voxel.
    organ = np.ones((10, 10, 10), bool)
    organ[9, 9, 9] = False
    components = np.zeros(organ.shape, np.int32)
    components[0:2, 0:2, 0:2] = 1
    (depth,) = component_depths_mm(components, 1, organ, (1.0, 1.0, 1.0), cap_mm=50.0)
    assert depth == pytest.approx(np.sqrt(3 * 9**2))


def test_a_shallow_rim_becomes_liver_and_the_deep_lesion_stays():
    labels, probabilities = _liver_with_a_deep_lesion_and_a_rim()
    spacing = (1.5, 1.5, 2.0)
    out = LesionFilter(min_lesion_depth_mm=3.0)(labels, probabilities, spacing)
    assert (out[0, 5, 10:16, 10:16] == LIVER).all()
    assert (out[0, 13:18, 13:18, 13:18] == TUMOUR).all()
    assert int((out == TUMOUR).sum()) == 125
    # The shell's deepest voxel is one voxel (1.5 mm along x) inside: a 1.5 mm rule keeps it.
    kept = LesionFilter(min_lesion_depth_mm=1.5)(labels, probabilities, spacing)
    assert int((kept == TUMOUR).sum()) == 125 + 36


def test_the_depth_rule_without_a_spacing_is_refused_not_guessed():
    labels, probabilities = _liver_with_a_deep_lesion_and_a_rim()
    with pytest.raises(ValueError, match="spacing_mm"):
        LesionFilter(min_lesion_depth_mm=3.0)(labels, probabilities)
    # The confidence rules need no spacing.
    assert LesionFilter(min_lesion_mean_prob=0.6)(labels, probabilities).shape == labels.shape


def test_the_rules_keep_exactly_what_ndimage_statistics_would_keep():
    # Many lesions of random probabilities: the per-component mean and maximum (taken
    # over tumour voxels only) decide as scipy.ndimage.mean / maximum over the volume do.
    rng = np.random.default_rng(3)
    labels = np.full((40, 40, 40), LIVER, dtype=np.uint8)
    labels[rng.random(labels.shape) < 0.08] = TUMOUR
    prob = rng.random(labels.shape).astype(np.float32)
    probabilities = torch.from_numpy(np.stack([1 - prob, np.zeros_like(prob), prob]))
    components, count = ndimage.label(labels == TUMOUR, np.ones((3, 3, 3)))  # 26-connected
    assert count > 100
    index = np.arange(1, count + 1)
    means = np.asarray(ndimage.mean(prob, components, index))
    for threshold in (0.3, 0.5, 0.7):
        kept = LesionFilter(min_lesion_mean_prob=threshold)(
            torch.from_numpy(labels[None]), probabilities
        )[0].numpy()
        expected = np.isin(components, index[means >= threshold])
        np.testing.assert_array_equal(kept == TUMOUR, expected)
    top = float(np.asarray(ndimage.maximum(prob, components, index)).max())
    assert (
        LesionFilter(min_case_max_prob=top)(torch.from_numpy(labels[None]), probabilities) == TUMOUR
    ).any()
