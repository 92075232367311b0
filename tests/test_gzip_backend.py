"""NIfTI through ISA-L's gzip: standard files, same voxels, same bytes for same data."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage
from nibabel.openers import Opener

import pipeline  # noqa: F401 - installs the backend, as every bundle run does
from pipeline.gzip_backend import _igzip_open
from pipeline.io import save_nifti

pytest.importorskip("isal", reason="isal is not installed: nibabel keeps Python's gzip")


def test_nibabel_opens_gz_with_isal():
    assert Opener.compress_ext_map[".gz"][0] is _igzip_open


def test_written_files_are_standard_gzip_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.random((64, 48, 40)) > 0.7).astype(np.uint8) * 2
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    first = save_nifti(mask, affine, tmp_path / "a.nii.gz")
    second = save_nifti(mask, affine, tmp_path / "b.nii.gz")
    assert first.read_bytes() == second.read_bytes()  # mtime 0: no time stamp inside
    # Python's own gzip reads it: the header's 348 bytes, then the voxels in F order.
    raw = gzip.decompress(first.read_bytes())
    offset = int(nib.Nifti1Header.from_fileobj(gzip.open(first)).get_data_offset())
    voxels = np.frombuffer(raw[offset:], dtype=np.uint8).reshape(mask.shape, order="F")
    np.testing.assert_array_equal(voxels, mask)


def test_monai_reads_the_same_voxels_as_with_python_gzip(tmp_path):
    image = np.random.default_rng(1).integers(-1024, 2000, (40, 32, 24)).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    with gzip.open(path, "wb") as handle:  # written by Python's gzip, read by isal
        handle.write(nib.Nifti1Image(image, np.eye(4)).to_bytes())
    loaded = LoadImage(image_only=True)(str(path))
    np.testing.assert_array_equal(np.asarray(loaded), image.astype(np.float32))
