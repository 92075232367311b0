"""The NIfTI reader's slab-wise copy gives MONAI's array, C-ordered, with its metadata."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import NibabelReader
from monai.transforms import LoadImage

from pipeline.data.readers import COrderNibabelReader, c_ordered, read_c_ordered, slab_depth
from pipeline.io import save_nifti


@pytest.mark.parametrize("slab_bytes", [1, 64, 1 << 21])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_slab_copy_equals_numpy_contiguous_copy(slab_bytes, dtype):
    # 70 slices: several steps of at least a cache line (16-64 slices), the last uneven.
    fortran = np.asfortranarray(np.arange(7 * 5 * 70).astype(dtype).reshape(7, 5, 70))
    copied = c_ordered(fortran, slab_bytes)
    assert copied.flags.c_contiguous and copied.dtype == dtype
    np.testing.assert_array_equal(copied, fortran)


def test_a_slab_fills_at_least_a_cache_line_of_the_output():
    # 512 x 512 int16 slices: 8 MiB is 16 of them, and 16 float32 values are 64 bytes.
    assert slab_depth(512 * 512 * 2, 4, 1 << 23) == 16
    assert slab_depth(512 * 512 * 2, 4, 1 << 21) == 16  # not 4: a line at least
    assert slab_depth(512 * 512 * 2, 2, 1 << 21) == 32
    assert slab_depth(100, 8, 10_000) == 100  # small slices: the bytes decide
    assert slab_depth(0, 1, 1) == 64


def test_slab_copy_casts_on_the_way():
    fortran = np.asfortranarray(np.arange(-300, 6 * 5 * 10 - 300, dtype=np.int16).reshape(6, 5, 10))
    copied = c_ordered(fortran, 64, dtype=np.float32)
    assert copied.flags.c_contiguous and copied.dtype == np.float32
    np.testing.assert_array_equal(copied, fortran.astype(np.float32))


def test_a_c_contiguous_array_is_not_copied():
    array = np.zeros((4, 3, 2), dtype=np.int16)
    assert c_ordered(array) is array


def test_reader_gives_the_default_readers_image(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, size=(33, 20, 9)).astype(np.int16)
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = (100.0, 80.0, -300.0)
    path = save_nifti(image, affine, tmp_path / "scan.nii.gz")
    ours = LoadImage(reader=COrderNibabelReader(), image_only=True, dtype=None)(path)
    default = LoadImage(reader=NibabelReader(), image_only=True, dtype=None)(path)
    assert ours.is_contiguous() and ours.dtype == default.dtype
    np.testing.assert_array_equal(np.asarray(ours), image)
    np.testing.assert_array_equal(np.asarray(ours.affine), np.asarray(default.affine))
    assert ours.meta["spatial_shape"].tolist() == [33, 20, 9]
    as_float = LoadImage(reader=COrderNibabelReader(dtype=np.float32), image_only=True)(path)
    assert as_float.dtype == torch.float32 and as_float.is_contiguous()
    np.testing.assert_array_equal(np.asarray(as_float), image.astype(np.float32))


def _nifti(tmp_path, name: str, array: np.ndarray, slope: float = 1.0, inter: float = 0.0):
    image = nib.Nifti1Image(array, np.diag([0.7, 0.8, 2.0, 1.0]))
    image.header.set_data_dtype(array.dtype)
    image.header.set_slope_inter(slope, inter)
    nib.save(image, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("slab_bytes", [1, 234 * 40, 1 << 23])  # 32, 40 or all 75 slices
@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii"])
def test_slab_read_equals_nibabels_array(tmp_path, slab_bytes, name):
    array = np.random.default_rng(1).integers(-1024, 3000, size=(13, 9, 75)).astype(np.int16)
    proxy = nib.load(_nifti(tmp_path, name, array)).dataobj
    read = read_c_ordered(proxy, slab_bytes=slab_bytes)
    assert read.flags.c_contiguous and read.dtype == np.int16
    np.testing.assert_array_equal(read, array)
    as_float = read_c_ordered(proxy, np.float32, slab_bytes=slab_bytes)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, array.astype(np.float32))


def test_slab_read_scales_as_nibabel_does(tmp_path):
    # Stored values 0..4095 with slope 0.5 and intercept -1024: HU -1024 to 1023.5.
    stored = np.random.default_rng(2).integers(0, 4096, size=(10, 8, 7)).astype(np.uint16)
    proxy = nib.load(_nifti(tmp_path, "scaled.nii.gz", stored, 0.5, -1024.0)).dataobj
    expected = np.asanyarray(proxy)
    read = read_c_ordered(proxy, slab_bytes=200)
    assert read.dtype == expected.dtype
    np.testing.assert_array_equal(read, expected)
    np.testing.assert_array_equal(read_c_ordered(proxy, np.float32), expected.astype(np.float32))
    assert read[0, 0, 0] == stored[0, 0, 0] * 0.5 - 1024.0


def test_slab_read_of_big_endian_data(tmp_path):
    array = np.arange(6 * 5 * 4, dtype=">i2").reshape(6, 5, 4) - 50
    proxy = nib.load(_nifti(tmp_path, "big.nii", array)).dataobj
    np.testing.assert_array_equal(read_c_ordered(proxy, slab_bytes=64), array)


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    array = np.zeros((20, 20, 20), dtype=np.int16)
    path = _nifti(tmp_path, "whole.nii.gz", array)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1000]))
    with pytest.raises(OSError, match=r"cut\.nii\.gz: the file ends 1000 bytes before"):
        read_c_ordered(nib.load(cut).dataobj, slab_bytes=2000)
    with pytest.raises(Exception, match="cut.nii.gz"):
        LoadImage(reader=COrderNibabelReader(), image_only=True)(cut)
