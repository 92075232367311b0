from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.datalist import DatasetLayoutError, discover_dataset
from pipeline.data.synth.dataset import write_synthetic_dataset
from pipeline.transforms.labels import RemapLabelsd


def test_lits_layout_pairs(tiny_lits):
    found = discover_dataset(tiny_lits)
    assert found.layout == "datalist"  # the generator's datalist.json takes precedence
    assert found.root == tiny_lits / "datalist.json"  # what messages name: the file read
    (tiny_lits / "datalist.json").rename(tiny_lits / "saved.json")
    try:
        found = discover_dataset(tiny_lits)
    finally:
        (tiny_lits / "saved.json").rename(tiny_lits / "datalist.json")
    assert found.layout == "lits"
    assert [c["case"] for c in found.cases] == [f"volume-{i}" for i in range(5)]
    for case in found.cases:
        number = case["case"].split("-")[1]
        assert Path(case["label"]).name == f"segmentation-{number}.nii.gz"


def test_msd_layout_pairs_and_ignores_dot_files(tmp_path):
    write_synthetic_dataset(tmp_path, 3, seed=2, shape=(32, 32, 32), layout="msd", progress=False)
    (tmp_path / "datalist.json").unlink()
    (tmp_path / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"mac resource fork")
    found = discover_dataset(tmp_path)
    assert found.layout == "msd"
    assert [(Path(c["image"]).name, Path(c["label"]).parent.name) for c in found.cases] == [
        (f"liver_{i}.nii.gz", "labelsTr") for i in range(3)
    ]
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert dataset["numTraining"] == 3


def test_generated_datalist_split_is_fixed(tiny_lits):
    found = discover_dataset(tiny_lits / "datalist.json")
    split = found.split()
    assert [len(split[k]) for k in ("training", "validation", "test")] == [3, 1, 1]
    assert Path(split["test"][0]["image"]).name == "volume-4.nii.gz"


def test_kaggle_layout(tiny_lits, tmp_path):
    (tmp_path / "volume_pt1").mkdir()
    (tmp_path / "segmentations").mkdir()
    for i in range(2):
        shutil.copy(tiny_lits / f"volume-{i}.nii.gz", tmp_path / "volume_pt1")
        shutil.copy(tiny_lits / f"segmentation-{i}.nii.gz", tmp_path / "segmentations")
    found = discover_dataset(tmp_path)
    assert found.layout == "kaggle"
    assert len(found.cases) == 2


def test_flat_and_images_labels_layouts(tiny_lits, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tiny_lits / "volume-0.nii.gz", flat / "case_a.nii.gz")
    shutil.copy(tiny_lits / "segmentation-0.nii.gz", flat / "case_a_seg.nii.gz")
    found = discover_dataset(flat)
    assert found.layout == "flat"
    assert found.cases == [
        {
            "case": "case_a",
            "image": str(flat / "case_a.nii.gz"),
            "label": str(flat / "case_a_seg.nii.gz"),
        }
    ]
    paired = tmp_path / "paired"
    (paired / "images").mkdir(parents=True)
    (paired / "labels").mkdir()
    shutil.copy(tiny_lits / "volume-1.nii.gz", paired / "images" / "p1.nii.gz")
    shutil.copy(tiny_lits / "segmentation-1.nii.gz", paired / "labels" / "p1.nii.gz")
    found = discover_dataset(paired)
    assert found.layout == "images_labels" and found.cases[0]["case"] == "p1"


def test_split_is_deterministic_and_kfold_covers_every_case(tiny_lits, tmp_path):
    for i in range(5):
        shutil.copy(tiny_lits / f"volume-{i}.nii.gz", tmp_path)
        shutil.copy(tiny_lits / f"segmentation-{i}.nii.gz", tmp_path)
    found = discover_dataset(tmp_path)
    assert found.split(0.2, 0.2, seed=3) == found.split(0.2, 0.2, seed=3)
    assert found.split(0.2, 0.2, seed=3) != found.split(0.2, 0.2, seed=4)
    validated = [c["case"] for fold in range(5) for c in found.kfold(5, fold)["validation"]]
    assert sorted(validated) == sorted(c["case"] for c in found.cases)


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda d: (
                (d / "imagesTr").mkdir()
                or (d / "labelsTr").mkdir()
                or (d / "imagesTr" / "liver_9.nii.gz").write_bytes(b"x")
            ),
            "liver_9.nii.gz",
        ),
        (lambda d: (d / "segmentation-3.nii").write_bytes(b"x"), "segmentation-3.nii"),
        (lambda d: (d / "scan.nii.gz").write_bytes(b"x"), "scan.nii.gz"),
        (lambda d: (d / "notes.txt").write_text("hello"), "notes.txt"),
        (lambda d: (d / "imagesTr").mkdir(), "labelsTr"),
    ],
    ids=[
        "msd-unlabelled",
        "lits-orphan-segmentation",
        "flat-unlabelled",
        "unknown",
        "msd-no-labels",
    ],
)
def test_malformed_layouts_name_the_file(tmp_path, make, expected):
    make(tmp_path)
    with pytest.raises(DatasetLayoutError) as err:
        discover_dataset(tmp_path)
    assert expected in str(err.value) and str(tmp_path) in str(err.value)


def test_datalist_listing_a_missing_file(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "gone.nii.gz"}]}))
    with pytest.raises(DatasetLayoutError, match="gone.nii.gz"):
        discover_dataset(tmp_path / "list.json")


def test_images_without_labels_allowed_for_inference(tmp_path, tiny_lits):
    shutil.copy(tiny_lits / "volume-0.nii.gz", tmp_path / "scan.nii.gz")
    found = discover_dataset(tmp_path, require_labels=False)
    assert found.cases == [{"case": "scan", "image": str(tmp_path / "scan.nii.gz")}]


def test_real_dicom_series_is_discovered_and_loads(real_ct_dir):
    from monai.transforms import LoadImage

    found = discover_dataset(real_ct_dir / "abdomen_ct_dicom", require_labels=False)
    assert found.layout == "dicom" and len(found.cases) == 1
    image = LoadImage(image_only=True, reader="ITKReader")(found.cases[0]["image"])
    assert tuple(image.shape) == (512, 512, 20)
    # Spacing from the DICOM headers: 0.977 mm in-plane, 2 mm slices.
    np.testing.assert_allclose(image.pixdim[:3].numpy(), [0.977, 0.977, 2.0], atol=0.01)


def test_remap_labels_keeps_only_mapped_values():
    label = torch.tensor([[0, 1, 5, 5, 7]])
    out = RemapLabelsd("label", {5: 1})({"label": label})["label"]
    assert out.tolist() == [[0, 0, 1, 1, 0]]
    unchanged = RemapLabelsd("label", None)({"label": label})["label"]
    assert unchanged.tolist() == label.tolist()
