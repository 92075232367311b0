"""A second input channel: each voxel's HU against the case's own liver, for faint lesions.

The [-100, 400] HU window shows a lesion 20 HU darker than a non-contrast liver as 0.04
of its range, and the same network must read portal-venous livers 40-60 HU brighter than
non-contrast ones. A reader sets the window's level on the liver for this; here a second
channel does it: ``clip((HU - median liver HU) / half_width, -1, 1)``, with the median
taken inside the liver mask the refiner crops to (the reference liver in training, the
locator's at inference). The median is robust to what a coarse mask gets wrong: a few
voxels of fat or kidney along its edge, and the lesions inside it, which are a minority
of the liver in all but a few scans.

    LiverContrastd("image", mask_key="liver_box", half_width_hu=100.0)
    # adds "liver_contrast" (1 channel, float32, the image's metadata); the caller stacks it
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_data_type, convert_to_dst_type

NdarrayTensor = np.ndarray | torch.Tensor


def _plain_tensor(data: NdarrayTensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``data`` as a torch.Tensor without metadata (a MetaTensor's would travel along)."""
    tensor = convert_data_type(data, torch.Tensor, dtype=dtype)[0]
    return torch.as_tensor(tensor).as_subclass(torch.Tensor)


def liver_contrast(
    image: NdarrayTensor, liver: NdarrayTensor, half_width_hu: float
) -> NdarrayTensor:
    """HU relative to the median HU inside ``liver``, scaled and clipped to [-1, 1].

    Args:
        image: ``(1, X, Y, Z)`` in HU.
        liver: mask of the same spatial shape (channel first or not); non-zero is liver.
        half_width_hu: HU from the liver's median that map to -1 and +1.

    Returns:
        ``(1, X, Y, Z)`` float32, of ``image``'s type (metadata kept).

    Raises:
        ValueError: the mask holds no voxel, or its shape differs from the image's.

    Example:
        >>> import torch
        >>> image = torch.tensor([[[[40.0, 60.0, 60.0, 400.0]]]])
        >>> liver = torch.tensor([[[[0, 1, 1, 0]]]])
        >>> liver_contrast(image, liver, 100.0).flatten().tolist()
        [-0.20000000298023224, 0.0, 0.0, 1.0]
    """
    if half_width_hu <= 0:
        raise ValueError(f"half_width_hu must be positive, got {half_width_hu}")
    hu = _plain_tensor(image, torch.float32)
    mask = _plain_tensor(liver)
    if mask.shape[-3:] != hu.shape[-3:]:
        raise ValueError(
            f"liver mask of shape {tuple(mask.shape)} for an image of {tuple(hu.shape)}"
        )
    inside = hu[0][mask.reshape(hu.shape[-3:]) > 0]
    if inside.numel() == 0:
        raise ValueError("the liver mask is empty: no liver HU to centre the contrast channel on")
    centre = inside.median()  # torch.quantile refuses inputs over 16 M values
    relative = ((hu - centre) / float(half_width_hu)).clamp_(-1.0, 1.0)
    out, *_ = convert_to_dst_type(relative, image, dtype=torch.float32)
    return out


class LiverContrastd(MapTransform):
    """Add :func:`liver_contrast` of ``keys`` under ``output_key``, from the mask at ``mask_key``.

    Args:
        keys: the HU image (one key).
        mask_key: the liver mask, on the image's grid.
        half_width_hu: HU from the liver's median that map to -1 and +1.
        output_key: where the channel goes; the image is left as it is.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "liver_box",
        half_width_hu: float = 100.0,
        output_key: str = "liver_contrast",
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"one image key expected, got {self.keys}")
        self.mask_key = mask_key
        self.half_width_hu = float(half_width_hu)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, NdarrayTensor]) -> dict[Hashable, NdarrayTensor]:
        """Add the channel; the other keys are passed on unchanged."""
        d = dict(data)
        key = self.keys[0]
        if self.mask_key not in d:
            raise KeyError(f"LiverContrastd needs the liver mask under {self.mask_key!r}")
        d[self.output_key] = liver_contrast(d[key], d[self.mask_key], self.half_width_hu)
        return d
