from __future__ import annotations

import json

import nibabel as nib

from pipeline.cli import main


def test_synth_writes_msd_layout_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "msd"
    args = [
        "synth",
        "--out",
        str(out),
        "--cases",
        "3",
        "--seed",
        "4",
        "--shape",
        "32",
        "32",
        "32",
        "--layout",
        "msd",
    ]
    assert main(args) == 0
    image = nib.load(out / "imagesTr" / "liver_0.nii.gz")
    label = nib.load(out / "labelsTr" / "liver_0.nii.gz")
    assert image.shape == (32, 32, 32) and image.get_data_dtype() == "int16"
    assert label.get_data_dtype() == "uint8"
    assert (image.affine == label.affine).all()
    datalist = json.loads((out / "datalist.json").read_text())
    assert {k: len(v) for k, v in datalist.items()} == {"training": 1, "validation": 1, "test": 1}
    info = json.loads((out / "phantoms.json").read_text())
    assert len({c["seed"] for c in info["cases"]}) == 3
    before = (out / "imagesTr" / "liver_0.nii.gz").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "imagesTr" / "liver_0.nii.gz").stat().st_mtime_ns == before
    assert "datalist" in capsys.readouterr().out
