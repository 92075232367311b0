"""Post-processing of predicted liver / tumour label maps.

A network's argmax output typically has a few characteristic errors: detached
islands of "liver" in the spleen or heart, holes where vessels or dark lesions
confused it, tumour voxels outside the liver, and speckle-sized tumours. The steps
below fix those, each switchable through :class:`PostprocessConfig`, in this order:

1. **Largest liver component** (``keep_largest_liver``): the liver mask is
   ``label >= LIVER``, i.e. liver and tumour together, so that a tumour crossing the
   liver does not cut it in two. Only its largest 26-connected component is kept;
   liver and tumour voxels elsewhere become background.
2. **Opening** (``liver_opening_mm``): morphological opening of the liver mask with a
   ball of that radius in mm (anisotropic in voxels), which cuts thin bridges to
   neighbouring organs and spurs. Voxels it removes become background whatever their
   label. Opening can detach pieces, so the largest component is taken again.
3. **Closing** (``liver_closing_mm``): closing with a ball in mm, which smooths the
   surface and closes narrow notches and clefts.
4. **Hole filling** (``fill_liver_holes``): enclosed background inside the liver mask
   (3D). Real livers have vessels entering at the hilum (portal vein, hepatic artery)
   and leaving at the top (hepatic veins): when a network labels a vessel as
   background, the "hole" is connected to the outside through the vessel and a 3D fill
   misses it. ``fill_holes_axial`` also fills holes slice by slice in axial slices,
   where a vessel seen in cross-section is enclosed; it is off by default because it
   may also fill structures the liver wraps around in some slices (the IVC, the
   gallbladder fossa).
5. Voxels added by 3-4 become liver; tumour voxels are never changed by them.
6. **Tumour inside liver** (``tumour_inside_liver``): tumour voxels are kept only in a
   connected component of the post-processed liver mask that contains liver tissue
   (label 1). A lesion bulging through the liver capsule stays whole (it touches liver
   tissue); a tumour blob with no liver around it is a false positive and becomes
   background.
7. **Small tumours** (``min_tumour_mm3``): tumour components (26-connected) whose
   volume (voxel count times the voxel volume from the spacing) is below the threshold
   are relabelled as **liver**, not background: they lie inside the liver, so the
   tissue is liver in any case, and zeroing them would punch holes into the liver and
   change its volume.

Speed: a CT is 512x512xN, but the liver fills a small box of it. All work, the
connected components included, happens in the bounding box of the liver and tumour
voxels, padded by the morphology radius so that closing near the box (or the image
border) is exact. At inference, where the network's grid is up-sampled onto the scan's
by whole blocks, ``postprocess_blocks.py`` does every step but the morphology on the
network's grid with the same result, so the full-size scan needs no pass at all.

:func:`postprocess_labels` works on a 3D numpy array; :class:`PostprocessLabels` and
:class:`PostprocessLabelsd` wrap it as MONAI array / dictionary transforms for a
channel-first (1, X, Y, Z) tensor, e.g. after ``AsDiscreted(argmax=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from numpy.typing import NDArray
from scipy import ndimage

from pipeline.geometry import superior_voxel_axis
from pipeline.labels import BACKGROUND, LIVER, TUMOUR
from pipeline.transforms.masks import (
    component_sizes,
    fill_holes,
    label_components,
    largest_component,
    padded_box,
)

__all__ = [
    "PostprocessConfig",
    "PostprocessLabels",
    "PostprocessLabelsd",
    "ball_structure",
    "postprocess_labels",
]


@dataclass
class PostprocessConfig:
    """Which post-processing steps to run, and their parameters.

    Attributes:
        keep_largest_liver: Keep only the largest 26-connected component of the liver
            mask (liver + tumour); everything outside it becomes background.
        fill_liver_holes: Fill enclosed background in the liver mask (3D) with liver.
        tumour_inside_liver: Drop tumour voxels in components of the liver mask that
            contain no liver tissue.
        min_tumour_mm3: Tumour components smaller than this volume (mm^3) become
            liver. 0 disables the step.
        liver_opening_mm: Radius (mm) of the ball used to open the liver mask;
            0 disables it.
        liver_closing_mm: Radius (mm) of the ball used to close the liver mask;
            0 disables it.
        fill_holes_axial: With ``fill_liver_holes``, also fill holes in each axial
            slice (catches vessel lumens that are open in 3D).
        axial_axis: Array axis across which axial slices are taken (2 for arrays in
            RAS / LPS orientation). :class:`PostprocessLabelsd` derives it from the
            affine unless given explicitly.
    """

    keep_largest_liver: bool = True
    fill_liver_holes: bool = True
    tumour_inside_liver: bool = True
    min_tumour_mm3: float = 10.0
    liver_opening_mm: float = 0.0
    liver_closing_mm: float = 0.0
    fill_holes_axial: bool = False
    axial_axis: int = 2

    def __post_init__(self) -> None:
        for name in ("min_tumour_mm3", "liver_opening_mm", "liver_closing_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.axial_axis not in (0, 1, 2):
            raise ValueError(f"axial_axis must be 0, 1 or 2, got {self.axial_axis}")


def ball_structure(spacing: Sequence[float], radius_mm: float) -> NDArray[np.bool_]:
    """Structuring element of all voxels within ``radius_mm`` of the centre, in mm.

    With anisotropic spacing the ball is an ellipsoid in voxels (e.g. 5 mm is 6 voxels
    at 0.8 mm in-plane but 2 at 2.5 mm slices). Written by hand: scipy and MONAI only
    provide isotropic (in voxel units) structuring elements.

    Args:
        spacing: Voxel size (mm) along each array axis.
        radius_mm: Ball radius in mm.

    Returns:
        A boolean array of odd size along every axis, True inside the ball. A radius
        smaller than every voxel size gives the single centre voxel (a no-op element).
    """
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
    # The tolerance keeps voxels exactly on the sphere (e.g. radius = 2 voxels) inside.
    return np.asarray(dist2 <= radius_mm**2 * (1 + 1e-9))


def _validate_spacing(spacing: Sequence[float] | NDArray[Any]) -> tuple[float, float, float]:
    """Return ``spacing`` as three positive floats."""
    values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
    return values  # type: ignore[return-value]


def postprocess_labels(
    labels: NDArray[Any],
    spacing: Sequence[float] | NDArray[Any],
    config: PostprocessConfig | None = None,
    block_sizes: Sequence[NDArray[Any]] | None = None,
) -> NDArray[Any]:
    """Clean a predicted liver / tumour label map (see the module docstring for the steps).

    Args:
        labels: 3D label map (0 background, 1 liver, 2 tumour), usually uint8; any
            numeric dtype holding those values works.
        spacing: Voxel size in mm along each array axis.
        config: Steps and parameters; ``PostprocessConfig()`` when None.
        block_sizes: per axis, how many voxels of size ``spacing`` each index stands
            for, weighing the largest component and the tumour volumes
            (:func:`postprocess_label_blocks`); None: one each.

    Returns:
        A new label map with the same shape and dtype; ``labels`` is not modified.
    """
    config = config or PostprocessConfig()
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {labels.shape}")
    voxel_spacing = _validate_spacing(spacing)
    if block_sizes is not None and [len(size) for size in block_sizes] != list(labels.shape):
        raise ValueError(
            f"block_sizes of lengths {[len(size) for size in block_sizes]} for labels "
            f"of shape {labels.shape}"
        )

    liver = labels >= LIVER
    if not liver.any():
        return labels.copy()

    # Crop to the box of every liver and tumour voxel, padded by the largest morphology
    # radius in voxels (+1 so that the padded crop always has background all around the
    # liver). Everything happens in it, the connected components too: they are the same
    # as on the whole scan, since nothing lies outside, at a fraction of the cost.
    radius_mm = max(config.liver_opening_mm, config.liver_closing_mm)
    margin = 1 + max(int(np.floor(radius_mm / s + 1e-9)) for s in voxel_spacing)
    image_box, crop_box, crop_shape = padded_box(liver, margin)
    mask = np.zeros(crop_shape, dtype=bool)
    mask[crop_box] = liver[image_box]
    del liver
    weights = None
    sizes_in_box = None
    if block_sizes is not None:
        in_box = zip(block_sizes, image_box, strict=True)
        sizes_in_box = [np.asarray(size, np.float64)[box] for size, box in in_box]
    if block_sizes is not None and config.keep_largest_liver:
        # Voxel by voxel only where whole components are weighed; the tumour sizes below
        # weigh their own voxels.
        weights = np.zeros(crop_shape, dtype=np.float64)
        weights[crop_box] = np.einsum("i,j,k->ijk", *sizes_in_box)
    if config.keep_largest_liver:
        mask = largest_component(mask, weights)

    if config.liver_opening_mm > 0:
        structure = ball_structure(voxel_spacing, config.liver_opening_mm)
        mask = ndimage.binary_opening(mask, structure=structure)
        if config.keep_largest_liver and mask.any():
            mask = largest_component(mask, weights)
    if config.liver_closing_mm > 0:
        structure = ball_structure(voxel_spacing, config.liver_closing_mm)
        mask = ndimage.binary_closing(mask, structure=structure)
    if config.fill_liver_holes:
        # The holes of the liver mask (label >= 1) become liver. MONAI's FillHoles fills
        # per label value instead: with applied_labels [1] a tumour inside the liver is a
        # hole of label 1, and would be overwritten by liver.
        mask = fill_holes(mask)
        if config.fill_holes_axial:
            # A structure with no links across the axial axis makes scipy's fill work
            # on each axial slice independently, in a single vectorised call.
            in_plane = np.zeros((3, 3, 3), dtype=bool)
            axial_plane = (slice(None),) * config.axial_axis + (1,)
            in_plane[axial_plane] = ndimage.generate_binary_structure(2, 1)
            mask = ndimage.binary_fill_holes(mask, structure=in_plane)

    # Back to image-sized crop coordinates; anything grown into the padding past the
    # image border is simply dropped.
    mask = mask[crop_box]
    original = labels[image_box]
    cropped = np.where(mask, original, BACKGROUND).astype(labels.dtype, copy=False)
    # Voxels added by closing / filling were background: they become liver. Tumour
    # voxels are untouched, as are liver voxels.
    cropped[mask & (original == BACKGROUND)] = LIVER

    if config.tumour_inside_liver:
        components, n_components = label_components(mask)
        has_liver_tissue = np.zeros(n_components + 1, dtype=bool)
        has_liver_tissue[components[cropped == LIVER]] = True  # a scatter: no sort
        has_liver_tissue[0] = False
        cropped[(cropped == TUMOUR) & ~has_liver_tissue[components]] = BACKGROUND

    if config.min_tumour_mm3 > 0:
        tumours, n_tumours = label_components(cropped == TUMOUR)
        if n_tumours:
            voxel_mm3 = float(np.prod(voxel_spacing))
            if sizes_in_box is None:
                counts = component_sizes(tumours, n_tumours)
            else:
                where = np.nonzero(tumours)
                voxel_weights = sizes_in_box[0][where[0]] * sizes_in_box[1][where[1]]
                voxel_weights *= sizes_in_box[2][where[2]]
                counts = np.bincount(tumours[where], voxel_weights, minlength=n_tumours + 1)
            volumes_mm3 = counts * voxel_mm3
            too_small = volumes_mm3 < config.min_tumour_mm3
            too_small[0] = False
            cropped[too_small[tumours]] = LIVER

    out = np.zeros_like(labels)
    out[image_box] = cropped
    return out


class PostprocessLabels(Transform):
    """MONAI array transform running :func:`postprocess_labels` on a channel-first map.

    The input is a (1, X, Y, Z) tensor or array of label values (e.g. the output of
    ``AsDiscrete(argmax=True)``, float32 is fine), or a plain (X, Y, Z) one. The output
    has the input's type, dtype, device and, for a MetaTensor, its metadata.

    Args:
        spacing: Voxel size in mm, used when the input is not a MetaTensor (for a
            MetaTensor the spacing is taken from its affine, ``img.pixdim``).
        **config: Fields of :class:`PostprocessConfig`. For a MetaTensor, the axial
            axis is derived from the affine unless ``axial_axis`` is given.
    """

    # The work is done on numpy arrays; tensors are converted and converted back.
    backend = [TransformBackends.NUMPY]

    def __init__(self, spacing: Sequence[float] | None = None, **config: Any) -> None:
        self.spacing = None if spacing is None else _validate_spacing(spacing)
        self.config = PostprocessConfig(**config)
        self._axial_axis_given = "axial_axis" in config

    def __call__(
        self, img: NDArray[Any] | torch.Tensor, spacing: Sequence[float] | None = None
    ) -> NDArray[Any] | torch.Tensor:
        """Post-process ``img``.

        Args:
            img: (1, X, Y, Z) or (X, Y, Z) label map.
            spacing: Overrides the spacing given at construction time (but not a
                MetaTensor's own spacing).

        Returns:
            The cleaned label map, same shape, type, dtype and metadata as ``img``.
        """
        config = self.config
        if isinstance(img, MetaTensor):
            # The affine is the truth for a MetaTensor: it follows resampling and
            # reorientation, while a stored spacing may not.
            voxel_spacing: Sequence[float] | None = convert_to_numpy(img.pixdim)
            if not self._axial_axis_given:
                axis = superior_voxel_axis(convert_to_numpy(img.affine))
                config = dataclasses.replace(config, axial_axis=axis)
        else:
            voxel_spacing = spacing if spacing is not None else self.spacing
        if voxel_spacing is None:
            raise ValueError("no spacing: pass a MetaTensor or give `spacing` explicitly")

        array = convert_to_numpy(img)
        has_channel = array.ndim == 4
        if has_channel and array.shape[0] != 1:
            raise ValueError(
                f"expected a single-channel label map (1, X, Y, Z), got shape {array.shape}; "
                "apply AsDiscrete(argmax=True) first"
            )
        result = postprocess_labels(array[0] if has_channel else array, voxel_spacing, config)
        if has_channel:
            result = result[None]
        out, *_ = convert_to_dst_type(result, dst=img, dtype=array.dtype)
        return out


class PostprocessLabelsd(MapTransform):
    """Dictionary version of :class:`PostprocessLabels`, for a MONAI ``Compose`` chain.

    Spacing, for each key, comes from (in this order): the MetaTensor's affine
    (``data[key].pixdim``); ``data[spacing_key]`` if ``spacing_key`` is set and present;
    the ``spacing`` argument.

    Args:
        keys: Keys of the label maps to post-process.
        spacing_key: Optional key of a 3-element voxel spacing (mm) in the data dict,
            used for inputs that are not MetaTensors.
        spacing: Fallback voxel spacing in mm.
        allow_missing_keys: Do not raise if a key is missing.
        **config: Fields of :class:`PostprocessConfig`.
    """

    backend = PostprocessLabels.backend

    def __init__(
        self,
        keys: KeysCollection,
        spacing_key: str | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        **config: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key
        self.transform = PostprocessLabels(spacing=spacing, **config)

    def with_config(self, **changes: Any) -> PostprocessLabelsd:
        """A copy with some :class:`PostprocessConfig` fields changed (this one unchanged).

        Tuning uses it to segment with the size filter off: ``with_config(min_tumour_mm3=0)``.
        """
        changed = copy.copy(self)
        changed.transform = copy.copy(self.transform)
        changed.transform.config = dataclasses.replace(self.transform.config, **changes)
        return changed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Post-process ``data[key]`` for every key; other entries are passed through.

        Args:
            data: Dict holding the label maps (and possibly ``spacing_key``).

        Returns:
            A shallow copy of ``data`` with the label maps replaced.
        """
        d = dict(data)
        spacing = None
        if self.spacing_key is not None and self.spacing_key in d:
            spacing = convert_to_numpy(d[self.spacing_key])
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], spacing=spacing)
        return d
