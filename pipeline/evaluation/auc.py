"""Voxel ROC-AUC of tumour probabilities around the reference liver.

The AUC itself is MONAI's ``compute_roc_auc`` (ties count one half); what is chosen
here is the region it is computed on and the subsampling of large regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from numpy.typing import ArrayLike

from pipeline.evaluation.lesions import bounding_box, validate_pair
from pipeline.labels import LIVER, TUMOUR

UNDEFINED = math.nan
AUC_MAX_VOXELS = 2_000_000
"""Above this many voxels in the AUC region, a fixed-seed random subset is used."""
AUC_BBOX_MARGIN_MM = 10.0
"""The AUC region is the reference-liver bounding box grown by this margin."""
AUC_SEED = 0


def tumour_auc(
    tumour_prob: ArrayLike,
    ref: np.ndarray,
    spacing: Sequence[float],
    max_voxels: int = AUC_MAX_VOXELS,
) -> float:
    """Voxel ROC-AUC of tumour probabilities around the reference liver.

    The region is the reference-liver bounding box grown by ``AUC_BBOX_MARGIN_MM``:
    the whole-volume AUC would be inflated by easy air and body voxels. Larger regions
    are subsampled to ``max_voxels`` with a fixed seed so results are reproducible.

    Args:
        tumour_prob: Tumour probability per voxel, same shape as ``ref``.
        ref: Reference label volume.
        spacing: Voxel spacing in mm along the three array axes.
        max_voxels: Subsampling threshold.

    Returns:
        The AUC, NaN when the reference has no liver, no tumour, or only tumour.
    """
    spacing = validate_pair(tumour_prob, ref, spacing)
    ref = np.asarray(ref)
    margin = [math.ceil(AUC_BBOX_MARGIN_MM / s) for s in spacing]
    box = bounding_box(ref >= LIVER, margin=margin)
    if box is None:
        return UNDEFINED
    scores = np.asarray(tumour_prob, dtype=np.float64)[box].ravel()
    labels = (ref[box] == TUMOUR).ravel()
    if not np.all(np.isfinite(scores)):
        raise ValueError("tumour_prob must be finite")
    if labels.size > max_voxels:
        rng = np.random.default_rng(AUC_SEED)
        keep = np.sort(rng.choice(labels.size, size=max_voxels, replace=False))
        scores, labels = scores[keep], labels[keep]
    if labels.all() or not labels.any():
        return UNDEFINED
    return float(
        compute_roc_auc(torch.as_tensor(scores), torch.as_tensor(labels, dtype=torch.float64))
    )
