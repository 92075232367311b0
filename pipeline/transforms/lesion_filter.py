"""False-tumour control by the network's confidence and the lesion's place, per lesion and case.

A briefly trained network marks tumour where it is unsure: in the gallbladder, a vessel,
a tumour-free liver, the dark partial-volume rim where the liver meets fat. Under LiTS
scoring one false voxel in a tumour-free case turns its tumour Dice from 1 into 0. Three
rules act on the network's grid, before the labels are brought back to the scan's grid,
with the class probabilities the network already computed:

* lesion confidence: a predicted tumour component whose mean tumour probability is under
  ``min_lesion_mean_prob`` becomes liver;
* lesion position: a component whose deepest voxel lies less than ``min_lesion_depth_mm``
  inside the predicted organ (liver or tumour; the distance to the nearest voxel that is
  neither) becomes liver. A lesion of radius r anywhere in the liver, bulging through
  the surface included, is at least about r deep, since it is part of the organ; a
  one- or two-voxel shell along the surface is not;
* case level ("any tumour?"): when no component reaches a tumour probability of
  ``min_case_max_prob`` anywhere, the case has no tumour and every component becomes liver.

The thresholds are chosen on the validation split by ``run tuning``
(:mod:`pipeline.workflows.tuning`), never on the test split; 0 disables a rule. Written by
hand: MONAI's ``RemoveSmallObjects`` and ``KeepLargestConnectedComponent`` act on sizes,
not on probabilities or depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.labels import LIVER, TUMOUR
from pipeline.transforms.masks import label_components


@dataclass(frozen=True)
class LesionFilter:
    """The three rules; ``LesionFilter()`` keeps every lesion.

    Attributes:
        min_lesion_mean_prob: components with a lower mean tumour probability become liver.
        min_case_max_prob: a case whose highest tumour probability inside any component is
            lower has no tumour.
        min_lesion_depth_mm: components whose deepest voxel is less deep than this inside
            the predicted organ become liver.
    """

    min_lesion_mean_prob: float = 0.0
    min_case_max_prob: float = 0.0
    min_lesion_depth_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_lesion_mean_prob", "min_case_max_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not self.min_lesion_depth_mm >= 0.0:
            raise ValueError(f"min_lesion_depth_mm must be >= 0, got {self.min_lesion_depth_mm}")

    @property
    def enabled(self) -> bool:
        """False when every rule is off (the labels pass unchanged)."""
        return (
            self.min_lesion_mean_prob > 0
            or self.min_case_max_prob > 0
            or self.min_lesion_depth_mm > 0
        )

    def __call__(
        self,
        labels: torch.Tensor,
        probabilities: torch.Tensor,
        spacing_mm: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Apply the rules.

        Args:
            labels: (1, X, Y, Z) argmax labels on the network's grid.
            probabilities: (3, X, Y, Z) class probabilities on the same grid.
            spacing_mm: the grid's voxel size along X, Y, Z; needed by the depth rule.

        Returns:
            The labels with rejected tumour components turned into liver (a new tensor
            of the input's dtype and device; the input itself when every rule is off).

        Raises:
            ValueError: the depth rule is on and ``spacing_mm`` is not given (a depth in
                voxels read as mm would be silently wrong).
        """
        if not self.enabled:
            return labels
        if self.min_lesion_depth_mm > 0 and spacing_mm is None:
            raise ValueError("the depth rule (min_lesion_depth_mm) needs the grid's spacing_mm")
        array = labels[0].cpu().numpy()
        tumour = array == TUMOUR
        components, count = label_components(tumour)
        if count == 0:
            return labels
        # Per-component mean and maximum over the tumour voxels only, by bincount and
        # maximum.at: ndimage.maximum sorts the whole volume per call (0.19 s on a demo
        # case, most of `run tuning`'s time), where the tumour voxels are a few thousand.
        # As ndimage does: means from float64 sums, maxima in the probabilities' dtype
        # (a float32 0.95 is not below a threshold of 0.95).
        ids = components[tumour]
        values = probabilities[TUMOUR].cpu().numpy()[tumour]
        sizes = np.bincount(ids, minlength=count + 1)[1:]
        means = np.bincount(ids, weights=values.astype(np.float64), minlength=count + 1)[1:] / sizes
        maxima = np.full(count + 1, -np.inf, dtype=values.dtype)
        np.maximum.at(maxima, ids, values)
        maxima = maxima[1:]
        keep = means >= self.min_lesion_mean_prob
        if self.min_lesion_depth_mm > 0:
            depths = component_depths_mm(
                components, count, array >= LIVER, spacing_mm, self.min_lesion_depth_mm
            )
            keep &= depths >= self.min_lesion_depth_mm
        if maxima.max() < self.min_case_max_prob:
            keep[:] = False
        result = array.copy()
        rejected = np.concatenate([[False], ~keep])  # by component number; 0 is no component
        result[tumour] = np.where(rejected[ids], LIVER, TUMOUR)
        return torch.as_tensor(result[None], dtype=labels.dtype, device=labels.device)


def component_depths_mm(
    components: np.ndarray,
    count: int,
    organ: np.ndarray,
    spacing_mm: Sequence[float],
    cap_mm: float,
) -> np.ndarray:
    """How deep inside ``organ`` the deepest voxel of each component lies, up to a cap.

    Depth is the Euclidean distance (mm, voxel centre to voxel centre) to the nearest
    voxel outside ``organ``. Outside the array counts as organ, not as outside: a liver cut
    by the scan's edge has no surface there. Each component's distance map is computed on
    its own bounding box grown by ``cap_mm`` (plus a voxel), so the cost follows the lesions,
    not the volume: a depth below the cap is exact, one at or above it is reported as at
    least the cap (what a threshold at the cap needs).

    Args:
        components: component numbers 1..count (0 elsewhere), e.g. from
            :func:`~pipeline.transforms.masks.label_components`.
        count: the number of components.
        organ: boolean mask that holds every component (liver or tumour).
        spacing_mm: voxel size per axis.
        cap_mm: depths are exact below this.

    Returns:
        ``(count,)`` float depths in mm; component k's at index k - 1.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    pad = np.ceil(cap_mm / spacing).astype(int) + 1
    depths = np.zeros(count)
    for index, box in enumerate(ndimage.find_objects(components, max_label=count)):
        if box is None:
            continue
        lo = [s.start - p for s, p in zip(box, pad, strict=True)]
        hi = [s.stop + p for s, p in zip(box, pad, strict=True)]
        # The grown box, organ inside the array, organ beyond it; its outer shell is made
        # "outside", at least cap_mm from every voxel of the component, so distances
        # under the cap are those of the whole volume.
        window = np.ones([h - low for low, h in zip(lo, hi, strict=True)], dtype=bool)
        inner = tuple(
            slice(max(low, 0), min(h, n)) for low, h, n in zip(lo, hi, organ.shape, strict=True)
        )
        placed = tuple(slice(s.start - low, s.stop - low) for s, low in zip(inner, lo, strict=True))
        window[placed] = organ[inner]
        window[0, :, :] = window[-1, :, :] = False
        window[:, 0, :] = window[:, -1, :] = False
        window[:, :, 0] = window[:, :, -1] = False
        distance = ndimage.distance_transform_edt(window, sampling=spacing)
        member = components[inner] == index + 1
        depths[index] = float(distance[placed][member].max())
    return depths
