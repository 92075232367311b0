"""The per-case slice viewer: sprite geometry and orientation, CT window, page, browser.

Expected tiles and pixels come from world coordinates, not from the code under test: in
radiological display the patient's right (larger world x) is on the image left, anterior
(larger y) and superior (larger z) at the top, and slices are numbered from inferior
(axial), posterior (coronal) and the patient's left (sagittal).
"""

from __future__ import annotations

import base64
import io
import json
import re
from html import unescape
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

# The project's headless Chromium runner (skip condition and flags in one place).
from test_report_html import CHROMIUM, _chromium

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.evaluation.report import viewer_sprites
from pipeline.evaluation.report.figures import LIVER_COLOUR, TUMOUR_COLOUR
from pipeline.evaluation.report.viewer import (
    SpriteAxis,
    build_sprites,
    render_viewer,
    viewer_relpath,
    write_viewer,
)
from pipeline.evaluation.report.writer import build_report
from pipeline.evaluation.scoring import evaluate_pairs, pair_cases
from pipeline.io import save_nifti

RAS_SHAPE = (20, 24, 16)  # voxels along world x, y, z
RAS_SPACING = (0.8, 0.8, 5.0)  # thick slices: must not look squashed
MARK = {"x": 3, "y": 5, "z": 10}  # a voxel index along each world axis (of the stored array)
TUMOUR_RGB = tuple(int(TUMOUR_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
LIVER_RGB = tuple(int(LIVER_COLOUR[i : i + 2], 16) for i in (1, 3, 5))


def _affine(codes: str) -> np.ndarray:
    """Affine of an array stored with axis codes ``codes`` (e.g. "LPS", "SLP")."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, code in enumerate(codes):
        world = "RAS".find(code) if code in "RAS" else "LPI".find(code)
        affine[world, axis] = (1.0 if code in "RAS" else -1.0) * RAS_SPACING[world]
    affine[:3, 3] = (-7.0, 11.0, -40.0)  # any origin
    return affine


def _world_axis(affine: np.ndarray, axis: int) -> int:
    return int(np.argmax(np.abs(affine[:3, axis])))


def _marked_case(codes: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Labels with one tumour voxel, stored as ``codes``; returns labels, affine, voxel."""
    affine = _affine(codes)
    shape = tuple(RAS_SHAPE[_world_axis(affine, a)] for a in range(3))
    voxel = tuple(MARK["xyz"[_world_axis(affine, a)]] for a in range(3))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[voxel] = 2
    return labels, affine, voxel


def _expected(affine: np.ndarray, shape: tuple[int, ...], voxel: tuple[int, ...]) -> dict:
    """Tile and (row, column) of ``voxel`` per pane, counted from world coordinates."""
    centres = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(affine, centres)
    point = nib.affines.apply_affine(affine, voxel)

    def below(w: int) -> int:  # distinct voxel positions along world axis w below the point
        return int(np.sum(np.unique(np.round(world[:, w], 4)) < round(point[w], 4) - 1e-6))

    def above(w: int) -> int:
        return int(np.sum(np.unique(np.round(world[:, w], 4)) > round(point[w], 4) + 1e-6))

    x, y, z = 0, 1, 2
    return {
        "axial": (below(z), above(y), above(x)),  # anterior at top, right on the left
        "coronal": (below(y), above(z), above(x)),  # superior at top, right on the left
        "sagittal": (below(x), above(z), above(y)),  # superior at top, anterior on the left
    }


def _decode(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def _tile_pixels(axis: SpriteAxis, layer: str, index: int) -> np.ndarray:
    """The pixels of slice ``index`` of a layer (RGBA for labels, grey for the CT)."""
    image = _decode(axis.layers[layer])
    pixels = np.asarray(image.convert("L" if layer == "ct" else "RGBA"))
    row, column = divmod(index, axis.columns)
    top, left = row * axis.cell[0], column * axis.cell[1]
    return pixels[top : top + axis.tile[0], left : left + axis.tile[1]]


@pytest.mark.parametrize("codes", ["LPS", "RAS", "LAS", "SLP"])
def test_sprite_tiles_and_marked_voxel_follow_world_orientation(codes):
    labels, affine, voxel = _marked_case(codes)
    axes = {a.name: a for a in build_sprites(labels, labels, affine)}
    expected = _expected(affine, labels.shape, voxel)
    nx, ny, nz = RAS_SHAPE
    sx, sy, sz = RAS_SPACING
    geometry = {  # slices, tile (rows, columns), pixel (height, width) in mm
        "axial": (nz, (ny, nx), (sy, sx)),
        "coronal": (ny, (nz, nx), (sz, sx)),
        "sagittal": (nx, (nz, ny), (sz, sy)),
    }
    for name, (n, tile, pixel_mm) in geometry.items():
        axis = axes[name]
        assert (axis.n_slices, axis.tile, axis.pixel_mm) == (n, tile, pytest.approx(pixel_mm))
        for layer, alpha in (("ref", 255), ("pred", 191)):  # outline opaque, fill 75 %
            sprite = np.asarray(_decode(axis.layers[layer]).convert("RGBA"))
            rows = -(-n // axis.columns)
            assert sprite.shape[:2] == (rows * axis.cell[0], axis.columns * axis.cell[1])
            # The single tumour voxel is the single coloured pixel, where the world puts it.
            assert np.count_nonzero(sprite[..., 3]) == 1, (name, layer)
            index, row, column = expected[name]
            assert tuple(_tile_pixels(axis, layer, index)[row, column]) == (*TUMOUR_RGB, alpha)
    if codes == "LPS":  # DICOM's order: the stored array is already the axial picture
        assert expected["axial"] == (MARK["z"], MARK["y"], MARK["x"])


def test_reference_is_outlined_and_prediction_filled():
    labels = np.zeros((12, 12, 4), dtype=np.uint8)
    labels[2:10, 2:10, :] = 1
    axial = build_sprites(labels, labels, np.diag([1.0, 1.0, 1.0, 1.0]))[0]
    ref, pred = (_tile_pixels(axial, layer, 1) for layer in ("ref", "pred"))
    inside = ref[3:9, 3:9]  # the square's interior in display order (flips keep it in place)
    assert (inside[..., 3] == 0).all() and (ref[2, 2:10] == (*LIVER_RGB, 255)).all()
    assert (pred[2:10, 2:10] == (*LIVER_RGB, 115)).all() and pred[0, 0, 3] == 0


@pytest.mark.parametrize("stored_as", ["array", "nifti proxy with slope and intercept"])
def test_ct_window_maps_minus_100_to_black_and_400_to_white(tmp_path, stored_as):
    # Bands of 8 rows along y, as JPEG's 8x8 blocks: flat blocks keep their value.
    hu = np.repeat(np.array([-1000.0, -100.0, 150.0, 400.0, 1000.0]), 8)
    ct = np.broadcast_to(hu[None, :, None], (16, 40, 4)).copy()
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    if stored_as != "array":
        image = nib.Nifti1Image(((ct + 1000) / 2).astype(np.int16), affine)
        image.header.set_slope_inter(2.0, -1000.0)
        nib.save(image, tmp_path / "ct.nii.gz")
        ct = nib.load(tmp_path / "ct.nii.gz").dataobj
    labels = np.zeros((16, 40, 4), dtype=np.uint8)
    axial = build_sprites(labels, labels, affine, ct)[0]
    grey = _tile_pixels(axial, "ct", 2).astype(int)
    # Rows run anterior (high y) to posterior: the last band (1000 HU) is on top.
    band_centres = {1000: 4, 400: 12, 150: 20, -100: 28, -1000: 36}
    expected = {1000: 255, 400: 255, 150: 128, -100: 0, -1000: 0}
    for value, row in band_centres.items():
        assert abs(grey[row, 8] - expected[value]) <= 2, (value, grey[row, 8])


def test_downsampling_keeps_the_budget_every_thick_slice_and_a_one_voxel_lesion():
    labels = np.zeros((64, 64, 12), dtype=np.uint8)
    labels[33, 40, 7] = 2
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    axes = {a.name: a for a in build_sprites(labels, labels, affine, max_voxels=64 * 64 * 3)}
    # Half resolution in-plane, every 5 mm slice kept.
    assert [axes[n].n_slices for n in ("axial", "coronal", "sagittal")] == [12, 32, 32]
    assert axes["axial"].tile == (32, 32) and axes["axial"].pixel_mm == (1.6, 1.6)
    assert axes["coronal"].pixel_mm == (5.0, 1.6)
    ref = _tile_pixels(axes["axial"], "ref", 7)
    assert tuple(ref[31 - 40 // 2, 31 - 33 // 2]) == (*TUMOUR_RGB, 255)  # block max kept it


@pytest.mark.parametrize(
    ("shape", "spacing", "factors"),
    [
        ((272, 272, 144), (0.8, 0.8, 2.5), [2, 2, 1]),  # 2.7 M voxels: in-plane only
        ((512, 512, 100), (0.8, 0.8, 5.0), [4, 3, 1]),  # 2.2 M: thick slices all kept
        ((512, 512, 800), (0.7, 0.7, 0.7), [4, 4, 5]),  # 2.6 M: near isotropic, 2.8-3.5 mm
        ((20, 24, 16), (0.8, 0.8, 5.0), [1, 1, 1]),  # under the budget: untouched
    ],
)
def test_block_factors_coarsen_the_finest_axis_first_within_the_budget(shape, spacing, factors):
    assert viewer_sprites._block_factors(shape, spacing, 2_700_000) == factors


@pytest.mark.parametrize("max_voxels", [20 * 24 * 16, 20 * 24 * 16 // 27])
def test_start_slice_shows_the_given_axial_slice_on_flipped_and_downsampled_grids(max_voxels):
    labels = np.zeros((20, 24, 16), dtype=np.uint8)
    labels[10, 12, 16 - 1 - 4] = 2  # stored superior to inferior: axial slice 4 from inferior
    affine = np.diag([-1.0, -1.0, -1.0, 1.0])  # LPI, isotropic: budget / 27 merges 3^3 voxels
    axial = build_sprites(labels, labels, affine, axial_index=4, max_voxels=max_voxels)[0]
    assert axial.n_slices == (16 if max_voxels == 20 * 24 * 16 else 6)
    assert _tile_pixels(axial, "ref", axial.start)[..., 3].any()  # the lesion's slice


def _canvas(html: str, axis: str) -> tuple[int, int]:
    pane = re.search(rf'data-axis="{axis}".*?<canvas width="(\d+)" height="(\d+)"', html)
    assert pane, axis
    return int(pane.group(1)), int(pane.group(2))


def test_page_is_one_small_file_in_physical_proportions(tmp_path):
    labels, affine, _ = _marked_case("LPS")
    ct = np.full(labels.shape, 40.0)
    path = write_viewer(tmp_path, "<case&1>", labels, labels, affine, ct)
    assert path == tmp_path / viewer_relpath("<case&1>")
    html = path.read_text()
    assert len(html.encode()) < 60_000
    assert html.count('src="data:image/jpeg;base64,') == 3
    assert html.count('src="data:image/png;base64,') == 6
    assert "http" not in html.replace("http-equiv", "") and "fetch(" not in html
    assert "<case&1>" not in html and "&lt;case&amp;1&gt;" in html
    nx, ny, nz = (n * s for n, s in zip(RAS_SHAPE, RAS_SPACING, strict=True))  # mm
    for axis, (width_mm, height_mm) in {
        "axial": (nx, ny), "coronal": (nx, nz), "sagittal": (ny, nz)
    }.items():  # fmt: skip
        width, height = _canvas(html, axis)
        assert width / height == pytest.approx(width_mm / height_mm, abs=0.02), axis
    labels_only = render_viewer("c", build_sprites(labels, labels, affine))
    assert "data:image/jpeg" not in labels_only and "no CT" in labels_only


def test_viewer_file_names_are_safe_and_distinct():
    assert viewer_relpath("liver_12") == "viewer/liver_12.html"
    names = {viewer_relpath(c) for c in ("a/b", "a_b", "a b", "../x")}
    assert len(names) == 4
    assert all(re.fullmatch(r"viewer/[A-Za-z0-9_-][A-Za-z0-9._-]*\.html", n) for n in names)


def test_a_noisy_ct_gets_a_lower_jpeg_quality_not_a_lower_resolution():
    rng = np.random.default_rng(0)
    ct = rng.normal(40.0, 60.0, size=(40, 40, 16))
    labels = np.zeros(ct.shape, dtype=np.uint8)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])

    def ct_bytes(axes: list[SpriteAxis]) -> int:
        return sum(len(a.layers["ct"]) for a in axes)

    best = build_sprites(labels, labels, affine, ct)
    capped = build_sprites(labels, labels, affine, ct, max_ct_bytes=ct_bytes(best) * 3 // 4)
    assert ct_bytes(capped) <= ct_bytes(best) * 3 // 4
    assert [a.tile for a in capped] == [a.tile for a in best]
    # The same picture under the noise: 8 x 8 block means agree (pure noise, the worst case).
    for a, b in zip(best, capped, strict=True):
        difference = _tile_pixels(a, "ct", 3).astype(float) - _tile_pixels(b, "ct", 3)
        rows, columns = (n // 8 * 8 for n in difference.shape)
        blocks = difference[:rows, :columns].reshape(rows // 8, 8, columns // 8, 8)
        assert np.abs(blocks.mean(axis=(1, 3))).max() < 2.0
    lowest = build_sprites(labels, labels, affine, ct, max_ct_bytes=1)  # nothing fits
    assert 0 < ct_bytes(lowest) < ct_bytes(capped)


@pytest.mark.slow
@pytest.mark.parametrize("spacing", [None, (0.8, 0.8, 2.5)], ids=["wide FOV", "218 mm FOV"])
def test_a_272x272x144_case_page_stays_under_one_and_a_half_megabytes(tmp_path, spacing):
    config = PhantomConfig((272, 272, 144), spacing, orientation="LPS", noise_sd=15)
    phantom = generate_phantom(3, config)
    pred = np.where(phantom.label == 2, 1, phantom.label).astype(np.uint8)
    path = write_viewer(tmp_path, "big", pred, phantom.label, phantom.affine, phantom.image)
    assert path.stat().st_size < 1_500_000


# Evaluation: pages written while scoring, linked from report.html, kept by build_report.


def _write_cases(root: Path, with_ct: bool = True, viewers: bool = True) -> Path:
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    for case_id in ("a", "b"):
        ref = np.zeros((24, 24, 12), dtype=np.uint8)
        ref[4:18, 4:18, 2:10] = 1
        ref[8:12, 8:12, 4:7] = 2
        save_nifti(ref, affine, root / "pred" / f"{case_id}_seg.nii.gz")
        save_nifti(ref, affine, root / "ref" / f"{case_id}.nii.gz")
        if with_ct:
            ct = np.where(ref > 0, 90, -50).astype(np.int16)
            save_nifti(ct, affine, root / "images" / f"{case_id}_0000.nii.gz")
    images = root / "images" if with_ct else None
    pairs = pair_cases(root / "pred", root / "ref", images)
    return evaluate_pairs(pairs, root / "out", progress=False, viewers=viewers).report_dir


def test_evaluation_writes_linked_viewers_and_rebuild_keeps_existing_links(tmp_path):
    out = _write_cases(tmp_path)
    for case_id in ("a", "b"):
        page = (out / viewer_relpath(case_id)).read_text()
        assert page.count('src="data:image/jpeg') == 3  # with the CT
        assert f'href="{viewer_relpath(case_id)}"' in (out / "report.html").read_text()
    (out / viewer_relpath("b")).unlink()
    build_report(out)
    html = (out / "report.html").read_text()
    assert f'href="{viewer_relpath("a")}"' in html
    assert f'href="{viewer_relpath("b")}"' not in html


def test_viewers_can_be_switched_off(tmp_path):
    out = _write_cases(tmp_path, viewers=False)
    assert not (out / "viewer").exists()
    assert 'href="viewer/' not in (out / "report.html").read_text()


def test_evaluation_without_ct_writes_labels_only_viewers(tmp_path):
    out = _write_cases(tmp_path, with_ct=False)
    page = (out / viewer_relpath("a")).read_text()
    assert "data:image/jpeg" not in page and page.count('src="data:image/png') == 6


def test_a_viewer_that_cannot_be_written_is_a_note_not_a_failure(tmp_path, monkeypatch):
    stale = tmp_path / "out" / viewer_relpath("a")
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")

    def refuse_with_ct(*args, **kwargs):
        if args[5] is not None:
            raise MemoryError("CT too large")
        if args[1] == "a":
            raise OSError("disk full")
        return write_viewer(*args, **kwargs)

    monkeypatch.setattr("pipeline.evaluation.scoring.write_viewer", refuse_with_ct)
    out = _write_cases(tmp_path)
    cases = {c["case_id"]: c for c in json.loads((out / "cases.json").read_text())["cases"]}
    assert len(cases) == 2  # both scored
    assert cases["a"]["notes"] == [
        "slice viewer with CT failed (MemoryError: CT too large)",
        "no slice viewer (OSError: disk full)",
    ]
    assert cases["b"]["notes"] == ["slice viewer with CT failed (MemoryError: CT too large)"]
    assert not stale.exists()  # no old page under the new report's link
    assert (out / viewer_relpath("b")).is_file()
    assert 'href="viewer/a.html"' not in (out / "report.html").read_text()


# In a browser: wheel, keys and checkboxes go through the page's own handlers.

BROWSER_CHECK = """<script>
window.addEventListener("load", () => {
  const pane = document.querySelector('.pane[data-axis="axial"]');
  const canvas = pane.querySelector("canvas");
  const at = [Math.floor(canvas.width * %(x)f), Math.floor(canvas.height * %(y)f)];
  const states = [];
  const record = (step) => states.push({step, slice: pane.dataset.slice,
    checksum: pane.dataset.checksum,
    rgb: [...canvas.getContext("2d").getImageData(at[0], at[1], 1, 1).data.slice(0, 3)]});
  record("start");
  canvas.dispatchEvent(new WheelEvent("wheel", {deltaY: -100, bubbles: true, cancelable: true}));
  record("wheel up");
  document.body.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowDown", bubbles: true}));
  record("arrow down");
  document.getElementById("show-pred").click();
  record("prediction off");
  document.getElementById("show-ref").click();
  record("reference off");
  for (const step of ["touchpad 1", "touchpad 2"]) {  // small deltas add up
    canvas.dispatchEvent(new WheelEvent("wheel", {deltaY: -30, bubbles: true, cancelable: true}));
    record(step);
  }
  const out = document.createElement("pre");
  out.id = "viewer-check";
  out.textContent = JSON.stringify(states);
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not found on PATH")
def test_scrolling_and_toggling_change_the_drawn_slice_in_chromium(tmp_path):
    labels, affine, _ = _marked_case("LPS")
    labels[:] = 0
    labels[2:16, 3:20, 2:14] = 1  # liver on every shown slice
    labels[4:10, 6:12, 5] = 2  # tumour on axial slice 6 only (index 5 from inferior)
    ct = np.full(labels.shape, 40.0)
    page = write_viewer(tmp_path / "report", "case", labels, labels, affine, ct)
    # LPS storage: axial rows follow the array's y index, columns its x index. The probe
    # sits in the middle of the tumour: rows 6..11 of 24, columns 4..9 of 20.
    probe = {"x": 7.5 / 20, "y": 9.5 / 24}
    page.write_text(page.read_text().replace("</body>", BROWSER_CHECK % probe + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri() + "#axis=axial&slice=5")
    found = re.search(r'<pre id="viewer-check">(.*?)</pre>', dom, flags=re.S)
    assert found, "the viewer did not finish loading"
    states = {s["step"]: s for s in json.loads(unescape(found.group(1)))}
    start, wheel, key = states["start"], states["wheel up"], states["arrow down"]
    pred_off, ref_off = states["prediction off"], states["reference off"]
    assert [s["slice"] for s in states.values()] == ["5", "6", "5", "5", "5", "5", "6"]
    assert wheel["checksum"] != start["checksum"] and key["checksum"] == start["checksum"]
    assert len({start["checksum"], pred_off["checksum"], ref_off["checksum"]}) == 3

    def colour(rgb: list[int]) -> str:
        r, g, b = rgb
        return "red" if r > g + 60 else "green" if g > r + 30 else "grey" if r == g == b else "?"

    # Tile addressing: the tumour is on slice 6 only; liver fill elsewhere; CT grey below.
    colours = [colour(s["rgb"]) for s in states.values()]
    assert colours == ["green", "red", "green", "grey", "grey", "grey", "grey"]
    grey = round((40 + 100) / 500 * 255)  # 40 HU in the [-100, 400] window
    assert abs(pred_off["rgb"][0] - grey) <= 2
