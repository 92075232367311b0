"""Match prediction and reference files of a folder, or of a datalist, by case name.

Case names: a file's case name is its name without ``.nii`` / ``.nii.gz``, without the
LiTS prefixes ``segmentation-`` / ``volume-`` and without the label suffixes ``_seg``,
``_label``, ``_mask`` (``LABEL_SUFFIXES``). So this project's inference output
``volume-3_seg.nii.gz``, an nnU-Net output ``3.nii.gz`` and the LiTS reference
``segmentation-3.nii`` all name case ``3``. Image folders also drop nnU-Net's channel
suffix ``_0000``. When one folder holds several files of one case (a LiTS folder holds
``volume-3.nii`` and ``segmentation-3.nii``), label folders prefer the label-looking
file and image folders the image-looking one; a tie is an error naming the files.

A sub-folder holding ``liver.nii.gz`` (and ``liver_tumor.nii.gz``), as TotalSegmentator
writes per case, is that case's label map (liver 1, tumour 2), named after the folder.

Missing cases (``allow_missing=True``): a reference without prediction, or a
prediction without reference, is kept as a :class:`CasePair` with ``pred`` or ``ref``
set to None. :func:`pipeline.evaluation.scoring.evaluate_pairs` lists such pairs as *missing*
in the report and does not score them. Scoring a missing prediction as an empty one
would fold "the model was not run" into the model's accuracy; the report states the
count instead, so a reader can tell the two apart. Without ``allow_missing`` unpaired
files raise :class:`UnpairedCasesError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.names import (
    NIFTI_SUFFIXES,
    TUMOUR_PROBABILITY_SUFFIX,
    natural_key,
    strip_nifti_suffix,
)

__all__ = [
    "CasePair",
    "PairingError",
    "UnpairedCasesError",
    "case_name",
    "natural_key",
    "pair_cases",
    "pairs_from_datalist",
]

LABEL_SUFFIXES = ("_seg", "_label", "_mask")
# TotalSegmentator writes one folder per case with a binary mask per structure; the folder
# is the case (its name the case name), read as a label map: liver 1, liver tumour 2.
STRUCTURE_FILES = {"liver.nii.gz": 1, "liver_tumor.nii.gz": 2}
LABEL_PREFIX, IMAGE_PREFIX = "segmentation-", "volume-"
_IMAGE_CHANNEL = re.compile(r"_0000$")
_MAX_LISTED = 20  # files named in one error message before "... and N more"


class PairingError(ValueError):
    """Prediction and reference files could not be matched one to one."""


class UnpairedCasesError(PairingError):
    """Some files have no counterpart; ``unpaired_pred`` and ``unpaired_ref`` list them."""

    def __init__(self, unpaired_pred: Sequence[Path], unpaired_ref: Sequence[Path]) -> None:
        self.unpaired_pred = list(unpaired_pred)
        self.unpaired_ref = list(unpaired_ref)
        parts = []
        if self.unpaired_pred:
            parts.append(f"predictions without reference: {_list_names(self.unpaired_pred)}")
        if self.unpaired_ref:
            parts.append(f"references without prediction: {_list_names(self.unpaired_ref)}")
        super().__init__("; ".join(parts) + " (allow_missing=True / --allow-missing skips them)")


@dataclass(frozen=True)
class CasePair:
    """Files of one case; ``pred`` or ``ref`` is None for a missing case."""

    case_id: str
    pred: Path | None
    ref: Path | None
    image: Path | None = None

    @property
    def complete(self) -> bool:
        """True when both the prediction and the reference exist."""
        return self.pred is not None and self.ref is not None


def _list_names(paths: Sequence[Path]) -> str:
    names = sorted(str(p) for p in paths)
    shown = ", ".join(names[:_MAX_LISTED])
    return (
        shown if len(names) <= _MAX_LISTED else f"{shown} ... and {len(names) - _MAX_LISTED} more"
    )


def _split_name(path: str | os.PathLike, role: str) -> tuple[str, str]:
    """Case name and kind ("label", "image" or "plain") of a NIfTI file name."""
    name = Path(path).name
    name = strip_nifti_suffix(name) or name
    kind = "plain"
    if name.startswith(LABEL_PREFIX):
        name, kind = name[len(LABEL_PREFIX) :], "label"
    elif name.startswith(IMAGE_PREFIX):
        name, kind = name[len(IMAGE_PREFIX) :], "image"
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name, kind = name[: -len(suffix)], "label"
            break
    if role == "image" and _IMAGE_CHANNEL.search(name):
        name, kind = _IMAGE_CHANNEL.sub("", name), "image"
    return name, kind


def case_name(path: str | os.PathLike, role: str = "label") -> str:
    """The case name of a file, e.g. ``volume-3_seg.nii.gz`` -> ``3``.

    Args:
        path: File path or name.
        role: ``"label"`` or ``"image"`` (only images drop the nnU-Net ``_0000`` suffix).

    Returns:
        The name without NIfTI extension, LiTS prefixes and label suffixes.
    """
    return _split_name(path, role)[0]


def _scan(folder: Path, role: str) -> dict[str, Path]:
    """Map case name -> file for the NIfTI files directly inside ``folder``."""
    if not folder.is_dir():
        raise PairingError(f"{role} folder {folder} does not exist or is not a folder")
    # Label folders prefer label-looking files, image folders image-looking ones.
    rank = {"label": 0, "plain": 1, "image": 2} if role != "image" else {"image": 0, "plain": 1}
    groups: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.iterdir()):
        # Hidden files include the temporary files of interrupted atomic writes.
        if path.name.startswith("."):
            continue
        if role != "image" and path.is_dir():
            if any((path / name).is_file() for name in STRUCTURE_FILES):
                groups.setdefault(case_name(path.name + ".nii"), []).append((0, path))
            continue
        if not path.name.endswith(NIFTI_SUFFIXES):
            continue
        if path.name.endswith(TUMOUR_PROBABILITY_SUFFIX):  # beside a mask, not a mask
            continue
        name, kind = _split_name(path, "image" if role == "image" else "label")
        if kind in rank:
            groups.setdefault(name, []).append((rank[kind], path))
    found: dict[str, Path] = {}
    for name, entries in groups.items():
        best = min(r for r, _ in entries)
        chosen = [p for r, p in entries if r == best]
        if len(chosen) > 1:
            raise PairingError(
                f"several {role} files in {folder} name case {name!r}: {_list_names(chosen)}"
            )
        found[name] = chosen[0]
    return found


def pair_cases(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
) -> list[CasePair]:
    """Pair prediction and reference NIfTI files (or per-structure folders) by case name.

    Args:
        pred_dir: Folder of predicted label maps.
        ref_dir: Folder of reference label maps (may also hold the CT volumes, as LiTS).
        image_dir: Optional folder of CT volumes for the overlays; a case without image
            gets ``image=None`` (its overlay shows the labels alone).
        allow_missing: Keep unpaired files as pairs with ``pred`` or ``ref`` None
            instead of raising (see the module docstring).

    Returns:
        Pairs sorted by case name (numbers in names sort numerically).

    Raises:
        UnpairedCasesError: Unpaired files on either side, each side named.
        PairingError: A missing folder, a folder without NIfTI files, or two files of
            one folder with the same case name.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds, refs = _scan(pred_dir, "prediction"), _scan(ref_dir, "reference")
    for folder, found, role in ((pred_dir, preds, "prediction"), (ref_dir, refs, "reference")):
        if not found:
            raise PairingError(f"no {role} NIfTI files (.nii / .nii.gz) in {folder}")
    images = _scan(Path(image_dir), "image") if image_dir is not None else {}
    only_pred = sorted(preds.keys() - refs.keys())
    only_ref = sorted(refs.keys() - preds.keys())
    if (only_pred or only_ref) and not allow_missing:
        raise UnpairedCasesError([preds[k] for k in only_pred], [refs[k] for k in only_ref])
    return [
        CasePair(name, preds.get(name), refs.get(name), images.get(name))
        for name in sorted(preds.keys() | refs.keys(), key=natural_key)
    ]


