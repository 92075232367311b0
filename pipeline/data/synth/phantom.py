"""Synthetic abdominal CT phantoms with liver and tumour labels, calibrated on real CT.

A phantom is drawn from one integer seed: anatomy (:mod:`pipeline.data.synth.anatomy`),
tumours (:mod:`pipeline.data.synth.lesions`), CT numbers for a non-contrast or portal-venous phase
(:mod:`pipeline.data.synth.tissues`), then the acquisition: partial-volume averaging, a point
spread blur, spatially correlated noise, int16 storage and an affine in RAS, LPS or LAS.
The same seed and settings give byte-identical arrays.

Example:
    >>> phantom = generate_phantom(seed=3, config=PhantomConfig(shape=(48, 48, 32)))
    >>> phantom.image.dtype, phantom.label.dtype, phantom.image.shape
    (dtype('int16'), dtype('uint8'), (48, 48, 32))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nibabel import orientations
from scipy import ndimage

from pipeline.data.synth.anatomy import Anatomy, sample_anatomy
from pipeline.data.synth.lesions import (
    CALIBRATION_SPACING,
    TumourSpec,
    paint_tumours,
    sample_tumours,
    tumour_info,
)
from pipeline.data.synth.render import paint_tissue
from pipeline.data.synth.shapes import Grid, SmoothField
from pipeline.data.synth.tissues import (
    PHASES,
    Tissue,
    hu_lookup_table,
    sample_tissue_hu,
)
from pipeline.labels import LIVER, TUMOUR

ORIENTATIONS = ("RAS", "LPS", "LAS")
_TUMOUR_TISSUES = (Tissue.TUMOUR, Tissue.TUMOUR_RIM, Tissue.TUMOUR_CORE)
_FOV_STREAM = 7919  # second entropy word of the field-of-view random stream


@dataclass
class PhantomConfig:
    """What to generate. ``None`` fields are drawn per case from realistic ranges.

    Args:
        shape: voxels along x, y, z (after orientation, the array keeps this shape).
        spacing: voxel size in mm; by default the in-plane field of view fits the body
            with a margin and the z field of view is 220-340 mm.
        phase: "non_contrast" or "portal_venous".
        orientation: "RAS", "LPS" or "LAS" axis codes of the stored array.
        n_tumours: number of lesions; by default 0 with probability ``tumour_free_prob``,
            else 1 plus a geometric count (many small metastases are common).
        tumour_free_prob: probability of a tumour-free liver when ``n_tumours`` is None.
        noise_sd: standard deviation of the image noise in HU (5-25 by default).
        liver_volume_ml: target liver volume (1100-1800 mL by default).
        partial_fov_prob: probability that the scan covers only a slab of the liver
            (``slab_mm`` thick along z, fewer slices), like a limited or follow-up scan.
            Drawn from a random stream of its own, so cases that stay whole are identical
            with and without this option.
        slab_mm: range of slab thickness in mm for partial fields of view.
    """

    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] | None = None
    phase: str | None = None
    orientation: str | None = None
    n_tumours: int | None = None
    tumour_free_prob: float = 0.2
    noise_sd: float | None = None
    liver_volume_ml: float | None = None
    partial_fov_prob: float = 0.0
    slab_mm: tuple[float, float] = (36.0, 120.0)


@dataclass
class Phantom:
    """A generated case: arrays in the stored orientation, with the affine to world RAS mm.

    ``lesion_ids`` holds 1 + the index of the lesion in ``info["tumours"]`` that painted
    each voxel (0 elsewhere); like ``tissue`` it is sampled at block centres.
    """

    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    lesion_ids: np.ndarray
    affine: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def default_spacing(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[float, ...]:
    """Spacing that fits an abdomen: in-plane FOV 380-440 mm, z FOV 220-340 mm."""
    fov_xy, fov_z = rng.uniform(380, 440), rng.uniform(220, 340)
    return (fov_xy / shape[0], fov_xy / shape[1], fov_z / shape[2])


def generate_phantom(seed: int, config: PhantomConfig | None = None) -> Phantom:
    """Generate one synthetic abdominal CT with its liver / tumour label map.

    Args:
        seed: the case's seed; equal seeds and configs give identical output.
        config: what to generate (see :class:`PhantomConfig`).

    Returns:
        The phantom: int16 HU image, uint8 label (0 background, 1 liver, 2 tumour), the
        tissue map, the affine and an ``info`` dict with every drawn parameter that a
        test or a report needs (phase, HU per tissue, tumours, liver volume...).
    """
    config = config or PhantomConfig()
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in config.shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {config.shape}")
    spacing = tuple(float(s) for s in (config.spacing or default_spacing(shape, rng)))
    phase = config.phase or str(rng.choice(PHASES))
    orientation = config.orientation or str(rng.choice(ORIENTATIONS))
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    noise_sd = config.noise_sd if config.noise_sd is not None else rng.uniform(5, 25)
    grid = Grid.centred(shape, spacing)
    z_top = grid.origin[2] + (shape[2] - 1) * spacing[2]

    anatomy = sample_anatomy(rng, z_top)
    target_ml = config.liver_volume_ml or rng.uniform(1100, 1800)
    _calibrate_liver(anatomy, target_ml, grid)
    hu = sample_tissue_hu(phase, rng)

    # Render on a finer grid when voxels are coarse, then average blocks: this is the
    # partial-volume effect of thick voxels, which point sampling would miss.
    factor = tuple(int(np.clip(np.ceil(s / 2.5), 1, 3)) for s in spacing)
    fine = Grid(
        tuple(n * f for n, f in zip(shape, factor, strict=True)),
        tuple(s / f for s, f in zip(spacing, factor, strict=True)),
        tuple(
            o - (f - 1) / 2 * s / f for o, s, f in zip(grid.origin, spacing, factor, strict=True)
        ),
    )
    tissue, liver = paint_tissue(anatomy, fine)
    coarse_liver = _subsampled_liver(liver, fine)
    tumours = sample_tumours(
        rng, coarse_liver, phase, hu[Tissue.LIVER], config.n_tumours, config.tumour_free_prob
    )
    lesion_ids = paint_tumours(tumours, fine, tissue, liver)
    hu_volume = hu_lookup_table(hu)[tissue]
    _add_texture_and_lesion_hu(hu_volume, tissue, lesion_ids, tumours, fine, rng)

    image, label, tissue, lesion_ids = _downsample(hu_volume, liver, tissue, lesion_ids, factor)
    image = _acquire(image, spacing, noise_sd, rng)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    arrays, affine = (image, label, tissue, lesion_ids), grid.affine
    fov_rng = np.random.default_rng([seed, _FOV_STREAM])
    if fov_rng.random() < config.partial_fov_prob:
        arrays, affine = _liver_slab(arrays, affine, label, config.slab_mm, fov_rng)
    image, label, tissue, lesion_ids, affine = _reorient(arrays, affine, orientation)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    info = {
        "seed": int(seed),
        "phase": phase,
        "orientation": orientation,
        "shape": list(image.shape),
        "partial_fov": bool(image.shape[2] != shape[2]),
        "spacing": [float(s) for s in spacing],
        "noise_sd": float(noise_sd),
        "hu": {t.name.lower(): round(v, 2) for t, v in hu.items()},
        "liver_volume_ml": float(np.count_nonzero(label >= LIVER) * voxel_ml),
        "tumour_volume_ml": float(np.count_nonzero(label == TUMOUR) * voxel_ml),
        "tumours": [tumour_info(t) for t in tumours],
    }
    return Phantom(image, label, tissue, lesion_ids, affine, info)


def _calibrate_liver(anatomy: Anatomy, target_ml: float, grid: Grid) -> None:
    """Scale the liver so that it holds about ``target_ml``, painted on a coarse grid.

    Painting (not just the implicit shape) counts what neighbouring organs, vessels and
    the diaphragm take away from the liver.
    """
    step = CALIBRATION_SPACING
    shape = tuple(
        max(int(np.ceil(n * s / step)), 8) for n, s in zip(grid.shape, grid.spacing, strict=True)
    )
    coarse = Grid.centred(shape, (step, step, step))
    for _ in range(3):  # each correction brings the volume within a few per cent
        _, liver = paint_tissue(anatomy, coarse)
        volume = max(np.count_nonzero(liver) * step**3 / 1000.0, 1.0)
        anatomy.liver_scale *= float(np.clip((target_ml / volume) ** (1 / 3), 0.7, 1.4))


def _subsampled_liver(liver: np.ndarray, grid: Grid) -> dict[str, Any]:
    """The painted liver on a grid of about 4 mm, where tumour centres are drawn."""
    step = [max(1, int(round(CALIBRATION_SPACING / s))) for s in grid.spacing]
    coarse = Grid(
        tuple(len(range(0, n, k)) for n, k in zip(grid.shape, step, strict=True)),
        tuple(s * k for s, k in zip(grid.spacing, step, strict=True)),
        grid.origin,
    )
    return {"grid": coarse, "mask": liver[:: step[0], :: step[1], :: step[2]]}


def _add_texture_and_lesion_hu(
    hu: np.ndarray,
    tissue: np.ndarray,
    lesion_ids: np.ndarray,
    tumours: list[TumourSpec],
    grid: Grid,
    rng: np.random.Generator,
) -> None:
    """Per-lesion CT numbers and a faint parenchymal texture (zero mean) in the liver."""
    texture = SmoothField(rng, (4.0, 16.0), 10)
    texture_sd = np.float32(rng.uniform(2, 5))
    liver_like = np.isin(tissue, [Tissue.LIVER, *_TUMOUR_TISSUES])
    if not liver_like.any():
        return
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(liver_like))
    for index, tumour in enumerate(tumours, start=1):
        lesion_box = grid.box(tumour.centre, tumour.radii.max() * 1.05)
        if lesion_box is None:
            continue
        own = lesion_ids[lesion_box] == index
        t_tissue, t_hu = tissue[lesion_box], hu[lesion_box]
        for code, key in (
            (Tissue.TUMOUR, "body"),
            (Tissue.TUMOUR_RIM, "rim"),
            (Tissue.TUMOUR_CORE, "core"),
        ):
            t_hu[own & (t_tissue == code)] = tumour.hu[key]
    region_hu, region_tissue = hu[box], tissue[box]
    noise = texture(*grid.axes(box)) * texture_sd
    textured = np.isin(region_tissue, [Tissue.LIVER, Tissue.TUMOUR])
    region_hu[textured] += noise[textured]


def _downsample(
    hu: np.ndarray, liver: np.ndarray, tissue: np.ndarray, lesion_ids: np.ndarray, factor
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block-average HU; a voxel is labelled by the class covering at least half of it."""
    tumour = lesion_ids > 0
    if factor == (1, 1, 1):
        label = np.where(tumour, TUMOUR, np.where(liver, LIVER, 0)).astype(np.uint8)
        return hu, label, tissue, lesion_ids
    fx, fy, fz = factor
    nx, ny, nz = (n // f for n, f in zip(hu.shape, factor, strict=True))

    def block_mean(a: np.ndarray) -> np.ndarray:
        return a.reshape(nx, fx, ny, fy, nz, fz).mean(axis=(1, 3, 5), dtype=np.float32)

    liver_fraction = block_mean((liver | tumour).astype(np.float32))
    tumour_fraction = block_mean(tumour.astype(np.float32))
    label = np.zeros((nx, ny, nz), dtype=np.uint8)
    label[liver_fraction >= 0.5] = LIVER
    label[tumour_fraction >= 0.5] = TUMOUR

    def block_centre(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[fx // 2 :: fx, fy // 2 :: fy, fz // 2 :: fz])

    return block_mean(hu), label, block_centre(tissue), block_centre(lesion_ids)


def _acquire(image: np.ndarray, spacing, noise_sd: float, rng: np.random.Generator) -> np.ndarray:
    """Point-spread blur and spatially correlated noise of a CT reconstruction."""
    psf_mm = rng.uniform(0.4, 0.9)
    sigma = (max(psf_mm / spacing[0], 0.35), max(psf_mm / spacing[1], 0.35), 0.4)
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.8, 0.8, 0.4), mode="wrap")
    noise *= np.float32(noise_sd / max(float(noise.std()), 1e-6))
    return image + noise


def _liver_slab(
    arrays: tuple[np.ndarray, ...],
    affine: np.ndarray,
    label: np.ndarray,
    slab_mm: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Keep a slab of RAS arrays along z (superior) whose centre lies in the liver.

    Real series are not always whole abdomens: a limited scan or a thin reconstruction
    covers a few centimetres of the liver, and the model must still segment it.
    """
    slices = np.nonzero((label >= LIVER).any(axis=(0, 1)))[0]
    if slices.size == 0:
        return arrays, affine
    spacing_z = float(np.linalg.norm(affine[:3, 2]))
    n_slices = int(np.clip(round(rng.uniform(*slab_mm) / spacing_z), 8, label.shape[2]))
    centre = int(rng.integers(slices.min(), slices.max() + 1))
    start = int(np.clip(centre - n_slices // 2, 0, label.shape[2] - n_slices))
    cropped = tuple(np.ascontiguousarray(a[:, :, start : start + n_slices]) for a in arrays)
    shifted = affine.copy()
    shifted[:3, 3] += affine[:3, 2] * start
    return cropped, shifted


def _reorient(arrays: tuple[np.ndarray, ...], affine: np.ndarray, target: str):
    """Flip RAS arrays to ``target`` axis codes; return them and the matching affine."""
    transform = orientations.ornt_transform(
        orientations.axcodes2ornt("RAS"), orientations.axcodes2ornt(tuple(target))
    )
    new_affine = affine @ orientations.inv_ornt_aff(transform, arrays[0].shape)
    flipped = [np.ascontiguousarray(orientations.apply_orientation(a, transform)) for a in arrays]
    return (*flipped, new_affine)
