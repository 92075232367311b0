"""File-name conventions shared by every stage: image suffixes and natural sorting.

Discovery (``data.datalist``), inference (``inference.scans``) and evaluation
(``evaluation.pairing``) all name cases after their files; they use these helpers so a
case gets one name and one place in the order wherever it is listed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# 3D Slicer's and ITK's own formats (NRRD with attached or detached header, MetaImage in
# one file or a header beside raw data); ITK reads them all.
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


TUMOUR_PROBABILITY_SUFFIX = "_tumour_prob.nii.gz"
"""``<case>`` + this: the tumour probability inference keeps beside ``<case>_seg.nii.gz``."""


def tumour_probability_path(mask: str | Path) -> Path:
    """Where inference keeps the tumour probability of the mask ``<case>_seg.<suffix>``."""
    mask = Path(mask)
    stem = mask.name.split(".")[0]
    case = stem[: -len("_seg")] if stem.endswith("_seg") else stem
    return mask.with_name(case + TUMOUR_PROBABILITY_SUFFIX)


def strip_nifti_suffix(name: str) -> str | None:
    """``name`` without its NIfTI suffix (``.nii.gz`` or ``.nii``); None if it has neither."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def split_image_suffix(name: str) -> tuple[str, str] | None:
    """``(stem, suffix)`` of a NIfTI, NRRD or MetaImage file name; None for anything else.

    The suffix is matched case-insensitively (``scan.NRRD``) and returned lower-case.
    """
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``case2`` before ``case10`` (numbers compared as numbers).

    Each part is tagged so that a number and a word never meet in one comparison.
    """
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]
