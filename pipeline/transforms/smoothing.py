"""Gaussian smoothing whose border repeats the edge voxels, for images cut at an organ.

MONAI's ``GaussianSmooth`` convolves with zero padding: voxels within four sigmas of the
image's faces are pulled towards 0, which after the HU window is -100 HU. That is harmless
when the face lies in air or in a margin of background, but a scan whose field of view
cuts through the liver (a 20-slice DICOM series, a truncated dome) then shows the network
a liver that darkens towards the first and last slices, and it labels those slices as
background. Padding by the edge voxels (``torch.nn.functional.pad(mode="replicate")``,
which MONAI's filter does not offer) keeps a cut organ's intensity up to the face; away
from the faces the result is MONAI's to the last bit.

    PaddedGaussianSmoothd("image", sigma=1.0)                  # edge voxels repeated
    PaddedGaussianSmoothd("image", sigma=1.0, border="zeros")  # MONAI's GaussianSmooth
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, Transform
from monai.utils import convert_data_type, convert_to_dst_type

NdarrayTensor = np.ndarray | torch.Tensor

# MONAI's Gaussian kernel reaches this many sigmas on each side (GaussianFilter's default).
KERNEL_TRUNCATION = 4.0


def kernel_radius(sigma: float, truncated: float = KERNEL_TRUNCATION) -> int:
    """Voxels on each side of the centre in MONAI's 1D Gaussian kernel of this sigma."""
    return int(max(float(sigma) * truncated, 0.5) + 0.5)


BORDERS = ("edge", "zeros")


class PaddedGaussianSmooth(Transform):
    """Smooth a channel-first image with MONAI's Gaussian and a chosen border.

    Args:
        sigma: standard deviation in voxels, one for all spatial axes or one per axis.
        border: ``"edge"`` repeats the faces' voxels; ``"zeros"`` is MONAI's
            ``GaussianSmooth`` as it is (the border at 0).

    Raises:
        ValueError: ``border`` is neither.

    Example:
        >>> import torch
        >>> flat = torch.full((1, 6, 6, 6), 0.5)
        >>> round(float(PaddedGaussianSmooth(1.0)(flat)[0, 0, 0, 0]), 4)  # zeros: 0.1653
        0.5
    """

    def __init__(self, sigma: float | Sequence[float] = 1.0, border: str = "edge") -> None:
        if border not in BORDERS:
            raise ValueError(f"smoothing border {border!r}: expected one of {BORDERS}")
        self.sigma = sigma
        self.border = border

    def __call__(self, img: NdarrayTensor) -> NdarrayTensor:
        """Smooth ``img`` ``(C, X, Y[, Z])``; the type, dtype and metadata of ``img`` are kept."""
        tensor, *_ = convert_data_type(img, torch.Tensor, dtype=torch.float32)
        if isinstance(tensor, torch.Tensor) and hasattr(tensor, "as_tensor"):
            tensor = tensor.as_tensor()  # a plain tensor: padding must not touch the affine
        spatial_dims = tensor.ndim - 1
        sigmas = (
            [float(s) for s in self.sigma]
            if isinstance(self.sigma, Sequence)
            else [float(self.sigma)] * spatial_dims
        )
        if len(sigmas) != spatial_dims:
            raise ValueError(f"{len(sigmas)} sigmas for an image of {spatial_dims} spatial axes")
        radii = [kernel_radius(s) for s in sigmas]
        # F.pad lists the last axis first; each radius covers the whole kernel's tail, so
        # MONAI's own zero padding then falls outside the part that is kept.
        padding = [r for radius in reversed(radii) for r in (radius, radius)]
        mode = "replicate" if self.border == "edge" else "constant"
        padded = F.pad(tensor[None], padding, mode=mode)
        smoothed = GaussianFilter(spatial_dims, sigmas, truncated=KERNEL_TRUNCATION)(padded)[0]
        inside = (slice(None),) + tuple(
            slice(r, r + n) for r, n in zip(radii, tensor.shape[1:], strict=True)
        )
        out, *_ = convert_to_dst_type(smoothed[inside].contiguous(), dst=img, dtype=torch.float32)
        return out


class PaddedGaussianSmoothd(MapTransform):
    """Dictionary version of :class:`PaddedGaussianSmooth`.

    Args:
        keys: keys of the images to smooth.
        sigma: standard deviation in voxels, one for all spatial axes or one per axis.
        border: ``"edge"`` or ``"zeros"`` (see :class:`PaddedGaussianSmooth`).
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        sigma: float | Sequence[float] = 1.0,
        border: str = "edge",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.smooth = PaddedGaussianSmooth(sigma, border)

    def __call__(self, data: Mapping[Hashable, NdarrayTensor]) -> dict[Hashable, NdarrayTensor]:
        """Smooth the images under ``keys``; other entries pass through."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.smooth(d[key])
        return d