def pairs_from_datalist(
    records: Sequence[Mapping[str, Any]],
    pred_dir: str | os.PathLike,
    *,
    image_key: str = "image",
    label_key: str = "label",
    base_dir: str | os.PathLike | None = None,
) -> list[CasePair]:
    """Pair MONAI datalist records with predictions written under ``pred_dir``.

    A record's case name comes from its image file (else its label file); predictions
    are searched in ``pred_dir`` and its sub-folders (MONAI's ``SaveImage`` writes
    ``<name>/<name>_seg.nii.gz`` by default). A record without prediction gets
    ``pred=None``, which :func:`evaluate_pairs` reports as missing.

    Args:
        records: Datalist entries, e.g. ``{"image": ".../volume-3.nii", "label": ...}``.
        pred_dir: Folder the predictions were written to.
        image_key: Key of the CT path in the records.
        label_key: Key of the reference path.
        base_dir: Folder that relative record paths are relative to.

    Returns:
        One pair per record, in record order.

    Raises:
        PairingError: Two predictions with one case name.
    """
    base = Path(base_dir) if base_dir is not None else None

    def resolve(value: Any) -> Path | None:
        if value is None:
            return None
        path = Path(value)
        return base / path if base is not None and not path.is_absolute() else path

    preds: dict[str, Path] = {}
    for path in sorted(Path(pred_dir).rglob("*.nii*")):
        if path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith("."):
            name = case_name(path)
            if name in preds:
                raise PairingError(f"two predictions of case {name!r}: {preds[name]}, {path}")
            preds[name] = path
    pairs = []
    for record in records:
        image, ref = resolve(record.get(image_key)), resolve(record.get(label_key))
        name = case_name(image, "image") if image is not None else case_name(ref or "")
        pairs.append(CasePair(name, preds.get(name), ref, image))
    return pairs
