"""Paint an :class:`~pipeline.data.synth.anatomy.Anatomy` on a voxel grid as a tissue map."""

from __future__ import annotations

import numpy as np

from pipeline.data.synth.anatomy import Anatomy, body_depth, diaphragm_z, liver_box, liver_radius
from pipeline.data.synth.shapes import Grid, capsule_distance
from pipeline.data.synth.tissues import Tissue

T = Tissue

# Tissues an abdominal organ may displace when painted (never bone, muscle or vessels).
_SOFT_BACKGROUND = np.array([T.VISCERAL_FAT, T.BOWEL, T.GAS], dtype=np.uint8)


def _paint_cross_section(anatomy: Anatomy, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Body layers, spine, paraspinal muscles and great vessels in 2D (constant along z).

    Returns:
        The 2D tissue map and the 2D mask of the abdominal cavity.
    """
    x, y, _ = grid.axes()
    x2, y2 = np.broadcast_arrays(x[:, :, 0], y[:, :, 0])
    depth = body_depth(anatomy, x2, y2)
    skin, fat, muscle = anatomy.skin_mm, anatomy.fat_mm, anatomy.muscle_mm
    # Subcutaneous fat is thicker at the front and the flanks than over the back.
    fat_local = fat * (0.7 + 0.5 * np.clip(y2 / anatomy.body_half_axes[1] + 0.6, 0, 1.2))
    tissue = np.full(depth.shape, T.AIR, dtype=np.uint8)
    tissue[(y2 < anatomy.table_y) & (y2 > anatomy.table_y - 10) & (np.abs(x2) < 220)] = T.TABLE
    tissue[depth >= 0] = T.SKIN
    tissue[depth >= skin] = T.SUBCUTANEOUS_FAT
    tissue[depth >= skin + fat_local] = T.MUSCLE
    cavity = depth >= skin + fat_local + muscle
    tissue[cavity] = T.VISCERAL_FAT

    sy, sr = anatomy.spine_centre_y, anatomy.spine_radius
    for side in (-1, 1):
        paraspinal = ((x2 - side * 33) / 26) ** 2 + ((y2 - (sy - sr - 12)) / 24) ** 2 < 1
        tissue[paraspinal & (depth > 0)] = T.MUSCLE
    r_body = np.hypot(x2, y2 - sy)
    tissue[r_body < sr] = T.CANCELLOUS_BONE
    tissue[(r_body >= sr - 2.5) & (r_body < sr)] = T.CORTICAL_BONE
    canal_y = sy - sr - 10
    r_canal = np.hypot(x2, y2 - canal_y)
    tissue[(r_canal >= 8) & (r_canal < 12)] = T.CORTICAL_BONE
    tissue[r_canal < 8] = T.SPINAL_CANAL
    spinous = (np.abs(x2) < 4) & (y2 < canal_y - 10) & (depth > skin + fat_local)
    tissue[spinous] = T.CORTICAL_BONE
    for (cx, cy, radius), code in ((anatomy.aorta, T.AORTA), (anatomy.ivc, T.IVC)):
        tissue[np.hypot(x2 - cx, y2 - cy) < radius] = code
    cavity &= tissue == T.VISCERAL_FAT
    return tissue, cavity


def _paint_ribs(anatomy: Anatomy, grid: Grid, tissue: np.ndarray) -> None:
    """Ribs in the body wall, sloping down towards the front, absent at the sternum."""
    x, y, z = grid.axes()
    x2, y2 = np.broadcast_arrays(x[:, :, 0], y[:, :, 0])
    depth = body_depth(anatomy, x2, y2)
    wall_depth = anatomy.skin_mm + anatomy.fat_mm + 0.5 * anatomy.muscle_mm
    rib_radius = 5.0
    gap = ((np.abs(x2) < 35) & (y2 > 0)) | ((np.abs(x2) < 40) & (y2 < anatomy.spine_centre_y))
    ii, jj = np.nonzero((np.abs(depth - wall_depth) < rib_radius) & ~gap)
    if ii.size == 0:
        return
    in_plane = (depth[ii, jj] - wall_depth) ** 2
    drop = 0.35 * (y2[ii, jj] + anatomy.body_half_axes[1])
    zs = z[0, 0, :]
    for level in anatomy.rib_levels:
        centre_z = level - drop
        ks = np.nonzero(np.abs(zs - level) < 0.35 * 2 * anatomy.body_half_axes[1] + 10)[0]
        for k in ks:
            hit = in_plane + (zs[k] - centre_z) ** 2 < rib_radius**2
            tissue[ii[hit], jj[hit], k] = T.RIB


def _paint_organ(tissue: np.ndarray, grid: Grid, organ, code: Tissue, allowed) -> None:
    box = organ.box(grid)
    if box is None:
        return
    radius = organ.radius(grid.axes(box))
    region = tissue[box]
    region[(radius < 1) & np.isin(region, allowed)] = code


def paint_tissue(anatomy: Anatomy, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Render the anatomy (without tumours) on ``grid``.

    Returns:
        The uint8 tissue map and the boolean liver mask (parenchyma and its vessels).
    """
    tissue2d, cavity2d = _paint_cross_section(anatomy, grid)
    tissue = np.repeat(tissue2d[:, :, None], grid.shape[2], axis=2)
    x, y, z = grid.axes()
    above_diaphragm = z > diaphragm_z(anatomy, x, y)  # (X, Y, Z) by broadcasting
    thorax = cavity2d[:, :, None] & above_diaphragm
    tissue[thorax] = T.LUNG
    _paint_organ(tissue, grid, anatomy.heart, T.HEART, [T.LUNG])

    # Intervertebral discs: thin slabs of the vertebral column every 33 mm.
    disc = ((z[0, 0, :] - anatomy.disc_phase) % 33.0) < 6.0
    column = np.isin(tissue2d, [T.CANCELLOUS_BONE, T.CORTICAL_BONE]) & (
        y[:, :, 0] > anatomy.spine_centre_y - anatomy.spine_radius
    )
    tissue[column[:, :, None] & disc[None, None, :]] = T.DISC
    _paint_ribs(anatomy, grid, tissue)

    soft = list(_SOFT_BACKGROUND)
    for kidney in anatomy.kidneys:
        _paint_organ(tissue, grid, kidney, T.KIDNEY_CORTEX, soft)
        box = kidney.box(grid)
        if box is not None:
            radius, region = kidney.radius(grid.axes(box)), tissue[box]
            region[(radius < 0.7) & (region == T.KIDNEY_CORTEX)] = T.KIDNEY_MEDULLA
    _paint_organ(tissue, grid, anatomy.spleen, T.SPLEEN, soft)
    _paint_stomach(anatomy, grid, tissue)
    _paint_bowel(anatomy, grid, tissue)

    liver = np.zeros(grid.shape, dtype=bool)
    box = liver_box(anatomy, grid)
    if box is not None:
        region = tissue[box]
        inside = (liver_radius(anatomy, grid.axes(box)) < 1) & np.isin(region, soft)
        # Lung is not soft background, so the liver stops at the diaphragm by itself.
        region[inside] = T.LIVER
        liver[box] = inside
    if anatomy.gallbladder is not None:
        _paint_organ(tissue, grid, anatomy.gallbladder, T.GALLBLADDER, soft + [T.LIVER])
        liver &= tissue != T.GALLBLADDER
    _paint_vessels(anatomy, grid, tissue, liver)
    return tissue, liver


def _paint_stomach(anatomy: Anatomy, grid: Grid, tissue: np.ndarray) -> None:
    stomach = anatomy.stomach
    box = stomach.box(grid)
    if box is None:
        return
    axes = grid.axes(box)
    radius, region = stomach.radius(axes), tissue[box]
    inside = (radius < 1) & np.isin(region, _SOFT_BACKGROUND)
    wall_fraction = 1 - 4.0 / float(stomach.radii.mean())
    region[inside] = T.STOMACH_WALL
    lumen = inside & (radius < wall_fraction)
    region[lumen] = T.STOMACH_CONTENT
    # Gas rises to the front of a supine patient's stomach.
    gas = lumen & (axes[1] > stomach.centre[1] + 0.3 * stomach.radii[1])
    region[gas] = T.GAS


def _paint_bowel(anatomy: Anatomy, grid: Grid, tissue: np.ndarray) -> None:
    for centre, radius, has_gas in anatomy.bowel:
        box = grid.box(centre, radius)
        if box is None:
            continue
        axes = grid.axes(box)
        dist = np.sqrt(sum((axes[d] - np.float32(centre[d])) ** 2 for d in range(3)))
        region = tissue[box]
        loop = (dist < radius) & (region == T.VISCERAL_FAT)
        region[loop] = T.BOWEL
        if has_gas:
            region[loop & (dist < 0.7 * radius) & (axes[1] > centre[1])] = T.GAS


def _paint_vessels(anatomy: Anatomy, grid: Grid, tissue: np.ndarray, liver: np.ndarray) -> None:
    """Portal and hepatic veins: inside the liver they stay liver label, outside they don't."""
    for vessel in anatomy.vessels:
        centre = (vessel.start + vessel.end) / 2
        half = np.abs(vessel.end - vessel.start) / 2 + max(vessel.r0, vessel.r1)
        box = grid.box(centre, half)
        if box is None:
            continue
        dist, t = capsule_distance(grid.axes(box), vessel.start, vessel.end)
        lumen = dist < vessel.r0 + (vessel.r1 - vessel.r0) * t
        region = tissue[box]
        allowed = liver[box] | (region == T.VISCERAL_FAT)
        region[lumen & allowed] = vessel.tissue
