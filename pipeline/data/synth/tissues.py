"""Tissue classes of the synthetic phantoms and their CT numbers (HU) per contrast phase.

The figures are calibrated on the real scans described in the project guide: a
non-contrast liver of 44 HU (sd 16 with noise), spleen 33, kidneys 11-18, gallbladder 2,
fat about -100, air -1000, bone 300 to 1200; in portal-venous CT the liver is 89 HU
(sd 22) and the spleen 80. Each case draws its own value from the ranges below, so a
model cannot learn one exact intensity.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue codes of the phantom's tissue map (uint8)."""

    AIR = 0
    TABLE = 1
    SKIN = 2
    SUBCUTANEOUS_FAT = 3
    MUSCLE = 4
    VISCERAL_FAT = 5
    CORTICAL_BONE = 6
    CANCELLOUS_BONE = 7
    DISC = 8
    SPINAL_CANAL = 9
    RIB = 10
    LUNG = 11
    HEART = 12
    AORTA = 13
    IVC = 14
    KIDNEY_CORTEX = 15
    KIDNEY_MEDULLA = 16
    SPLEEN = 17
    STOMACH_WALL = 18
    STOMACH_CONTENT = 19
    GAS = 20
    BOWEL = 21
    GALLBLADDER = 22
    LIVER = 23
    PORTAL_VEIN = 24
    HEPATIC_VEIN = 25
    TUMOUR = 26
    TUMOUR_RIM = 27
    TUMOUR_CORE = 28


PHASES = ("non_contrast", "portal_venous")

# (low, high) HU per tissue and phase; one value is drawn per case.
_HU_RANGES: dict[Tissue, tuple[tuple[float, float], tuple[float, float]]] = {
    #                          non-contrast        portal-venous
    Tissue.AIR: ((-1000, -1000), (-1000, -1000)),
    Tissue.TABLE: ((-300, -150), (-300, -150)),
    Tissue.SKIN: ((20, 50), (30, 60)),
    Tissue.SUBCUTANEOUS_FAT: ((-115, -90), (-115, -90)),
    Tissue.MUSCLE: ((40, 55), (50, 65)),
    Tissue.VISCERAL_FAT: ((-110, -85), (-110, -85)),
    Tissue.CORTICAL_BONE: ((700, 1200), (700, 1200)),
    Tissue.CANCELLOUS_BONE: ((200, 320), (220, 340)),
    Tissue.DISC: ((70, 100), (70, 100)),
    Tissue.SPINAL_CANAL: ((10, 30), (10, 30)),
    Tissue.RIB: ((300, 600), (300, 600)),
    Tissue.LUNG: ((-880, -780), (-880, -780)),
    Tissue.HEART: ((35, 50), (130, 180)),
    Tissue.AORTA: ((35, 50), (130, 190)),
    Tissue.IVC: ((35, 50), (100, 150)),
    Tissue.KIDNEY_CORTEX: ((15, 32), (150, 200)),
    Tissue.KIDNEY_MEDULLA: ((10, 28), (100, 150)),
    Tissue.SPLEEN: ((30, 45), (75, 120)),
    Tissue.STOMACH_WALL: ((35, 50), (70, 110)),
    Tissue.STOMACH_CONTENT: ((5, 30), (5, 30)),
    Tissue.GAS: ((-1000, -900), (-1000, -900)),
    Tissue.BOWEL: ((15, 45), (40, 90)),
    Tissue.GALLBLADDER: ((-2, 12), (-2, 12)),
    Tissue.LIVER: ((38, 62), (80, 115)),
    Tissue.PORTAL_VEIN: ((35, 50), (150, 200)),
    Tissue.HEPATIC_VEIN: ((35, 50), (120, 170)),
    # Tumour classes get per-lesion values relative to the liver (see sample_tumour_hu);
    # these are placeholders filled per case.
    Tissue.TUMOUR: ((0, 0), (0, 0)),
    Tissue.TUMOUR_RIM: ((0, 0), (0, 0)),
    Tissue.TUMOUR_CORE: ((5, 20), (5, 20)),
}


def sample_tissue_hu(phase: str, rng: np.random.Generator) -> dict[Tissue, float]:
    """Draw one CT number per tissue for a case in the given contrast phase.

    Args:
        phase: one of :data:`PHASES`.
        rng: source of randomness.

    Returns:
        HU per tissue.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    column = PHASES.index(phase)
    hu = {tissue: float(rng.uniform(*ranges[column])) for tissue, ranges in _HU_RANGES.items()}
    # A liver is normally at least as dense as the spleen without contrast.
    if phase == "non_contrast":
        hu[Tissue.SPLEEN] = min(hu[Tissue.SPLEEN], hu[Tissue.LIVER] - 3.0)
    return hu


def sample_tumour_hu(phase: str, liver_hu: float, rng: np.random.Generator) -> dict[str, float]:
    """CT numbers of one lesion: body, enhancing rim and necrotic core.

    Lesions in portal-venous CT are mostly hypodense by 10-60 HU, a minority hyperdense;
    without contrast the difference is smaller and always hypodense.
    """
    if phase == "portal_venous":
        if rng.random() < 0.1:
            body = liver_hu + rng.uniform(10, 40)
        else:
            body = liver_hu - rng.uniform(10, 60)
        rim = liver_hu + rng.uniform(10, 30)
    else:
        body = liver_hu - rng.uniform(10, 35)
        rim = body + rng.uniform(0, 8)
    return {"body": float(body), "rim": float(rim), "core": float(rng.uniform(5, 20))}


def hu_lookup_table(hu: dict[Tissue, float]) -> np.ndarray:
    """A float32 array indexed by tissue code, for vectorised painting."""
    table = np.full(max(Tissue) + 1, -1000.0, dtype=np.float32)
    for tissue, value in hu.items():
        table[int(tissue)] = value
    return table
