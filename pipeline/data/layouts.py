"""Recognise a dataset folder's layout and list its cases (the layout finders).

Recognised, in this order:

- a MONAI datalist JSON file (or a folder holding ``datalist.json``), whose ``training`` /
  ``validation`` / ``test`` keys are kept as the split;
- MSD Task03: ``dataset.json`` with ``imagesTr/`` and ``labelsTr/`` (macOS ``._`` files
  ignored);
- LiTS: ``volume-N.nii[.gz]`` and ``segmentation-N.nii[.gz]`` anywhere below the folder
  (also the Kaggle "Liver Tumor Segmentation" copy of LiTS, whose volumes sit in
  ``volume_pt1`` ... ``volume_pt5`` and labels in ``segmentations/``);
- ``images/`` with ``labels/`` (or ``masks/``) holding files of the same names;
- a flat folder of scans with ``<name>_seg`` / ``_label`` / ``_mask`` label files;
- sub-folders that each hold one DICOM series (labels, when present, are NIfTI files
  named after the sub-folder, beside it or in ``labels/``).

Every case is a dict ``{"case", "image", "label"?}`` with absolute paths.
:func:`pipeline.data.datalist.discover_dataset` turns a match into a split-able data set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.names import NIFTI_SUFFIXES, natural_key, strip_nifti_suffix

_LABEL_TAGS = ("_seg", "_label", "_labels", "_mask", "_gt")


class DatasetLayoutError(ValueError):
    """A folder's content does not form a dataset; the message names what was seen."""


@dataclass
class LayoutMatch:
    """What a layout finder found.

    Attributes:
        layout: "datalist", "msd", "lits", "kaggle", "images_labels", "flat" or "dicom".
        cases: one dict per case, ``{"case", "image", "label"}`` (label absent when the
            folder holds images only).
        predefined_split: the split of a datalist JSON, if it had one.
    """

    layout: str
    cases: list[dict[str, Any]]
    predefined_split: dict[str, list[dict[str, Any]]] | None = None


