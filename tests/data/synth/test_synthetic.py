from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pipeline.data.synth.phantom import PhantomConfig, default_spacing, generate_phantom
from pipeline.data.synth.tissues import Tissue
from pipeline.io import save_nifti

TUMOUR_TISSUES = [Tissue.TUMOUR, Tissue.TUMOUR_RIM, Tissue.TUMOUR_CORE]


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(
        11,
        PhantomConfig(
            shape=(128, 128, 80), n_tumours=6, noise_sd=10, phase="portal_venous", orientation="RAS"
        ),
    )


def test_dtypes_and_label_values(phantom):
    assert phantom.image.dtype == np.int16
    assert phantom.label.dtype == np.uint8
    assert phantom.image.shape == phantom.label.shape == (128, 128, 80)
    assert set(np.unique(phantom.label)) == {0, 1, 2}


def test_liver_inside_body_and_tumours_inside_liver(phantom):
    # The tissue map is sampled at block centres, so boundary voxels may disagree with
    # the label by partial volume; the outer body layers never touch the liver.
    liver_tissue = phantom.tissue[phantom.label >= 1]
    outer = [Tissue.AIR, Tissue.TABLE, Tissue.SKIN, Tissue.SUBCUTANEOUS_FAT]
    assert not np.isin(liver_tissue, outer).any()
    inner = [Tissue.LIVER, Tissue.PORTAL_VEIN, Tissue.HEPATIC_VEIN, *TUMOUR_TISSUES]
    assert np.mean(np.isin(liver_tissue, inner)) > 0.93
    tumour = phantom.label == 2
    # Each tumour voxel's 6-neighbours are tumour or liver, except where a surface lesion
    # meets the liver capsule: that happens on far fewer voxels than the lesion holds.
    grown = ndimage.binary_dilation(tumour) & ~tumour
    assert np.mean(phantom.label[grown] == 1) > 0.8
    # Lesion voxels carry lesion tissue (the label was not painted outside the lesions).
    assert np.mean(np.isin(phantom.tissue[tumour], TUMOUR_TISSUES)) > 0.9


def test_mean_hu_of_liver_and_tumour_match_request(phantom):
    hu = phantom.info["hu"]
    core = ndimage.binary_erosion(phantom.tissue == Tissue.LIVER, iterations=2)
    assert core.sum() > 1000
    assert abs(phantom.image[core].mean() - hu["liver"]) < 10
    checked = 0
    for index, tumour in enumerate(phantom.info["tumours"], start=1):
        own = (phantom.lesion_ids == index) & (phantom.tissue == Tissue.TUMOUR)
        # Two voxels in from every edge (liver, rim, core, other lesions): no partial volume.
        body = ndimage.binary_erosion(own, iterations=2)
        if body.sum() >= 30:
            assert abs(phantom.image[body].mean() - tumour["hu"]["body"]) < 10
            checked += 1
    assert checked >= 1, "no lesion large enough to measure: choose another seed"


def test_liver_volume_is_adult_sized_and_follows_request():
    for seed in range(3):
        info = generate_phantom(seed, PhantomConfig(shape=(96, 96, 64))).info
        assert 1000 < info["liver_volume_ml"] < 2000, info["liver_volume_ml"]
    asked = generate_phantom(9, PhantomConfig(shape=(96, 96, 64), liver_volume_ml=1500)).info
    assert abs(asked["liver_volume_ml"] - 1500) < 150


@pytest.mark.parametrize("code", ["RAS", "LPS", "LAS"])
def test_orientation_codes_and_world_position(code):
    phantom = generate_phantom(5, PhantomConfig(shape=(48, 48, 40), orientation=code, n_tumours=0))
    assert nib.aff2axcodes(phantom.affine) == tuple(code)
    # Whatever the storage order, the liver lies on the patient's right (+x in RAS world).
    centroid = np.argwhere(phantom.label >= 1).mean(axis=0)
    world = phantom.affine @ [*centroid, 1.0]
    assert world[0] > 20
    # The same world anatomy as the RAS rendering, voxel for voxel, after reorienting.
    ras = generate_phantom(5, PhantomConfig(shape=(48, 48, 40), orientation="RAS", n_tumours=0))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(phantom.label, phantom.affine))
    np.testing.assert_array_equal(np.asarray(canonical.dataobj), ras.label)
    np.testing.assert_allclose(canonical.affine, ras.affine, atol=1e-6)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    config = PhantomConfig(shape=(40, 40, 32))
    paths = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        phantom = generate_phantom(seed, config)
        paths.append(save_nifti(phantom.image, phantom.affine, tmp_path / f"{name}.nii.gz"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_tumour_free_case_and_phase_contrast():
    free = generate_phantom(2, PhantomConfig(shape=(48, 48, 40), n_tumours=0, phase="non_contrast"))
    assert not (free.label == 2).any() and free.info["tumours"] == []
    assert 38 <= free.info["hu"]["liver"] <= 62
    venous = generate_phantom(2, PhantomConfig(shape=(48, 48, 40), phase="portal_venous"))
    assert 80 <= venous.info["hu"]["liver"] <= 115
    assert venous.info["hu"]["portal_vein"] > venous.info["hu"]["liver"]


def test_full_size_spacing_is_realistic():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sx, sy, sz = default_spacing((512, 512, 150), rng)
        assert 0.6 <= sx <= 1.0 and sx == sy
        assert 1.0 <= sz <= 5.0


def test_partial_field_of_view_is_a_slab_of_the_whole_case():
    whole = generate_phantom(4, PhantomConfig(shape=(64, 64, 60), spacing=(6.0, 6.0, 4.0)))
    slab = generate_phantom(
        4,
        PhantomConfig(
            shape=(64, 64, 60), spacing=(6.0, 6.0, 4.0), partial_fov_prob=1.0, slab_mm=(40, 40)
        ),
    )
    assert slab.info["partial_fov"] and not whole.info["partial_fov"]
    assert slab.image.shape == (64, 64, 10)  # 40 mm at 4 mm per slice
    assert (slab.label >= 1).any()
    # The slab holds the same voxels as the whole case, at the same world positions.
    whole_ras = nib.as_closest_canonical(nib.Nifti1Image(whole.image, whole.affine))
    slab_ras = nib.as_closest_canonical(nib.Nifti1Image(slab.image, slab.affine))
    start = int(round((slab_ras.affine[2, 3] - whole_ras.affine[2, 3]) / 4.0))
    np.testing.assert_array_equal(
        np.asarray(slab_ras.dataobj), np.asarray(whole_ras.dataobj)[:, :, start : start + 10]
    )
    np.testing.assert_allclose(slab_ras.affine[:3, :3], whole_ras.affine[:3, :3])
    # Without the option a case is unchanged by the field-of-view stream.
    again = generate_phantom(4, PhantomConfig(shape=(64, 64, 60), spacing=(6.0, 6.0, 4.0)))
    np.testing.assert_array_equal(again.image, whole.image)
