"""Find the scans and label maps in a user's folder and split them.

The layouts recognised (LiTS, MSD Task03, Kaggle, images/labels, flat NIfTI, DICOM series
folders, datalist JSON) are :mod:`pipeline.data.layouts`. Label values other than the LiTS
ones (e.g. TotalSegmentator's 5 = liver) are handled by ``label_map`` and
:class:`pipeline.transforms.labels.RemapLabelsd`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import partition_dataset

from pipeline.data.layouts import DatasetLayoutError, find_layout, read_datalist
from pipeline.names import natural_key

__all__ = ["DatasetLayoutError", "DiscoveredDataset", "discover_dataset"]


@dataclass
class DiscoveredDataset:
    """Cases found in a folder, with the layout that matched.

    Attributes:
        root: the folder or datalist file given.
        layout: "datalist", "msd", "lits", "kaggle", "images_labels", "flat" or "dicom".
        cases: one dict per case, ``{"case", "image", "label"}`` (label absent when the
            folder holds images only).
        predefined_split: the split of a datalist JSON, if it had one.
        label_map: label remapping to apply when loading (``{5: 1}``: 5 -> 1, rest -> 0).
    """

    root: Path
    layout: str
    cases: list[dict[str, Any]]
    predefined_split: dict[str, list[dict[str, Any]]] | None = None
    label_map: dict[int, int] | None = field(default=None)

    def split(
        self, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
    ) -> dict[str, list[dict[str, Any]]]:
        """Deterministic hold-out split (the datalist's own split when it has one).

        The test cases are the last of the seeded order, whatever ``val_fraction``, so the
        K-fold splits of :meth:`kfold` hold out the same test cases.

        Counts by hand rather than ``monai.data.partition_dataset(ratios=...)``: a data
        set of three or more cases always keeps at least one validation case, which
        MONAI's rounding of ratios does not promise.
        """
        if self.predefined_split is not None:
            return self.predefined_split
        pool, test = self._held_out(test_fraction, seed)
        n = len(pool)
        n_val = int(round((n + len(test)) * val_fraction))
        if n >= 3 and val_fraction > 0:
            n_val = max(n_val, 1)
        n_train = max(n - n_val, 1)
        return {
            "training": pool[:n_train],
            "validation": pool[n_train : n_train + n_val],
            "test": test,
        }

    def _held_out(
        self, test_fraction: float, seed: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The seeded order of the cases, split into (training pool, test cases)."""
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        order = _shuffled(self.cases, seed)
        n_test = int(round(len(order) * test_fraction))
        if test_fraction > 0 and len(order) >= 3:
            n_test = max(n_test, 1)
        return order[: len(order) - n_test], order[len(order) - n_test :]

    def kfold(
        self, n_folds: int, fold: int, seed: int = 0, test_fraction: float = 0.0
    ) -> dict[str, list[dict[str, Any]]]:
        """Fold ``fold`` of a deterministic K-fold split of the cases not held out for test.

        One fold validates, the others train; the test split (the datalist's own, or the
        ``test_fraction`` of :meth:`split`) stays out of every fold.

        Raises:
            ValueError: a fold index outside ``0 .. n_folds - 1``, or fewer cases than folds.
        """
        if n_folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
        if not 0 <= fold < n_folds:
            raise ValueError(f"fold must be in 0 .. {n_folds - 1} for {n_folds} folds, got {fold}")
        if self.predefined_split is not None:
            pool = _shuffled(
                [*self.predefined_split.get("training", []),
                 *self.predefined_split.get("validation", [])],
                seed,
            )  # fmt: skip
            test = list(self.predefined_split.get("test", []))
        else:
            pool, test = self._held_out(test_fraction, seed)
        if len(pool) < n_folds:
            raise ValueError(
                f"{self.root}: {n_folds} folds need at least {n_folds} cases outside the test "
                f"split, found {len(pool)} ({len(test)} held out for test)"
            )
        # Strided folds (case i in fold i mod K): sizes differ by one at most.
        folds = partition_dataset(pool, num_partitions=n_folds, shuffle=False)
        training = [case for i, part in enumerate(folds) if i != fold for case in part]
        return {"training": training, "validation": list(folds[fold]), "test": test}


def _shuffled(cases: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    ordered = sorted(cases, key=lambda c: natural_key(c["case"]))
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation]


def discover_dataset(
    root: str | Path,
    require_labels: bool = True,
    label_map: dict[int, int] | None = None,
) -> DiscoveredDataset:
    """Recognise the layout of ``root`` and list its cases.

    Args:
        root: a dataset folder or a datalist JSON file.
        require_labels: raise when an image has no label (training, evaluation); for
            inference pass False and images without labels are listed alone.
        label_map: optional label remapping recorded on the result.

    Raises:
        DatasetLayoutError: nothing matched, an image has no label, or names disagree;
            the message names the folder and the files it saw.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DatasetLayoutError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix != ".json":
            raise DatasetLayoutError(f"{root}: expected a folder or a datalist .json file")
        found = read_datalist(root)
    else:
        found = find_layout(root, require_labels)
        if found.layout == "datalist":  # the folder's datalist.json: name the file read
            root = root / "datalist.json"
    return DiscoveredDataset(root, found.layout, found.cases, found.predefined_split, label_map)
