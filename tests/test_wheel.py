"""The package works when installed: a wheel in a fresh venv, used from another folder.

The wheel carries the bundle's configs (``pipeline.bundle_configs``), so
``pipeline.predict`` builds the inference pipeline with no checkout. The fresh venv reuses
this environment's dependencies through a plain ``.pth`` path line (no download, and the
editable install of this checkout is not activated: ``.pth`` files in that folder are
not processed), and gets the wheel itself with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_files import ROOT

import pipeline
from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.io import save_nifti
from pipeline.nets.networks import build_network

TINY = {
    "pixdim": [6.0, 6.0, 6.0],
    "roi_size": [32, 32, 32],
    "channels": [8, 16, 32, 64],
    "num_res_units": 1,
    "device": "cpu",
    "progress": False,
}
PREDICT_SCRIPT = """
import json, sys
import numpy as np
import pipeline
scan, ckpt, out, overrides = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
result = pipeline.predict(scan, ckpt=ckpt, **overrides)
np.save(out, result.labels)
from pipeline.bundle import config_dir
print(json.dumps({"package": pipeline.__file__, "configs": str(config_dir()),
                  "affine": result.affine.tolist(),
                  "liver_ml": result.quantification["liver_volume_ml"]}))
"""


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Without build isolation when setuptools is here: no download for the build backend.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            *isolation,
            str(ROOT),
            "-w",
            str(out),
        ],
        cwd=out,
    )
    (found,) = out.glob("liver_tumor_pipeline-*.whl")
    return found


def test_wheel_holds_every_subpackage_and_the_bundle_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    subpackages = sorted(
        str(p.parent.relative_to(ROOT)) for p in (ROOT / "pipeline").rglob("__init__.py")
    )
    missing = [s for s in subpackages if f"{s}/__init__.py" not in names]
    assert not missing, f"setup.cfg's package list lacks {missing}"
    configs = {n.split("/")[-1] for n in names if n.startswith("pipeline/bundle_configs/")}
    assert {"common.yaml", "train.yaml", "inference.yaml", "metadata.json", "quick.yaml"} <= configs


@pytest.mark.slow
def test_installed_wheel_segments_a_phantom_from_another_folder(tmp_path, wheel):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
        ).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp_path
    )

    phantom = generate_phantom(3, PhantomConfig(shape=(48, 48, 40)))
    scan = save_nifti(phantom.image, phantom.affine, tmp_path / "phantom.nii.gz")
    torch.manual_seed(0)
    net = build_network(
        "unet", channels=TINY["channels"], num_res_units=1, norm="instance",
        roi_size=TINY["roi_size"], spacing=TINY["pixdim"],
    )  # fmt: skip
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = tmp_path / "predict.py"
    script.write_text(PREDICT_SCRIPT)
    out = tmp_path / "installed.npy"
    printed = _run(
        [str(python), str(script), str(scan), str(ckpt), str(out), json.dumps(TINY)], elsewhere
    )
    record = json.loads(printed.strip().splitlines()[-1])
    # It ran the installed copy with its packaged configs, not this checkout.
    assert Path(record["package"]).is_relative_to(venv), record["package"]
    assert Path(record["configs"]).is_relative_to(venv), record["configs"]
    installed = np.load(out)
    assert installed.shape == phantom.image.shape
    np.testing.assert_allclose(record["affine"], phantom.affine, atol=1e-6)
    # Seeded weights give all three labels here, so the comparison below cannot pass by
    # two constant masks agreeing.
    assert set(np.unique(installed)) == {0, 1, 2}
    # The same weights through this checkout's configs give the same mask, voxel for voxel.
    here = pipeline.predict(scan, ckpt=ckpt, **TINY)
    np.testing.assert_array_equal(installed, here.labels)
    assert record["liver_ml"] == pytest.approx(here.quantification["liver_volume_ml"])
    # The QC verdict comes back with the mask, and agrees with its reasons.
    assert here.qc["verdict"] == ("warn" if here.qc["reasons"] else "pass")
    assert all(reason.startswith("warn: ") for reason in here.qc["reasons"])
