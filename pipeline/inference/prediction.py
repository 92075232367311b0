"""What a predictor hands back: a scan's labels, and the network output they come from.

:class:`Prediction` is the result on the scan's grid; :class:`NetworkOutput` is one network
pass before labels, and :class:`PendingScan` makes labels from it as often as asked, so
tuning tries many lesion rules on one pass (``ScanPredictor.begin``, ``predictor.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.inference.quality import QualityReport
from pipeline.transforms.lesion_filter import LesionFilter
from pipeline.transforms.spacing import voxel_sizes


@dataclass
class Prediction:
    """The segmentation of one scan on the scan's own grid.

    Attributes:
        labels: uint8 array (X, Y, Z) in the scan's voxel order: 0 background, 1 liver, 2 tumour.
        affine: the scan's voxel-to-world affine (RAS mm) as it was loaded.
        probabilities: float32 (3, X, Y, Z) class probabilities on the scan's grid, when
            requested (nearest neighbour, as the labels); None otherwise.
        seconds: wall time per stage.
        warnings: what the user should know about this result (a cascade that found no
            liver, a box grown); recorded in the case's JSON.
        quality: the quality-control verdict on the scan and this mask (``quality.py``).
        notes: decisions made on the way that are not warnings (a cascade's clear choice
            among candidate livers); recorded in the case's JSON.
    """

    labels: np.ndarray
    affine: np.ndarray
    probabilities: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    quality: QualityReport = field(default_factory=QualityReport)
    notes: list[str] = field(default_factory=list)


@dataclass
class NetworkOutput:
    """One network pass over a scan, before labels: what :meth:`ScanPredictor.finish` needs.

    Attributes:
        data: the pre-processed data dict (its image carries the transforms to invert).
        probabilities: float32 (C, X, Y, Z) softmax output on the network's grid, on the CPU.
        original_affine: the scan's affine as loaded.
        original_shape: the scan's spatial shape as loaded.
    """

    data: dict[str, Any]
    probabilities: torch.Tensor
    original_affine: np.ndarray
    original_shape: tuple[int, ...]


class PendingScan:
    """A scan whose network pass is done; :meth:`finish` makes its labels (as often as asked).

    Args:
        finish: labels from the stored network output with a given lesion filter (None:
            the predictor's own).
        output: the network output, when there is one (a cascade that found no liver
            has none): :meth:`key` tells lesion filters with the same effect apart.
    """

    def __init__(
        self,
        finish: Callable[[LesionFilter | None], Prediction],
        output: NetworkOutput | None = None,
    ) -> None:
        self._finish = finish
        self._output = output

    def finish(self, lesion_filter: LesionFilter | None = None) -> Prediction:
        """The prediction, with ``lesion_filter`` instead of the predictor's own if given."""
        return self._finish(lesion_filter)

    def key(self, lesion_filter: LesionFilter) -> str:
        """Equal for two filters that leave the same labels on the network's grid.

        Cheap next to :meth:`finish` (no inversion, no post-processing), so tuning
        finishes each distinct label map once.
        """
        if self._output is None:
            return "no network output"
        probabilities = self._output.probabilities
        labels = class_labels(probabilities)
        spacing = grid_spacing(self._output.data.get("image"))
        filtered = lesion_filter(labels, probabilities, spacing)
        return hashlib.sha1(filtered.numpy().tobytes()).hexdigest()


def grid_spacing(image: torch.Tensor | None) -> tuple[float, float, float]:
    """Voxel size (mm) along each axis of a MetaTensor's grid, from its affine.

    1 mm per axis for an image without an affine (a plain tensor, or none).
    """
    affine = getattr(image, "affine", None)
    x, y, z = voxel_sizes(np.eye(4) if affine is None else np.asarray(affine))
    return float(x), float(y), float(z)


def class_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """The most probable class of every voxel: ``argmax`` over dim 0, as (1, X, Y, Z) uint8.

    Equal to ``torch.argmax(probabilities, 0, keepdim=True)``, ties to the lower class
    included (only a strictly larger score wins), but one pass of element-wise
    comparisons per class: torch's argmax over the leading dimension reads the volume
    with a stride and took 1.8 s for (3, 273, 273, 300) on 2 cores, this 0.2 s.
    """
    best = probabilities[0].clone()
    labels = torch.zeros(probabilities.shape[1:], dtype=torch.uint8)
    for label in range(1, probabilities.shape[0]):
        labels.masked_fill_(probabilities[label] > best, label)
        torch.maximum(best, probabilities[label], out=best)
    return labels[None]
