"""Input intensity options from published 2D liver work: stacked HU windows, equalisation.

A single window such as [-100, 400] HU shows liver and tumour contrast but flattens
everything outside it; several windows stacked as channels let the network see both the
liver contrast and the wider anatomy (air, fat, bone) that tells the liver from its
neighbours. Histogram equalisation after windowing (Christ et al., cascaded FCNs, 2016)
spreads the few grey levels of the liver window over the whole [0, 1] range.

    MultiWindowd("image", windows=[[-100, 400], [-1000, 1000]])   # 1 HU channel -> 2 channels

The network's ``in_channels`` must equal the number of windows; the bundle overlay
``multi_window.yaml`` sets both from one list.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import HistogramNormalize, MapTransform, Transform

NdarrayTensor = np.ndarray | torch.Tensor


class MultiWindow(Transform):
    """Window a one-channel HU image several times and stack the windows as channels.

    Each window ``[low, high]`` maps ``low`` to 0 and ``high`` to 1 and clips outside, as
    ``ScaleIntensityRange(a_min=low, a_max=high, b_min=0, b_max=1, clip=True)`` does.

    Args:
        windows: ``[[low, high], ...]`` in HU, one output channel each, in order.
        equalise: histogram-equalise the windowed channel (MONAI ``HistogramNormalize``,
            256 bins, to [0, 1]); one flag for all windows or one per window.

    Example:
        >>> import torch
        >>> out = MultiWindow([[-100, 400], [-1000, 1000]])(torch.tensor([[[-1000.0, 150.0]]]))
        >>> out.tolist()
        [[[0.0, 0.5]], [[0.0, 0.574999988079071]]]
    """

    def __init__(
        self, windows: Sequence[Sequence[float]], equalise: bool | Sequence[bool] = False
    ) -> None:
        self.windows = [(float(w[0]), float(w[1])) for w in windows]
        if not self.windows:
            raise ValueError("at least one window is needed")
        for low, high in self.windows:
            if not high > low:
                raise ValueError(f"window [{low}, {high}]: high must be above low")
        flags = [equalise] * len(self.windows) if isinstance(equalise, bool) else list(equalise)
        if len(flags) != len(self.windows):
            raise ValueError(f"{len(flags)} equalise flags for {len(self.windows)} windows")
        self.equalise = [bool(f) for f in flags]
        self._histogram = HistogramNormalize(num_bins=256, min=0, max=1)

    def __call__(self, img: NdarrayTensor) -> NdarrayTensor:
        """Stack the windows of ``img`` ``(1, ...)`` into ``(len(windows), ...)``.

        Tensors (MetaTensors included, whose affine and metadata are kept) give tensors,
        numpy arrays give numpy arrays.
        """
        if img.shape[0] != 1:
            raise ValueError(f"expected one HU channel, got shape {tuple(img.shape)}")
        is_numpy = isinstance(img, np.ndarray)
        source = torch.as_tensor(img) if is_numpy else img
        source = source.float()
        channels = []
        for (low, high), equalise in zip(self.windows, self.equalise, strict=True):
            scaled = ((source - low) / (high - low)).clamp(0.0, 1.0)
            if equalise:
                scaled = torch.as_tensor(self._histogram(scaled), dtype=torch.float32)
            channels.append(scaled)
        # torch.cat keeps the MetaTensor of the first channel, so spacing and applied
        # spatial operations stay available to Invertd.
        out = torch.cat(channels, dim=0)
        return out.numpy() if is_numpy else out


class MultiWindowd(MapTransform):
    """Dictionary version of :class:`MultiWindow`.

    Args:
        keys: keys of the HU images to window.
        windows: ``[[low, high], ...]`` in HU, one output channel each.
        equalise: histogram-equalise the windowed channels (all, or one flag per window).
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[Sequence[float]],
        equalise: bool | Sequence[bool] = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = MultiWindow(windows, equalise)

    def __call__(self, data: Mapping[Hashable, NdarrayTensor]) -> dict[Hashable, NdarrayTensor]:
        """Window the images under ``keys``; other entries pass through."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d
