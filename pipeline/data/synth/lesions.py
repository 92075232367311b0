"""Liver lesions of the phantoms: their parameters, where they are drawn and how painted.

Sizes 5-100 mm across, most of them small (the range ``../shared/GUIDE.md`` gives for real
lesions), of three kinds (solid, enhancing rim, necrotic core), deep in the liver or at its
surface; each lesion's CT numbers come from
:func:`pipeline.data.synth.tissues.sample_tumour_hu`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.data.synth.shapes import Grid, ellipsoid_radius, random_rotation
from pipeline.data.synth.tissues import Tissue, sample_tumour_hu

CALIBRATION_SPACING = 4.0  # mm; coarse grid used to size the liver and place tumours


@dataclass
class TumourSpec:
    """One lesion in world mm; ``kind`` is "solid", "rim" (enhancing rim) or "necrotic"."""

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    diameter_mm: float
    hu: dict[str, float]
    kind: str
    at_surface: bool
    rim_mm: float = 0.0
    core_fraction: float = 0.0


def sample_tumours(
    rng: np.random.Generator,
    coarse: dict[str, Any],
    phase: str,
    liver_hu: float,
    n_tumours: int | None,
    tumour_free_prob: float,
) -> list[TumourSpec]:
    """Draw lesions inside the coarse liver: sizes 5-100 mm, most of them small.

    Args:
        rng: the case's random stream (the draws' order is part of its determinism).
        coarse: the painted liver on a grid of about ``CALIBRATION_SPACING`` (``grid``,
            ``mask``), where lesion centres are drawn.
        phase: the contrast phase, for the lesions' CT numbers.
        liver_hu: the liver's CT number in this case.
        n_tumours: a fixed count, or None to draw one (see :class:`PhantomConfig`).
        tumour_free_prob: probability of no lesion when the count is drawn.
    """
    if n_tumours is not None:
        count = int(n_tumours)
    elif rng.random() < tumour_free_prob:
        count = 0
    else:
        count = int(min(1 + rng.geometric(0.35) - 1, 15))
    mask, grid = coarse["mask"], coarse["grid"]
    if count == 0 or not mask.any():
        return []
    depth = ndimage.distance_transform_edt(mask, sampling=grid.spacing)
    idx = np.argwhere(mask)
    x, y, z = grid.axes()
    world = np.stack([x.ravel()[idx[:, 0]], y.ravel()[idx[:, 1]], z.ravel()[idx[:, 2]]], axis=1)
    depths = depth[mask]
    tumours = []
    large_done = False
    for _ in range(count):
        # 5 mm * 20 ** u^1.6 spans 5-100 mm with a median near 13 mm.
        diameter = float(5.0 * 20.0 ** (rng.random() ** 1.6))
        if diameter > 60:
            if large_done:
                diameter = float(rng.uniform(5, 30))
            large_done = True
        radius = diameter / 2
        at_surface = bool(rng.random() < 0.25)
        if at_surface:
            candidates = np.nonzero(depths <= max(CALIBRATION_SPACING, 0.3 * radius))[0]
        else:
            candidates = np.nonzero(depths >= min(0.8 * radius, 0.8 * depths.max()))[0]
        if candidates.size == 0:
            candidates = np.arange(depths.size)
        centre = world[rng.choice(candidates)] + rng.uniform(-2, 2, size=3)
        kind = "solid"
        roll = rng.random()
        if diameter > 25 and roll < 0.3:
            kind = "necrotic"
        elif roll < 0.2:
            kind = "rim"
        radii = radius * rng.uniform(0.85, 1.15, size=3)
        radii *= radius / np.prod(radii) ** (1 / 3)  # keep the equivalent diameter
        tumours.append(
            TumourSpec(
                centre=centre,
                radii=radii,
                rotation=random_rotation(rng, 90),
                diameter_mm=diameter,
                hu=sample_tumour_hu(phase, liver_hu, rng),
                kind=kind,
                at_surface=at_surface,
                rim_mm=float(max(2.0, 0.12 * radius)) if kind == "rim" else 0.0,
                core_fraction=float(rng.uniform(0.4, 0.6)) if kind == "necrotic" else 0.0,
            )
        )
    return tumours


def tumour_radius(tumour: TumourSpec, axes) -> np.ndarray:
    """The lesion's normalised ellipsoid radius at ``axes`` (< 1 inside it)."""
    return ellipsoid_radius(axes, tumour.centre, tumour.radii, tumour.rotation)


def paint_tumours(
    tumours: list[TumourSpec], grid: Grid, tissue: np.ndarray, liver: np.ndarray
) -> np.ndarray:
    """Paint lesions into the tissue map, inside the liver only; return lesion ids (int16)."""
    lesion_ids = np.zeros(grid.shape, dtype=np.int16)
    for index, tumour in enumerate(tumours, start=1):
        box = grid.box(tumour.centre, tumour.radii.max() * 1.05)
        if box is None:
            continue
        radius = tumour_radius(tumour, grid.axes(box))
        body = (radius < 1) & liver[box]
        region = tissue[box]
        region[body] = Tissue.TUMOUR
        if tumour.kind == "rim":
            inner = 1 - tumour.rim_mm / float(tumour.radii.mean())
            region[body & (radius >= inner)] = Tissue.TUMOUR_RIM
        elif tumour.kind == "necrotic":
            region[body & (radius < tumour.core_fraction)] = Tissue.TUMOUR_CORE
        lesion_ids[box][body] = index
    return lesion_ids


def tumour_info(tumour: TumourSpec) -> dict[str, Any]:
    """The lesion's parameters for a phantom's ``info`` (rounded, JSON-ready)."""
    return {
        "centre_mm": [round(float(c), 2) for c in tumour.centre],
        "diameter_mm": round(tumour.diameter_mm, 2),
        "kind": tumour.kind,
        "at_surface": tumour.at_surface,
        "hu": {k: round(v, 2) for k, v in tumour.hu.items()},
    }
