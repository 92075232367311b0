"""Geometry primitives for the synthetic phantoms, evaluated in world millimetres.

Every shape is an implicit function sampled on a :class:`Grid`, so the same random case
can be rendered at any resolution: a 64^3 test volume and a 512 x 512 x 200 benchmark
volume of one seed show the same anatomy. Work is restricted to each shape's bounding
box, which is what keeps a 256 x 256 x 128 case under a few seconds on two CPU cores.

These helpers are written here because no maintained library offers smooth random
implicit anatomy; image-space work (blur, noise) uses scipy.ndimage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]
Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """A voxel grid in RAS world coordinates (axis 0 -> Right, 1 -> Anterior, 2 -> Superior).

    Args:
        shape: number of voxels along each axis.
        spacing: voxel size in mm along each axis.
        origin: world position (mm) of the centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def centred(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Grid:
        """A grid whose centre voxel sits at world (0, 0, 0)."""
        origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True))
        return cls(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), origin)

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 voxel-to-world (RAS mm) matrix."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def axes(self, box: Slices | None = None) -> Axes:
        """World coordinates of voxel centres as broadcastable 1D arrays (x, y, z)."""
        box = box or tuple(slice(0, n) for n in self.shape)
        coords = []
        for dim, sl in enumerate(box):
            idx = np.arange(sl.start, sl.stop, dtype=np.float32)
            world = self.origin[dim] + idx * self.spacing[dim]
            shape = [1, 1, 1]
            shape[dim] = world.size
            coords.append(world.reshape(shape).astype(np.float32))
        return coords[0], coords[1], coords[2]

    def box(self, centre: np.ndarray, half_extent: np.ndarray | float) -> Slices | None:
        """Voxel slices covering ``centre +- half_extent`` (mm), clipped; None when empty."""
        half = np.broadcast_to(np.asarray(half_extent, dtype=float), (3,))
        slices = []
        for dim in range(3):
            lo = (centre[dim] - half[dim] - self.origin[dim]) / self.spacing[dim]
            hi = (centre[dim] + half[dim] - self.origin[dim]) / self.spacing[dim]
            start, stop = max(int(np.floor(lo)), 0), min(int(np.ceil(hi)) + 1, self.shape[dim])
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        return slices[0], slices[1], slices[2]


class SmoothField:
    """A smooth random scalar field: a sum of random plane waves, unit variance.

    Args:
        rng: source of randomness.
        wavelength_mm: range of wavelengths; longer waves give gentler deformations.
        n_waves: number of plane waves summed (more gives a less regular pattern).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        wavelength_mm: tuple[float, float] = (60.0, 160.0),
        n_waves: int = 8,
    ) -> None:
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength_mm, size=n_waves)
        self.wave_vectors = (directions * (2 * np.pi / wavelengths)[:, None]).astype(np.float32)
        self.phases = rng.uniform(0, 2 * np.pi, size=n_waves).astype(np.float32)
        # A sum of n cosines with amplitude sqrt(2/n) has unit variance.
        self.amplitude = np.float32(np.sqrt(2.0 / n_waves))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Evaluate the field at broadcastable world coordinates (mm)."""
        total = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        for (kx, ky, kz), phase in zip(self.wave_vectors, self.phases, strict=True):
            total += np.cos(kx * x + ky * y + kz * z + phase)
        return total * self.amplitude


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation matrix about a random axis by at most ``max_degrees``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def ellipsoid_radius(
    axes: Axes,
    centre: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised ellipsoid radius: < 1 inside, 1 on the surface, grows linearly outside."""
    dx, dy, dz = (axes[d] - np.float32(centre[d]) for d in range(3))
    rot = np.eye(3) if rotation is None else rotation
    total = None
    for row in range(3):
        # Local coordinate = rotation^T (p - c), component ``row``.
        local = rot[0, row] * dx + rot[1, row] * dy + rot[2, row] * dz
        term = (local / np.float32(radii[row])) ** 2
        total = term if total is None else total + term
    return np.sqrt(total)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: unions two implicit shapes with a fillet of size ``k``."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def capsule_distance(axes: Axes, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distance (mm) to the segment start-end, and the position t in [0, 1] along it."""
    seg = np.asarray(end, dtype=np.float32) - np.asarray(start, dtype=np.float32)
    length2 = max(float(seg @ seg), 1e-6)
    rel = [axes[d] - np.float32(start[d]) for d in range(3)]
    t = np.clip((rel[0] * seg[0] + rel[1] * seg[1] + rel[2] * seg[2]) / length2, 0.0, 1.0)
    dist2 = sum((rel[d] - t * seg[d]) ** 2 for d in range(3))
    return np.sqrt(dist2), t
