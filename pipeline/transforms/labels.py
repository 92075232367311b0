"""Dictionary transforms that MONAI does not ship."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


class RemapLabelsd(MapTransform):
    """Map label values through a table; values not in the table become ``default``.

    MONAI's ``MapLabelValued`` keeps unlisted values unchanged, which is wrong for a
    multi-organ map such as TotalSegmentator's where only 5 (liver) should survive.

    Args:
        keys: keys of the label maps to remap.
        mapping: ``{source_value: target_value}``, e.g. ``{5: 1}``; None or empty leaves
            the data unchanged (so configs can always include this transform).
        default: value of every voxel whose value is not in ``mapping``.
        allow_missing_keys: do not raise when a key is absent (images without labels).
    """

    def __init__(
        self,
        keys: KeysCollection,
        mapping: Mapping[int, int] | None = None,
        default: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in (mapping or {}).items()}
        self.default = int(default)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Remap the label maps under ``keys``; other entries pass through."""
        d = dict(data)
        if not self.mapping:
            return d
        for key in self.key_iterator(d):
            label = d[key]
            out = (
                torch.full_like(label, self.default)
                if isinstance(label, torch.Tensor)
                else np.full_like(label, self.default)
            )
            for source, target in self.mapping.items():
                out[label == source] = target
            d[key] = out
        return d
