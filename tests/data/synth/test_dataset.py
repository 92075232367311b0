from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.data.synth.dataset import write_synthetic_dataset

SHAPE = (32, 32, 24)


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha1(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("*.nii.gz"))
    }


def test_extra_training_cases_leave_validation_and_test_as_they_were(tmp_path):
    write_synthetic_dataset(tmp_path / "base", 5, seed=3, shape=SHAPE, progress=False)
    write_synthetic_dataset(
        tmp_path / "grown", 5, seed=3, shape=SHAPE, progress=False, extra_training_cases=3
    )
    base = json.loads((tmp_path / "base" / "datalist.json").read_text())
    grown = json.loads((tmp_path / "grown" / "datalist.json").read_text())
    assert grown["validation"] == base["validation"]
    assert grown["test"] == base["test"]
    assert [c["image"] for c in grown["training"]] == [
        f"volume-{i}.nii.gz" for i in (0, 1, 2, 5, 6, 7)
    ]
    # Cases 0-4 are byte for byte those of the smaller data set.
    base_files, grown_files = _digests(tmp_path / "base"), _digests(tmp_path / "grown")
    assert {name: grown_files[name] for name in base_files} == base_files
    assert len(grown_files) == 16
    phantoms = json.loads((tmp_path / "grown" / "phantoms.json").read_text())
    assert [c["case"] for c in phantoms["cases"]] == [f"volume-{i}" for i in range(8)]
    assert phantoms["settings"]["extra_training_cases"] == 3


def test_parallel_generation_writes_the_same_files(tmp_path):
    write_synthetic_dataset(tmp_path / "one", 3, seed=9, shape=SHAPE, progress=False)
    write_synthetic_dataset(tmp_path / "two", 3, seed=9, shape=SHAPE, progress=False, workers=2)
    assert _digests(tmp_path / "two") == _digests(tmp_path / "one")
    for name in ("datalist.json", "phantoms.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_a_folder_is_reused_only_for_the_same_request(tmp_path):
    write_synthetic_dataset(tmp_path, 3, seed=1, shape=SHAPE, progress=False)
    marker = tmp_path / "phantoms.json"
    written = marker.stat().st_mtime_ns
    write_synthetic_dataset(tmp_path, 3, seed=1, shape=SHAPE, progress=False, workers=2)
    assert marker.stat().st_mtime_ns == written  # same files whatever the workers: reused
    write_synthetic_dataset(
        tmp_path, 3, seed=1, shape=SHAPE, progress=False, extra_training_cases=1
    )
    assert json.loads(marker.read_text())["settings"]["extra_training_cases"] == 1
    assert (tmp_path / "volume-3.nii.gz").exists()


@pytest.mark.parametrize("bad", [{"extra_training_cases": -1}, {"workers": 0}])
def test_bad_counts_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="extra_training_cases must be >= 0 and workers >= 1"):
        write_synthetic_dataset(tmp_path, 3, shape=SHAPE, progress=False, **bad)


def test_cli_extra_training_cases(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--cases", "4", "--shape", *map(str, SHAPE)]
    assert main([*args, "--extra-train-cases", "2", "--workers", "1"]) == 0
    assert "4 + 2 for training only synthetic cases" in capsys.readouterr().out
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [4, 1, 1]
