"""Splits of a user's data set: a held-out test split, K folds around it, clear refusals."""

from __future__ import annotations

import json

import pytest

from pipeline.data.datalist import discover_dataset
from pipeline.data.synth.dataset import write_synthetic_dataset
from pipeline.training.config_helpers import load_datalist
from pipeline.workflows.checkpoint_evaluation import split_records


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd")
    write_synthetic_dataset(root, 10, seed=4, shape=(24, 24, 16), layout="msd", progress=False)
    (root / "datalist.json").unlink()  # as MSD Task03 comes: dataset.json, no split of ours
    return root


def _names(cases):
    return {case["case"] for case in cases}


def test_msd_layout_gets_a_disjoint_deterministic_test_split(msd, tmp_path):
    found = discover_dataset(msd)
    assert found.layout == "msd"
    split = found.split(val_fraction=0.2, test_fraction=0.2, seed=0)
    parts = [_names(split[k]) for k in ("training", "validation", "test")]
    assert [len(p) for p in parts] == [6, 2, 2]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == _names(found.cases)
    assert found.split(val_fraction=0.2, test_fraction=0.2, seed=0) == split
    other = found.split(val_fraction=0.2, test_fraction=0.2, seed=1)
    assert _names(other["test"]) != parts[2]
    # The bundle's loader writes which cases went where.
    load_datalist(str(msd), "", test_fraction=0.2, output_dir=str(tmp_path))
    written = json.loads((tmp_path / "split.json").read_text())
    assert set(written["test"]) == parts[2]


def test_folds_cover_the_cases_outside_the_same_test_split(msd):
    found = discover_dataset(msd)
    test = _names(found.split(val_fraction=0.2, test_fraction=0.2, seed=0)["test"])
    folds = [found.kfold(3, k, seed=0, test_fraction=0.2) for k in range(3)]
    validations = [_names(f["validation"]) for f in folds]
    assert all(_names(f["test"]) == test for f in folds)
    assert sorted(len(v) for v in validations) == [2, 3, 3]
    assert set().union(*validations) == _names(found.cases) - test
    for fold, validation in zip(folds, validations, strict=True):
        assert not validation & _names(fold["training"]) and not test & _names(fold["training"])


def test_too_few_cases_and_bad_fold_indices_are_refused_before_training(msd):
    found = discover_dataset(msd)
    with pytest.raises(ValueError, match=r"fold must be in 0 .. 2 for 3 folds, got 3"):
        found.kfold(3, 3)
    with pytest.raises(ValueError, match=r"9 folds need at least 9 cases .* found 8 \(2 held out"):
        found.kfold(9, 0, test_fraction=0.2)
    with pytest.raises(ValueError, match="at least 2 folds"):
        found.kfold(1, 0)


def test_evaluating_refuses_to_call_validation_cases_test():
    datalist = {"training": [{"image": "a"}], "validation": [{"image": "b"}], "test": []}
    with pytest.raises(ValueError, match="its validation cases chose the checkpoint"):
        split_records(datalist, "test")
    assert split_records(datalist, "validation") == ("validation", [{"image": "b"}])


def test_msd_dataset_json_training_list_is_honoured(tmp_path):
    root = tmp_path / "msd"
    write_synthetic_dataset(root, 4, seed=2, shape=(16, 16, 16), layout="msd", progress=False)
    (root / "datalist.json").unlink()
    dataset = json.loads((root / "dataset.json").read_text())
    # The data set's own list pairs liver_3's image with liver_2's label: it wins over names.
    dataset["training"] = dataset["training"][:3]
    dataset["training"][2]["label"] = "./labelsTr/liver_2.nii.gz"
    dataset["training"][2]["image"] = "./imagesTr/liver_3.nii.gz"
    (root / "dataset.json").write_text(json.dumps(dataset))
    found = discover_dataset(root)
    assert [(c["case"], c["label"].rsplit("/", 1)[1]) for c in found.cases] == [
        ("liver_0", "liver_0.nii.gz"),
        ("liver_1", "liver_1.nii.gz"),
        ("liver_3", "liver_2.nii.gz"),
    ]
    dataset["training"].append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/x.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(ValueError, match=r"dataset.json lists 2 missing file\(s\): .*gone.nii.gz"):
        discover_dataset(root)