def find_layout(root: Path, require_labels: bool) -> LayoutMatch:
    """The first layout of the module's list that ``root`` (a folder) matches.

    Raises:
        DatasetLayoutError: nothing matched, an image has no label (with
            ``require_labels``), or names disagree; the message names the folder and the
            files it saw.
    """
    for finder in (
        _find_datalist,
        _find_msd,
        _find_lits,
        _find_images_labels,
        _find_dicom,
        _find_flat,
    ):
        found = finder(root, require_labels)
        if found is not None:
            return found
    seen = sorted(p.name for p in root.iterdir())[:20]
    raise DatasetLayoutError(
        f"{root}: no known dataset layout (LiTS, MSD Task03, Kaggle, images/labels, flat "
        f"NIfTI, DICOM series folders, datalist JSON); it holds: {seen or 'nothing'}"
    )


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` carries the DICOM magic word (b"DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one DICOM file."""
    return any(p.is_file() and is_dicom_file(p) for p in sorted(folder.iterdir())[:50])


def read_datalist(path: Path) -> LayoutMatch:
    """The cases and split of a MONAI datalist JSON (paths relative to its folder)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetLayoutError(f"{path}: not a readable JSON datalist ({err})") from err
    base = path.parent
    split: dict[str, list[dict[str, Any]]] = {}
    for part in ("training", "validation", "test"):
        entries = content.get(part, [])
        records = []
        for entry in entries:
            record = {"image": entry} if isinstance(entry, str) else dict(entry)
            for key in ("image", "label"):
                if key in record:
                    resolved = (base / record[key]).resolve()
                    if not resolved.exists():
                        raise DatasetLayoutError(
                            f"{path}: '{part}' lists {record[key]}, which does not exist"
                        )
                    record[key] = str(resolved)
            record.setdefault("case", _case_name(Path(record["image"])))
            records.append(record)
        split[part] = records
    cases = [c for part in split.values() for c in part]
    if not cases:
        raise DatasetLayoutError(f"{path}: no 'training', 'validation' or 'test' entries")
    return LayoutMatch("datalist", cases, split)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and strip_nifti_suffix(p.name) is not None
        ),
        key=lambda p: natural_key(p.name),
    )


def _case_name(path: Path) -> str:
    return strip_nifti_suffix(path.name) or path.name


def _find_datalist(root: Path, require_labels: bool) -> LayoutMatch | None:
    candidate = root / "datalist.json"
    return read_datalist(candidate) if candidate.is_file() else None


def _pair_by_name(images: list[Path], labels: list[Path], where: Path, require: bool) -> list[dict]:
    by_name = {_case_name(p): p for p in labels}
    cases, unpaired = [], []
    for image in images:
        name = _case_name(image)
        label = by_name.pop(name, None)
        if label is None and require:
            unpaired.append(image.name)
        cases.append(
            {"case": name, "image": str(image), **({"label": str(label)} if label else {})}
        )
    if unpaired:
        raise DatasetLayoutError(f"{where}: images without a label file: {unpaired[:10]}")
    if by_name:
        raise DatasetLayoutError(f"{where}: label files without an image: {sorted(by_name)[:10]}")
    return cases


def _find_msd(root: Path, require_labels: bool) -> LayoutMatch | None:
    if not (root / "imagesTr").is_dir():
        return None
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        raise DatasetLayoutError(f"{root}: has imagesTr/ but no labelsTr/")
    listed = _msd_training_list(root)
    if listed is not None:
        return LayoutMatch("msd", listed)
    cases = _pair_by_name(_nifti_files(root / "imagesTr"), _nifti_files(labels_dir), root, True)
    if not cases:
        raise DatasetLayoutError(f"{root / 'imagesTr'}: no NIfTI files")
    return LayoutMatch("msd", cases)


def _msd_training_list(root: Path) -> list[dict[str, Any]] | None:
    """The labelled cases ``dataset.json`` lists under ``training``, if it lists any.

    The data set's own pairing wins over pairing files by name. Its ``test`` list has no
    labels: it is for inference, and the held-out test split is drawn from the training
    list (``DiscoveredDataset.split``).
    """
    path = root / "dataset.json"
    try:
        entries = json.loads(path.read_text()).get("training") if path.is_file() else None
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetLayoutError(f"{path}: not a readable MSD dataset.json ({err})") from err
    if not entries:
        return None
    cases, missing = [], []
    for entry in entries:
        image, label = (root / entry[key] for key in ("image", "label"))
        missing += [str(p) for p in (image, label) if not p.is_file()]
        cases.append({"case": _case_name(image), "image": str(image), "label": str(label)})
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise DatasetLayoutError(f"{path} lists {len(missing)} missing file(s): {shown}")
    return cases


_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_LITS_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")


def _find_lits(root: Path, require_labels: bool) -> LayoutMatch | None:
    volumes, segmentations = {}, {}
    for path in root.rglob("*.nii*"):
        if path.name.startswith("."):
            continue
        for pattern, store in ((_LITS_VOLUME, volumes), (_LITS_SEGMENTATION, segmentations)):
            match = pattern.match(path.name)
            if match:
                number = int(match.group(1))
                if number in store:
                    raise DatasetLayoutError(
                        f"{root}: case {number} found twice: {store[number]} and {path}"
                    )
                store[number] = path
    if not volumes and not segmentations:
        return None
    missing = sorted(set(volumes) - set(segmentations))
    if missing and require_labels:
        raise DatasetLayoutError(
            f"{root}: volumes without segmentation: {[volumes[n].name for n in missing[:10]]}"
        )
    orphans = sorted(set(segmentations) - set(volumes))
    if orphans:
        raise DatasetLayoutError(
            f"{root}: segmentations without volume: {[segmentations[n].name for n in orphans[:10]]}"
        )
    cases = []
    for number in sorted(volumes):
        case = {"case": f"volume-{number}", "image": str(volumes[number])}
        if number in segmentations:
            case["label"] = str(segmentations[number])
        cases.append(case)
    kaggle = (root / "segmentations").is_dir() and any(root.glob("volume_pt*"))
    return LayoutMatch("kaggle" if kaggle else "lits", cases)


def _find_images_labels(root: Path, require_labels: bool) -> LayoutMatch | None:
    if not (root / "images").is_dir():
        return None
    labels_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if labels_dir is None and require_labels:
        raise DatasetLayoutError(f"{root}: has images/ but no labels/ or masks/ folder")
    labels = _nifti_files(labels_dir) if labels_dir else []
    cases = _pair_by_name(_nifti_files(root / "images"), labels, root, require_labels)
    return LayoutMatch("images_labels", cases) if cases else None


def _find_dicom(root: Path, require_labels: bool) -> LayoutMatch | None:
    if is_dicom_folder(root):
        series = [root]
        label_dirs = [root.parent]
    else:
        series = [p for p in sorted(root.iterdir()) if p.is_dir() and is_dicom_folder(p)]
        label_dirs = [root, root / "labels"]
    if not series:
        return None
    cases, unlabelled = [], []
    for folder in series:
        case: dict[str, Any] = {"case": folder.name, "image": str(folder)}
        for label_dir in label_dirs:
            for tag in ("", *_LABEL_TAGS):
                for suffix in NIFTI_SUFFIXES:
                    candidate = label_dir / f"{folder.name}{tag}{suffix}"
                    if "label" not in case and candidate.is_file():
                        case["label"] = str(candidate)
        if "label" not in case:
            unlabelled.append(folder.name)
        cases.append(case)
    if unlabelled and require_labels:
        raise DatasetLayoutError(
            f"{root}: DICOM series without a label NIfTI (expected <series>_seg.nii.gz beside "
            f"it or labels/<series>.nii.gz): {unlabelled[:10]}"
        )
    return LayoutMatch("dicom", cases)


def _find_flat(root: Path, require_labels: bool) -> LayoutMatch | None:
    files = _nifti_files(root)
    if not files:
        return None
    names = {_case_name(p): p for p in files}
    labels = {}
    for name, path in names.items():
        for tag in _LABEL_TAGS:
            if name.endswith(tag) and name[: -len(tag)] in names:
                labels[name[: -len(tag)]] = path
    images = [p for n, p in names.items() if n not in {_case_name(v) for v in labels.values()}]
    cases, unlabelled = [], []
    for image in images:
        name = _case_name(image)
        case = {"case": name, "image": str(image)}
        if name in labels:
            case["label"] = str(labels[name])
        else:
            unlabelled.append(image.name)
        cases.append(case)
    if unlabelled and require_labels:
        raise DatasetLayoutError(
            f"{root}: scans without a label file (<name>_seg.nii.gz): {unlabelled[:10]}"
        )
    return LayoutMatch("flat", cases)
