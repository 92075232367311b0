"""The base of inferer wrappers that a bundle switch turns on or off."""

from __future__ import annotations

from monai.inferers import Inferer


class SwitchedInferer(Inferer):
    """An inferer that wraps another and changes how it runs while ``enabled``.

    Args:
        inferer: the inferer that runs the network.
        enabled: the bundle switch; False leaves the wrapped inferer's run unchanged.
    """

    def __init__(self, inferer: Inferer, enabled: bool = True) -> None:
        super().__init__()
        self.inferer = inferer
        self.enabled = bool(enabled)
