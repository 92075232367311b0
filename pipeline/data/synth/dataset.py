"""Write a synthetic dataset to disk in the LiTS or the MSD Task03 layout.

Besides the scans and label maps, the folder receives:

- ``datalist.json``: a MONAI datalist with fixed ``training`` / ``validation`` / ``test``
  keys (paths relative to the folder, as ``load_decathlon_datalist`` expects);
- ``phantoms.json``: every case's drawn parameters (phase, HU, tumours, volumes);
- ``dataset.json`` for the MSD layout, as the Decathlon ships it.

Each case has its own seed derived from (dataset seed, case index) with NumPy's
SeedSequence, so no two cases of a dataset, nor of two datasets with different seeds,
share a seed; the held-out test split therefore never shares a seed with training. A
case is therefore the same however many cases are generated, in which order and by how
many processes, which lets a data set grow its training split (``extra_training_cases``)
while its validation and test cases stay those of the smaller one.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.io import save_nifti, write_json

LAYOUTS = ("lits", "msd")
_COMPLETE_MARKER = "phantoms.json"


def case_seed(dataset_seed: int, index: int) -> int:
    """The seed of case ``index`` of a dataset drawn with ``dataset_seed``."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1)[0])


def case_paths(layout: str, index: int) -> tuple[str, str]:
    """Relative image and label paths of case ``index`` in ``layout``."""
    if layout == "lits":
        return f"volume-{index}.nii.gz", f"segmentation-{index}.nii.gz"
    if layout == "msd":
        return f"imagesTr/liver_{index}.nii.gz", f"labelsTr/liver_{index}.nii.gz"
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def split_indices(n_cases: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    """Fixed split by case index: the last cases are test, the ones before validation.

    At least one validation and one test case are kept when there are three cases or more.
    """
    n_test = int(round(n_cases * test_fraction))
    n_val = int(round(n_cases * val_fraction))
    if n_cases >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    n_train = max(n_cases - n_val - n_test, 1 if n_cases else 0)
    n_val = min(n_val, n_cases - n_train)
    indices = list(range(n_cases))
    return {
        "training": indices[:n_train],
        "validation": indices[n_train : n_train + n_val],
        "test": indices[n_train + n_val :],
    }


def _write_case(
    out: Path, layout: str, seed: int, config: PhantomConfig, index: int
) -> dict[str, Any]:
    """Generate and save case ``index``; return its ``phantoms.json`` entry."""
    image_rel, label_rel = case_paths(layout, index)
    phantom = generate_phantom(case_seed(seed, index), config)
    save_nifti(phantom.image, phantom.affine, out / image_rel)
    save_nifti(phantom.label, phantom.affine, out / label_rel)
    return {
        "case": Path(image_rel).name.split(".")[0],
        "image": image_rel,
        "label": label_rel,
        **phantom.info,
    }


def write_synthetic_dataset(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    shape: tuple[int, int, int] = (96, 96, 64),
    layout: str = "lits",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    progress: bool = True,
    extra_training_cases: int = 0,
    workers: int = 1,
    **phantom_options: Any,
) -> Path:
    """Generate ``n_cases`` phantoms into ``out_dir``; return the datalist path.

    A folder already holding the same request (same ``phantoms.json`` settings) is
    reused as it is, which makes this safe to call at the start of every training run.

    Args:
        out_dir: destination folder (created).
        n_cases: number of cases split into training / validation / test.
        seed: dataset seed; case seeds derive from it.
        shape: voxels per case.
        layout: "lits" or "msd".
        val_fraction: share of the ``n_cases`` in the validation split.
        test_fraction: share of the ``n_cases`` in the held-out test split.
        progress: show a tqdm progress bar.
        extra_training_cases: cases ``n_cases``, ``n_cases + 1``... generated as well and
            added to the training split only: more training data while the validation
            and test cases stay those of ``n_cases`` alone.
        workers: processes generating cases at once (the files are the same for any
            number: each case has its own seed).
        **phantom_options: further :class:`PhantomConfig` fields (phase, spacing...).
    """
    if extra_training_cases < 0 or workers < 1:
        raise ValueError(
            f"extra_training_cases must be >= 0 and workers >= 1, got "
            f"{extra_training_cases} and {workers}"
        )
    out = Path(out_dir)
    settings = {
        "n_cases": int(n_cases),
        "seed": int(seed),
        "shape": [int(s) for s in shape],
        "layout": layout,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "phantom_options": phantom_options,
    }
    if extra_training_cases:
        # Only when used, so folders written before this option are still reused.
        settings["extra_training_cases"] = int(extra_training_cases)
    marker = out / _COMPLETE_MARKER
    datalist_path = out / "datalist.json"
    if marker.exists() and datalist_path.exists():
        if json.loads(marker.read_text()).get("settings") == settings:
            return datalist_path
    split = split_indices(n_cases, val_fraction, test_fraction)
    total = n_cases + extra_training_cases
    split["training"] = split["training"] + list(range(n_cases, total))
    write_case = partial(
        _write_case, out, layout, seed, PhantomConfig(shape=tuple(shape), **phantom_options)
    )
    bar = partial(tqdm, desc="synthetic CT", disable=not progress, unit="case", total=total)
    if workers == 1:
        cases = [write_case(index) for index in bar(range(total))]
    else:
        # spawn: the caller may hold threads (torch), which fork does not carry safely.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, max(total, 1)), mp_context=context) as pool:
            cases = list(bar(pool.map(write_case, range(total))))
    datalist = {
        part: [{"image": cases[i]["image"], "label": cases[i]["label"]} for i in idx]
        for part, idx in split.items()
    }
    if layout == "msd":
        write_json(_msd_dataset_json(cases), out / "dataset.json")
    write_json(datalist, datalist_path)
    # Written last: its presence means the folder is complete.
    write_json({"settings": settings, "cases": cases}, marker)
    return datalist_path


def _msd_dataset_json(cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "Liver (synthetic)",
        "description": "Synthetic abdominal CT phantoms, MSD Task03 layout",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [{"image": f"./{c['image']}", "label": f"./{c['label']}"} for c in cases],
        "test": [],
    }
