"""Render report.html in headless Chromium: the page loads, every image decodes, numbers show.

Skips when Chromium is not installed (.ci/run installs it with apt-get when it can).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from pipeline.evaluation.scoring import evaluate_pairs, pair_cases
from pipeline.io import save_nifti

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not found on PATH (install it: apt-get install chromium); "
    "the HTML report cannot be rendered without a browser",
)
SPACING = (0.8, 0.8, 2.0)
# Runs after every image has loaded or failed, then writes the counts into the DOM.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0);
  const div = document.createElement("div");
  div.id = "img-check";
  div.dataset.total = images.length;
  div.dataset.loaded = ok.length;
  document.body.appendChild(div);
});
</script>"""
# A PNG data URI that does not decode: proves the check can see a broken picture.
BROKEN_IMAGE = '<img src="data:image/png;base64,iVBORw0KGgoAAAAN" alt="broken">'


def _chromium(tmp_path: Path, *args: str) -> str:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """Two constructed cases with hand-known Dice (see tests/test_evaluation.py)."""
    root = tmp_path_factory.mktemp("html")
    affine = np.diag([*SPACING, 1.0])
    for case_id, shift, z1, tumour_x in (("a", 3, 20, 12), ("b", 0, 15, None)):
        ref = np.zeros((40, 40, 32), dtype=np.uint8)
        ref[5:25, 5:25, 5:20] = 1
        pred = np.zeros_like(ref)
        pred[5 + shift : 25 + shift, 5:25, 5:z1] = 1
        if tumour_x is not None:
            ref[10:16, 10:16, 8:12] = 2
            pred[tumour_x : tumour_x + 6, 10:16, 8:12] = 2
        save_nifti(pred, affine, root / "pred" / f"{case_id}_seg.nii.gz")
        save_nifti(ref, affine, root / "ref" / f"{case_id}.nii.gz")
        ct = np.where(ref > 0, 90, -50).astype(np.int16)
        save_nifti(ct, affine, root / "images" / f"{case_id}_0000.nii.gz")
    (root / "metrics.csv").write_text(
        "epoch,loss,liver_dice,tumour_dice,mean_dice,lr,seconds\n1,0.9,0.5,0.1,0.3,1e-3,2\n"
        "2,0.6,0.8,0.4,0.6,5e-4,4\n"
    )
    pairs = pair_cases(root / "pred", root / "ref", root / "images")
    out = root / "report"
    evaluate_pairs(pairs, out, training_metrics_csv=root / "metrics.csv", progress=False)
    return out


def _cells(dom: str, first_cell: str) -> list[str]:
    """Text of the cells of the first table row whose first cell is ``first_cell``."""
    for row in re.findall(r"<tr>(.*?)</tr>", dom, flags=re.S):
        cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(
            r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)]  # fmt: skip
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_report_renders_with_every_image_loaded(report, tmp_path):
    page = tmp_path / "page.html"
    html = (report / "report.html").read_text()
    page.write_text(html.replace("</body>", IMAGE_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    check = re.search(r'id="img-check" data-total="(\d+)" data-loaded="(\d+)"', dom)
    assert check, "the page did not finish loading (no load event)"
    # bar chart, strip plot, burden scatter, 2 overlays, training curves
    assert check.groups() == ("6", "6")

    liver, tumour = _cells(dom, "liver"), _cells(dom, "tumour")
    # columns: class, n, Dice mean, Dice median, Dice global, ...
    assert liver[1:5] == ["2", "0.825 ± 0.035", "0.825", f"{2 * 9100 / 22000:.3f}"]
    # tumour: case a 2/3, case b empty in both (Dice 1 by policy)
    assert tumour[1:5] == ["2", "0.833 ± 0.236", "0.833", f"{2 * 96 / 288:.3f}"]
    # ASSD, HD95, NSD: undefined for case b (no reference tumour), so over one case
    assert all(cell.endswith("(n=1)") for cell in tumour[8:11]), tumour
    case_a = _cells(dom, "a")
    assert case_a[1:3] == [f"{(0.85 + 2 / 3) / 2:.3f}", "0.850"]


def test_broken_image_is_detected(report, tmp_path):
    page = tmp_path / "page.html"
    html = (report / "report.html").read_text()
    page.write_text(html.replace("</body>", BROKEN_IMAGE + IMAGE_CHECK + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    check = re.search(r'id="img-check" data-total="(\d+)" data-loaded="(\d+)"', dom)
    assert check and check.groups() == ("7", "6")


def test_screenshot_is_not_blank(report, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
              (report / "report.html").as_uri())  # fmt: skip
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not a blank page
