"""Crop centres that give every lesion the same share of the tumour-centred crops.

MONAI's ``RandCropByLabelClassesd`` centres a tumour crop on a random tumour *voxel*, so a
lesion is chosen in proportion to its volume: a 40 mm lesion holds 64 times the voxels of a
10 mm one and gets 64 times its crops. On the demo's phantoms the refiner found 16 of 20
lesions over 20 mm and none of 30 under 20 mm. Here the tumour class's candidate centres
are drawn lesion by lesion (3D connected components), the same number from each, so a
small lesion is as likely a crop centre as a large one. The result is the per-class index
list that ``RandCropByLabelClassesd(indices_key=...)`` accepts, computed once per case (a
deterministic transform, so ``CacheDataset`` keeps it). MONAI's ``map_classes_to_indices``
lists the other classes; it has no per-component balancing, hence the lesion class here.

Off by default (train.yaml ``lesion_balanced_crops``): on the demo's cascade it took crops
from the large lesions without finding the small ones (model card, "What mattered").
Without it, :class:`ClassIndicesd` lists once per case (cached) the candidates that
``RandCropByLabelClassesd`` would otherwise list at every draw, every voxel of each class:
the crops stay the same, the scan of the whole volume at every iteration goes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.transforms.utils import map_classes_to_indices

from pipeline.labels import TUMOUR
from pipeline.transforms.masks import label_components


def lesion_balanced_class_indices(
    label: np.ndarray | torch.Tensor,
    num_classes: int = 3,
    per_lesion: int = 100,
    max_per_class: int = 20000,
    lesion_class: int = TUMOUR,
    seed: int = 0,
) -> list[np.ndarray]:
    """Flattened crop-centre candidates per class, the lesion class balanced by lesion.

    Args:
        label: (1, X, Y, Z) or (X, Y, Z) label map.
        num_classes: number of classes (one index array each).
        per_lesion: candidates drawn from each lesion (with replacement when the lesion has
            fewer voxels), so every lesion has the same chance to be a crop centre.
        max_per_class: the other classes keep at most this many voxels, evenly strided
            (MONAI's ``map_classes_to_indices``; the cap bounds the cached memory).
        lesion_class: the class balanced by connected component.
        seed: seed of the draws (the same label gives the same indices).

    Returns:
        One int64 array of flattened spatial indices per class (empty for an absent class).
    """
    array = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected a one-channel label map, got shape {array.shape}")
        array = array[0]
    # The other classes as MONAI lists them (evenly strided when over the cap); only the
    # lesion class is replaced by draws per connected component.
    indices = [
        np.asarray(found, dtype=np.int64)
        for found in map_classes_to_indices(
            array[None], num_classes, max_samples_per_class=max_per_class
        )
    ]
    rng = np.random.RandomState(seed)
    indices[lesion_class] = _per_lesion(array, lesion_class, per_lesion, rng)
    return indices


def _per_lesion(
    array: np.ndarray, value: int, per_lesion: int, rng: np.random.RandomState
) -> np.ndarray:
    """``per_lesion`` voxel indices drawn from each connected component of ``value``."""
    components, count = label_components(array == value)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    flat = components.reshape(-1)
    voxels = np.flatnonzero(flat)
    order = np.argsort(flat[voxels], kind="stable")
    voxels = voxels[order]  # grouped by component, in component order
    starts = np.searchsorted(flat[voxels], np.arange(1, count + 1))
    ends = np.append(starts[1:], len(voxels))
    draws = [
        voxels[start + rng.randint(0, end - start, size=per_lesion)]
        for start, end in zip(starts, ends, strict=True)
    ]
    return np.concatenate(draws).astype(np.int64)


def class_indices(label: np.ndarray | torch.Tensor, num_classes: int = 3) -> list[torch.Tensor]:
    """Flattened indices of every voxel of each class, as ``RandCropByLabelClassesd`` lists them.

    The lists are MONAI's ``map_classes_to_indices`` (no image mask, no cap: what the crop
    computes itself when given no ``indices_key``), in int32 when the grid allows: a list
    covers every voxel once, so it costs 4 bytes a voxel in the cache instead of 8.

    Args:
        label: (1, X, Y, Z) label map.
        num_classes: number of classes (one index list each, empty for an absent class).

    Returns:
        One 1D tensor of flattened spatial indices per class, in increasing order.
    """
    found = map_classes_to_indices(torch.as_tensor(label), num_classes)
    fits = int(np.prod(label.shape[1:])) <= np.iinfo(np.int32).max
    return [torch.as_tensor(i).to(torch.int32 if fits else torch.int64) for i in found]


class ClassIndicesd(MapTransform):
    """Store the crop-centre candidates of ``keys`` under ``<key><postfix>``, once per case.

    Without precomputed indices, ``RandCropByLabelClassesd`` compares the whole label map
    with each class at every draw (on the demo's cached 2 mm volumes, half of the random
    pre-processing's time). This deterministic transform lists the same indices once, before
    the first random transform, so ``CacheDataset`` keeps them; the crop then reads them
    with ``indices_key="label_cls_indices"`` and draws the same centres. Use it after every
    transform that changes the grid (orientation, spacing, cropping, padding).

    Args:
        keys: the label map key(s).
        num_classes: number of classes.
        postfix: appended to the key to name the output.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int = 3,
        postfix: str = "_cls_indices",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        """Add the index lists; the inputs pass unchanged."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.postfix}"] = self.indices(d[key])
        return d

    def indices(self, label: torch.Tensor) -> list[torch.Tensor]:
        """The crop-centre candidates of one label map, a list per class."""
        return class_indices(label, self.num_classes)


class LesionBalancedIndicesd(ClassIndicesd):
    """Store lesion-balanced crop-centre candidates of ``keys`` under ``<key><postfix>``.

    Use it after every transform that changes the grid (orientation, spacing, cropping,
    padding) and before ``RandCropByLabelClassesd(indices_key="label_cls_indices")``.

    Args:
        keys: the label map key(s).
        num_classes: number of classes.
        per_lesion: candidates per lesion (see :func:`lesion_balanced_class_indices`).
        max_per_class: cap of the other classes' candidates.
        postfix: appended to the key to name the output.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int = 3,
        per_lesion: int = 100,
        max_per_class: int = 20000,
        postfix: str = "_cls_indices",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, num_classes, postfix, allow_missing_keys)
        if per_lesion < 1:
            raise ValueError(f"per_lesion must be at least 1, got {per_lesion}")
        self.per_lesion = per_lesion
        self.max_per_class = max_per_class

    def indices(self, label: torch.Tensor) -> list[torch.Tensor]:
        """Each lesion's ``per_lesion`` candidates; the other classes capped."""
        return lesion_balanced_class_indices(
            label, self.num_classes, self.per_lesion, self.max_per_class
        )
