"""Shared fixtures: tiny synthetic datasets and the optional real CT in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_files import REAL_CT


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    """The real abdominal CTs of ../shared/data/real_ct (skips when absent)."""
    if not (REAL_CT / "abdomen_ct_3mm.nii.gz").exists():
        pytest.skip(f"real CT test data not found at {REAL_CT} (the ../shared folder is absent)")
    return REAL_CT


@pytest.fixture(scope="session")
def tiny_lits(tmp_path_factory) -> Path:
    """Five 32^3 synthetic cases in the LiTS layout."""
    from pipeline.data.synth.dataset import write_synthetic_dataset

    out = tmp_path_factory.mktemp("lits")
    write_synthetic_dataset(
        out, n_cases=5, seed=1, shape=(32, 32, 32), layout="lits", progress=False
    )
    return out
