"""pipeline.transforms.lesion_filter: confidence rules per lesion and per case."""

from __future__ import annotations

import pytest
import torch

from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.lesion_filter import LesionFilter


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
