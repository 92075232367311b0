"""False-tumour control by the network's own confidence, lesion by lesion and per case.

A briefly trained network marks tumour where it is unsure: in the gallbladder, a vessel,
a tumour-free liver. Under LiTS scoring one false voxel in a tumour-free case turns its
tumour Dice from 1 into 0. Two rules use the class probabilities the network already
computed, on the network's grid before the labels are brought back to the scan's grid:

* lesion level: a predicted tumour component whose mean tumour probability is under
  ``min_lesion_mean_prob`` becomes liver;
* case level ("any tumour?"): when no component reaches a tumour probability of
  ``min_case_max_prob`` anywhere, the case has no tumour and every component becomes liver.

Both thresholds are chosen on the validation split by ``run tuning``
(:mod:`pipeline.workflows.tuning`), never on the test split; 0 disables a rule. Written by
hand: MONAI's ``RemoveSmallObjects`` and ``KeepLargestConnectedComponent`` act on sizes,
not on probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.masks import label_components


@dataclass(frozen=True)
class LesionFilter:
    """The two confidence rules; ``LesionFilter()`` keeps every lesion.

    Attributes:
        min_lesion_mean_prob: components with a lower mean tumour probability become liver.
        min_case_max_prob: a case whose highest tumour probability inside any component is
            lower has no tumour.
    """

    min_lesion_mean_prob: float = 0.0
    min_case_max_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_lesion_mean_prob", "min_case_max_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def enabled(self) -> bool:
        """False when both rules are off (the labels pass unchanged)."""
        return self.min_lesion_mean_prob > 0 or self.min_case_max_prob > 0

    def __call__(self, labels: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """Apply the rules.

        Args:
            labels: (1, X, Y, Z) argmax labels on the network's grid.
            probabilities: (3, X, Y, Z) class probabilities on the same grid.

        Returns:
            The labels with rejected tumour components turned into liver (a new tensor
            of the input's dtype and device; the input itself when both rules are off).
        """
        if not self.enabled:
            return labels
        array = labels[0].cpu().numpy()
        tumour = array == TUMOUR
        components, count = label_components(tumour)
        if count == 0:
            return labels
        tumour_prob = probabilities[TUMOUR].cpu().numpy()
        index = np.arange(1, count + 1)
        means = np.asarray(ndimage.mean(tumour_prob, components, index))
        maxima = np.asarray(ndimage.maximum(tumour_prob, components, index))
        keep = means >= self.min_lesion_mean_prob
        if maxima.max() < self.min_case_max_prob:
            keep[:] = False
        rejected = np.isin(components, index[~keep])
        result = array.copy()
        result[rejected] = LIVER
        return torch.as_tensor(result[None], dtype=labels.dtype, device=labels.device)
