"""The NIfTI reader's slab-wise copy gives MONAI's array, C-ordered, with its metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import NibabelReader
from monai.transforms import LoadImage

from pipeline.data.readers import COrderNibabelReader, c_ordered
from pipeline.io import save_nifti


@pytest.mark.parametrize("slab_bytes", [1, 64, 1 << 21])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_slab_copy_equals_numpy_contiguous_copy(slab_bytes, dtype):
    fortran = np.asfortranarray(np.arange(7 * 5 * 11, dtype=dtype).reshape(7, 5, 11))
    copied = c_ordered(fortran, slab_bytes)
    assert copied.flags.c_contiguous and copied.dtype == dtype
    np.testing.assert_array_equal(copied, fortran)


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
