"""Training data is checked before the first epoch: labels on their image's grid, label
values in 0-2, the bad case named (or left out and listed)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import configs
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from pipeline.data.checks import (
    CheckLabelValuesd,
    TrainingDataError,
    check_training_cases,
    grid_problem,
)
from pipeline.io import save_nifti
from pipeline.training.config_helpers import load_datalist

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
AFFINE[:3, 3] = (-100.0, -120.0, -300.0)


def _pair(folder, name, label_affine=AFFINE, label_shape=(20, 24, 10), values=(0, 1, 2)):
    image = save_nifti(np.zeros((20, 24, 10), np.int16), AFFINE, folder / f"{name}.nii.gz")
    label = np.zeros(label_shape, np.uint8)
    label.flat[: len(values)] = values
    return image, save_nifti(label, label_affine, folder / f"{name}_label.nii.gz")


def test_same_grid_passes_even_stored_in_another_axis_order(tmp_path):
    image, label = _pair(tmp_path, "ok")
    assert grid_problem(image, label, 1.0) is None
    # The same grid with the first axis stored the other way round (LAS against RAS).
    flipped = nib.Nifti1Image(np.zeros((20, 24, 10), np.uint8), AFFINE)
    las = nib.as_closest_canonical(flipped).as_reoriented(np.array([[0, -1], [1, 1], [2, 1]]))
    nib.save(las, tmp_path / "las.nii.gz")
    assert not np.allclose(las.affine, AFFINE)
    assert grid_problem(image, tmp_path / "las.nii.gz", 1.0) is None


def test_shifted_or_reshaped_labels_are_named(tmp_path):
    shifted = AFFINE.copy()
    shifted[2, 3] += 30.0
    image, label = _pair(tmp_path, "shift", label_affine=shifted)
    assert grid_problem(image, label, 1.0).startswith("label grid is 30.0 mm away")
    image, label = _pair(tmp_path, "shape", label_shape=(20, 24, 12))
    assert grid_problem(image, label, 1.0) == (
        "label shape (20, 24, 12) differs from the image's (20, 24, 10)"
    )


def test_a_bad_case_stops_training_naming_both_files_or_is_left_out(tmp_path):
    good = dict(zip(("image", "label"), map(str, _pair(tmp_path, "good")), strict=True))
    shifted = AFFINE.copy()
    shifted[0, 3] += 30.0
    image, label = _pair(tmp_path, "bad", label_affine=shifted)
    split = {"training": [good, {"image": str(image), "label": str(label)}], "validation": [good]}
    with pytest.raises(TrainingDataError, match="1 training case") as raised:
        check_training_cases(split)
    assert str(label) in str(raised.value) and str(image) in str(raised.value)
    kept, bad = check_training_cases(split, skip_bad_cases=True)
    assert kept == {"training": [good], "validation": [good]}
    assert [(b.image, b.label) for b in bad] == [(str(image), str(label))]


def test_label_values_outside_the_classes_name_the_file():
    check = CheckLabelValuesd(keys="label", num_classes=3)
    ok = {"label": MetaTensor(torch.tensor([[0, 1, 2]]))}
    assert check(ok) == ok
    bad = MetaTensor(torch.tensor([[0, 1, 5]]), meta={"filename_or_obj": "/data/seg-7.nii"})
    with pytest.raises(TrainingDataError, match=r"/data/seg-7.nii: label values 5 outside 0-2"):
        check({"label": bad})


@pytest.mark.parametrize(
    ("values", "shown"),
    [([0.0, 1.0, 2.5], "2.5"), ([0.0, float("nan"), 1.0], "nan"), ([-1.0, 0.0, 1.0], "-1")],
)
def test_label_values_that_are_no_class_index_are_named(values, shown):
    check = CheckLabelValuesd(keys="label", num_classes=3)
    bad = MetaTensor(torch.tensor([values]), meta={"filename_or_obj": "/data/seg-8.nii"})
    with pytest.raises(TrainingDataError, match=rf"/data/seg-8.nii: label values {shown} outside"):
        check({"label": bad})


def test_float_and_integer_label_maps_of_class_indices_pass(monkeypatch):
    check = CheckLabelValuesd(keys="label", num_classes=3)

    def no_sort(*args, **kwargs):
        raise AssertionError("a good label map is checked without torch.unique's sort")

    monkeypatch.setattr(torch, "unique", no_sort)
    for dtype in (torch.float32, torch.uint8, torch.int64):
        labels = MetaTensor(torch.tensor([[[0, 2], [1, 1]]], dtype=dtype))
        assert check({"label": labels})["label"] is labels
    assert check({"label": MetaTensor(torch.zeros(1, 0, 4))})["label"].numel() == 0


def _write_dataset(root, bad_shift_mm: float):
    records = []
    for i in range(4):
        label_affine = AFFINE.copy()
        label_affine[1, 3] += bad_shift_mm if i == 3 else 0.0
        image, label = _pair(root, f"case{i}", label_affine=label_affine)
        records.append({"image": str(image), "label": str(label)})
    (root / "datalist.json").write_text(
        json.dumps({"training": records[:2] + records[3:], "validation": records[2:3]})
    )
    return records


def test_load_datalist_lists_left_out_cases(tmp_path):
    records = _write_dataset(tmp_path / "data", bad_shift_mm=30.0)
    out = tmp_path / "run"
    split = load_datalist(str(tmp_path / "data"), "", skip_bad_cases=True, output_dir=str(out))
    assert [c["image"] for c in split["training"]] == [records[0]["image"], records[1]["image"]]
    (excluded,) = json.loads((out / "excluded_cases.json").read_text())["excluded"]
    assert excluded["label"] == records[3]["label"] and "30.0 mm" in excluded["problem"]


def test_the_bundle_checks_the_training_data(tmp_path):
    _write_dataset(tmp_path / "data", bad_shift_mm=30.0)
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml"))
    parser.update({"dataset_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run")})
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("datalist")
    text = repr(raised.value) + "".join(map(repr, (raised.value.__cause__,)))
    assert "case3_label.nii.gz" in text and "30.0 mm away" in text
    parser.update({"skip_bad_cases": True})
    assert len(parser.get_parsed_content("datalist", lazy=False)["training"]) == 2
    label_checks = [
        t for t in parser.get_parsed_content("label_transforms") if isinstance(t, CheckLabelValuesd)
    ]
    assert len(label_checks) == 1
