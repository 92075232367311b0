"""Abdominal anatomy of the synthetic phantoms: body, skeleton, thorax and organs.

An :class:`Anatomy` is drawn once per case in world millimetres (RAS: +x is the patient's
right, +y anterior, +z superior; the origin is the centre of the body cross-section) and
can then be painted on any grid as a tissue map. The liver is a union of three lobes
(right, left, caudate) deformed by a smooth random field and cut by the diaphragm, with
portal and hepatic vessel trees inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.data.synth.shapes import (
    Axes,
    Grid,
    SmoothField,
    ellipsoid_radius,
    random_rotation,
    smooth_min,
)
from pipeline.data.synth.tissues import Tissue

T = Tissue


@dataclass
class Organ:
    """An ellipsoidal organ, optionally deformed by a smooth field."""

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    deformation: SmoothField | None = None
    deformation_amplitude: float = 0.0

    def radius(self, axes: Axes) -> np.ndarray:
        """Normalised radius (< 1 inside) at world coordinates."""
        r = ellipsoid_radius(axes, self.centre, self.radii, self.rotation)
        if self.deformation is not None:
            r = r + np.float32(self.deformation_amplitude) * self.deformation(*axes)
        return r

    def box(self, grid: Grid, margin: float = 1.3):
        """Voxel slices that contain the organ."""
        return grid.box(self.centre, self.radii.max() * margin)


@dataclass
class Vessel:
    """A tapered tube from ``start`` (radius r0) to ``end`` (radius r1), in mm."""

    start: np.ndarray
    end: np.ndarray
    r0: float
    r1: float
    tissue: Tissue


@dataclass
class Anatomy:
    """All sampled anatomical parameters of one case (grid independent)."""

    body_half_axes: tuple[float, float]
    body_modulation: tuple[float, float, float, float]
    skin_mm: float
    fat_mm: float
    muscle_mm: float
    table_y: float
    spine_centre_y: float
    spine_radius: float
    disc_phase: float
    aorta: tuple[float, float, float]
    ivc: tuple[float, float, float]
    dome_right_z: float
    dome_left_z: float
    rib_levels: list[float]
    heart: Organ
    liver_lobes: list[Organ]
    liver_field: SmoothField
    liver_scale: float = 1.0
    kidneys: list[Organ] = field(default_factory=list)
    spleen: Organ | None = None
    stomach: Organ | None = None
    gallbladder: Organ | None = None
    bowel: list[tuple[np.ndarray, float, bool]] = field(default_factory=list)
    vessels: list[Vessel] = field(default_factory=list)

    @property
    def cavity_half_axes(self) -> tuple[float, float]:
        """Half axes of the abdominal cavity inside the muscle wall (mm)."""
        wall = self.skin_mm + self.fat_mm + self.muscle_mm
        return self.body_half_axes[0] - wall, self.body_half_axes[1] - wall


def sample_anatomy(rng: np.random.Generator, z_top: float) -> Anatomy:
    """Draw one abdomen.

    Args:
        rng: source of randomness.
        z_top: world z (mm) of the top of the field of view; the right diaphragm dome is
            placed 15-45 mm below it so that the whole liver is in view.
    """
    a, b = rng.uniform(140, 180), rng.uniform(100, 130)
    skin, fat, muscle = rng.uniform(2, 3), rng.uniform(8, 30), rng.uniform(8, 14)
    a_cav, b_cav = a - skin - fat - muscle, b - skin - fat - muscle
    spine_r = rng.uniform(17, 22)
    spine_y = -b + skin + fat + rng.uniform(45, 60)
    dome_r = z_top - rng.uniform(15, 45)
    dome_l = dome_r - rng.uniform(10, 25)
    pitch = rng.uniform(26, 32)
    ribs = list(np.arange(z_top + rng.uniform(0, pitch), dome_r - 150, -pitch))
    aorta = (rng.uniform(-22, -10), spine_y + spine_r + rng.uniform(10, 16), rng.uniform(10, 13))
    ivc = (rng.uniform(18, 28), spine_y + spine_r + rng.uniform(8, 14), rng.uniform(9, 12))

    def rot(deg: float) -> np.ndarray:
        return random_rotation(rng, deg)

    right = Organ(
        centre=np.array([0.42 * a_cav, rng.uniform(-15, 10), dome_r - rng.uniform(55, 65)]),
        radii=np.array([rng.uniform(58, 72), rng.uniform(65, 80), rng.uniform(60, 75)]),
        rotation=rot(15),
    )
    left = Organ(
        centre=np.array([-rng.uniform(5, 30), rng.uniform(25, 45), dome_r - rng.uniform(30, 45)]),
        radii=np.array([rng.uniform(50, 72), rng.uniform(25, 40), rng.uniform(22, 35)]),
        rotation=rot(15),
    )
    caudate = Organ(
        centre=np.array([rng.uniform(0, 15), rng.uniform(-25, -10), dome_r - 55]),
        radii=np.array([18.0, 20.0, 30.0]),
        rotation=np.eye(3),
    )
    liver_bottom = right.centre[2] - right.radii[2]
    kidneys = []
    for side in (1, -1):
        z_shift = 0.0 if side == 1 else rng.uniform(10, 25)
        kidneys.append(
            Organ(
                centre=np.array(
                    [
                        side * rng.uniform(60, 80),
                        spine_y + rng.uniform(5, 20),
                        liver_bottom + rng.uniform(5, 25) + z_shift,
                    ]
                ),
                radii=np.array([rng.uniform(22, 28), rng.uniform(20, 26), rng.uniform(45, 58)]),
                rotation=rot(20),
            )
        )
    spleen = Organ(
        centre=np.array(
            [-0.62 * a_cav, spine_y + rng.uniform(20, 40), dome_l - rng.uniform(45, 60)]
        ),
        radii=np.array([rng.uniform(22, 30), rng.uniform(45, 60), rng.uniform(40, 55)]),
        rotation=rot(25),
        deformation=SmoothField(rng, (50, 120), 6),
        deformation_amplitude=0.08,
    )
    stomach = Organ(
        centre=np.array([-rng.uniform(30, 55), rng.uniform(30, 50), dome_l - rng.uniform(45, 70)]),
        radii=np.array([rng.uniform(35, 50), rng.uniform(28, 40), rng.uniform(45, 60)]),
        rotation=rot(20),
        deformation=SmoothField(rng, (60, 140), 6),
        deformation_amplitude=0.06,
    )
    gallbladder = None
    if rng.random() < 0.7:
        gallbladder = Organ(
            centre=np.array(
                [rng.uniform(15, 35), rng.uniform(30, 50), liver_bottom + rng.uniform(15, 30)]
            ),
            radii=np.array([rng.uniform(11, 17), rng.uniform(11, 17), rng.uniform(28, 40)]),
            rotation=rot(30),
        )
    heart = Organ(
        centre=np.array([-15.0, 35.0, dome_l + rng.uniform(40, 55)]),
        radii=np.array([65.0, 50.0, 55.0]),
        rotation=rot(10),
    )
    bowel = []
    for _ in range(int(rng.integers(15, 36))):
        centre = np.array(
            [
                rng.uniform(-0.7, 0.7) * a_cav,
                rng.uniform(spine_y + 30, 0.8 * b_cav),
                rng.uniform(liver_bottom - 150, liver_bottom + 10),
            ]
        )
        bowel.append((centre, float(rng.uniform(8, 17)), bool(rng.random() < 0.4)))
    # Hepatic flexure of the colon just under the liver: a hard boundary for the model.
    bowel.append(
        (np.array([0.45 * a_cav, 15.0, liver_bottom - 5]), float(rng.uniform(15, 22)), True)
    )
    anatomy = Anatomy(
        body_half_axes=(a, b),
        body_modulation=tuple(rng.uniform(-1, 1, size=4) * [0.03, np.pi, 0.02, np.pi]),
        skin_mm=skin,
        fat_mm=fat,
        muscle_mm=muscle,
        table_y=-b - rng.uniform(5, 20),
        spine_centre_y=spine_y,
        spine_radius=spine_r,
        disc_phase=rng.uniform(0, 33),
        aorta=aorta,
        ivc=ivc,
        dome_right_z=dome_r,
        dome_left_z=dome_l,
        rib_levels=ribs,
        heart=heart,
        liver_lobes=[right, left, caudate],
        liver_field=SmoothField(rng, (60, 160), 8),
        kidneys=kidneys,
        spleen=spleen,
        stomach=stomach,
        gallbladder=gallbladder,
        bowel=bowel,
    )
    anatomy.vessels = _sample_vessels(rng, anatomy)
    return anatomy


def _sample_vessels(rng: np.random.Generator, anatomy: Anatomy) -> list[Vessel]:
    """Portal tree from the hilum, hepatic veins converging on the IVC."""
    right, left, _ = anatomy.liver_lobes
    hilum = np.array([right.centre[0] - 0.55 * right.radii[0], 10.0, right.centre[2] - 15])
    trunk_start = hilum + np.array([-25.0, -20.0, -50.0])
    vessels = [Vessel(trunk_start, hilum, 7.0, 6.5, T.PORTAL_VEIN)]
    for target, r0 in ((right.centre + [20, 0, 0], 6.0), (left.centre + [-10, 0, 0], 5.0)):
        vessels.append(Vessel(hilum, target, r0, r0 - 2.0, T.PORTAL_VEIN))
        for _ in range(3):
            start = hilum + rng.uniform(0.4, 0.9) * (target - hilum)
            end = start + rng.normal(0, 30, size=3)
            vessels.append(Vessel(start, end, r0 - 2.5, 2.0, T.PORTAL_VEIN))
    confluence = np.array([anatomy.ivc[0], anatomy.ivc[1], anatomy.dome_right_z - 15])
    for target in (
        right.centre + [35, 15, -10],
        np.array([10.0, 40.0, right.centre[2] - 10]),
        left.centre + [-20, 5, -5],
    ):
        vessels.append(Vessel(confluence, target + rng.normal(0, 8, 3), 5.5, 2.5, T.HEPATIC_VEIN))
    return vessels


def liver_radius(anatomy: Anatomy, axes: Axes) -> np.ndarray:
    """Implicit liver: smooth union of the lobes, deformed; < 1 inside."""
    s = np.float32(anatomy.liver_scale)
    # Scale about the right lobe's centre so the liver stays in the right upper quadrant.
    pivot = anatomy.liver_lobes[0].centre
    scaled = tuple((axes[d] - np.float32(pivot[d])) / s + np.float32(pivot[d]) for d in range(3))
    radii = [lobe.radius(scaled) for lobe in anatomy.liver_lobes]
    union = smooth_min(smooth_min(radii[0], radii[1], 0.25), radii[2], 0.2)
    return union + np.float32(0.10) * anatomy.liver_field(*scaled)


def liver_box(anatomy: Anatomy, grid: Grid):
    """Voxel slices that contain the (scaled) liver."""
    right = anatomy.liver_lobes[0]
    lo = np.min([lobe.centre - lobe.radii * 1.3 for lobe in anatomy.liver_lobes], axis=0)
    hi = np.max([lobe.centre + lobe.radii * 1.3 for lobe in anatomy.liver_lobes], axis=0)
    lo = right.centre + (lo - right.centre) * anatomy.liver_scale
    hi = right.centre + (hi - right.centre) * anatomy.liver_scale
    return grid.box((lo + hi) / 2, (hi - lo) / 2)


def diaphragm_z(anatomy: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """World z of the diaphragm surface: two domes, higher on the right."""
    a_cav, _ = anatomy.cavity_half_axes
    curvature = np.float32(2 * 150.0)
    right = anatomy.dome_right_z - ((x - 0.45 * a_cav) ** 2 + (y + 10) ** 2) / curvature
    left = anatomy.dome_left_z - ((x + 0.45 * a_cav) ** 2 + (y + 10) ** 2) / curvature
    return np.maximum(right, left).astype(np.float32)


def body_depth(anatomy: Anatomy, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Approximate depth (mm) below the skin of an axial cross-section; < 0 outside."""
    a, b = anatomy.body_half_axes
    amp2, ph2, amp3, ph3 = anatomy.body_modulation
    theta = np.arctan2(y, x)
    modulation = 1 + amp2 * np.cos(2 * theta + ph2) + amp3 * np.cos(3 * theta + ph3)
    # Flatten the back, as a supine patient lies on the table.
    b_eff = np.where(y < 0, b * 0.92, b)
    rho = np.sqrt((x / a) ** 2 + (y / b_eff) ** 2) / modulation
    ellipse_radius = a * b_eff / np.sqrt((b_eff * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    return ((1 - rho) * ellipse_radius * modulation).astype(np.float32)
