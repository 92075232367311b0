"""The two-stage cascade (pipeline/inference/cascade.py) with known-answer networks."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import configs
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.transforms import Compose

from pipeline.checkpoints import trained_for_differences
from pipeline.inference.api import predict
from pipeline.inference.cascade import (
    CascadePredictor,
    grown_box,
    liver_candidates,
    probe_region,
)
from pipeline.inference.folder_run import FolderRun
from pipeline.inference.prediction import NetworkOutput, PendingScan, grid_spacing
from pipeline.inference.predictor import ScanPredictor
from pipeline.inference.quality import edge_axes
from pipeline.inference.scans import Scan
from pipeline.io import save_nifti
from pipeline.transforms.lesion_filter import LesionFilter

SPACING = (0.8, 0.9, 2.5)
SHAPE = (40, 36, 12)


class BrightIsLiver(torch.nn.Module):
    """Liver wherever the windowed intensity exceeds 0.5 (HU 150)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40.0 * (x - 0.5), torch.full_like(x, -100.0)], 1)


class TumourEverywhere(torch.nn.Module):
    """Tumour in every voxel it is shown: its output marks exactly the box it was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x), torch.ones_like(x)], 1)


def _lps_affine() -> np.ndarray:
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = (30.0, -12.0, 100.0)
    return affine


def _scan(tmp_path, block: tuple[slice, ...] | None) -> Scan:
    image = np.full(SHAPE, -1000, dtype=np.int16)
    image[2:-2, 2:-2, 1:-1] = 0  # the body
    if block is not None:
        image[block] = 300
    path = save_nifti(image, _lps_affine(), tmp_path / "case.nii.gz")
    return Scan("case", path, "nifti")


class TumourWherePrior(torch.nn.Module):
    """Tumour where its second input channel (stage 1's liver) is 1, background elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, 1:2]
        return torch.cat([1.0 - prior, torch.zeros_like(prior), 2.0 * prior], 1)


class VeryBrightIsLiver(torch.nn.Module):
    """Liver only above HU 250 (windowed 0.7): a locator that misses a liver's dimmer part."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40.0 * (x - 0.7), torch.full_like(x, -100.0)], 1)


def _cascade(
    margin_mm: float = 2.0,
    refiner: torch.nn.Module | None = None,
    *overlays: str,
    locator: torch.nn.Module | None = None,
    max_box_growths: int = 0,
    max_candidates: int = 3,
    keep_within_located_mm: float | None = None,
    candidate_probe_mm: tuple[float, float, float] | None = None,
    **settings: object,
) -> CascadePredictor:
    """Both stages at the scan's own spacing, so every box is known to the voxel.

    ``settings`` are further config values. The liver-contrast channel is off unless
    given (``liver_contrast_hu``): these refiners read the image, and the prior, alone.
    """
    settings.setdefault("liver_contrast_hu", 0.0)
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "inference.yaml", "cascade.yaml", *overlays))
    # Unsmoothed input: these refiners threshold intensities, and the boxes are the test.
    parser.update(
        {
            "pixdim": list(SPACING),
            "locator#pixdim": list(SPACING),
            "liver_box_margin_mm": margin_mm,
            "input_smoothing_sigma": 0.0,
            **settings,
        }
    )
    loading = Compose(parser.get_parsed_content("load_transforms"))
    first = ScanPredictor(
        locator or BrightIsLiver(),
        loading,
        parser.get_parsed_content("locator#predictor#preprocessing"),
        SimpleInferer(),
        parser.get_parsed_content("locator#predictor#postprocessing"),
    )
    refiner = ScanPredictor(
        refiner or TumourEverywhere(),
        loading,
        Compose(parser.get_parsed_content("preprocess_transforms")),
        SimpleInferer(),
    )
    return CascadePredictor(
        first,
        refiner,
        0.05,
        margin_mm=margin_mm,
        max_box_growths=max_box_growths,
        max_candidates=max_candidates,
        keep_within_located_mm=keep_within_located_mm,
        candidate_probe_mm=candidate_probe_mm,
    )


def test_the_refiner_sees_exactly_the_located_liver_box_plus_the_margin(tmp_path):
    block = (slice(8, 20), slice(10, 30), slice(3, 8))
    prediction = _cascade(margin_mm=2.0).predict(_scan(tmp_path, block))
    assert prediction.labels.shape == SHAPE and prediction.warnings == []
    # 2 mm is ceil(2 / 0.8) = 3, ceil(2 / 0.9) = 3 and ceil(2 / 2.5) = 1 voxels; the LPS
    # scan is flipped to RAS and back, which maps a box onto the same voxels.
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[5:23, 7:33, 2:9] = 2
    np.testing.assert_array_equal(prediction.labels, expected)
    assert {"load", "locate", "preprocess", "network", "invert"} <= set(prediction.seconds)


def test_with_the_prior_overlay_the_refiner_sees_the_located_liver_as_a_channel(tmp_path):
    block = (slice(8, 20), slice(10, 30), slice(3, 8))
    cascade = _cascade(2.0, TumourWherePrior(), "cascade_prior.yaml")
    prediction = cascade.predict(_scan(tmp_path, block))
    # Tumour exactly where the locator found liver: the channel is its mask, voxel for
    # voxel, and the joined input still inverts onto the scan's grid.
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[block] = 2
    np.testing.assert_array_equal(prediction.labels, expected)


def test_in_training_the_prior_channel_is_the_reference_liver_on_the_locators_grid():
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml", "cascade.yaml", "cascade_prior.yaml"))
    parser.update({"pixdim": [1.0, 1.0, 1.0], "locator#pixdim": [4.0, 4.0, 4.0]})
    # With the liver-contrast channel (the default) the prior comes third.
    assert parser.get_parsed_content("trained_for#in_channels") == 3
    parser.update({"liver_contrast_hu": 0.0})
    assert parser.get_parsed_content("trained_for#in_channels") == 2  # image + prior
    assert parser.get_parsed_content("locator#trained_for#in_channels") == 1  # the image
    label = np.zeros((1, 40, 40, 40), dtype=np.uint8)
    label[0, 10:27, 12:30, 14:31] = 1  # 17 x 18 x 17 voxels: not whole 4 mm blocks
    label[0, 15:18, 15:18, 15:18] = 2
    image = np.where(label > 0, 100, -1000).astype(np.float32)
    preprocess = Compose(parser.get_parsed_content("preprocess_transforms"))
    out = preprocess({"image": MetaTensor(image), "label": MetaTensor(label)})
    assert out["image"].shape[0] == 2 and "liver_box" not in out
    prior = np.asarray(out["image"][1])
    assert set(np.unique(prior)) == {0.0, 1.0}
    liver = np.asarray(out["label"][0]) >= 1
    # The reference liver to within a 4 mm block, but not the sharp reference itself.
    assert abs(prior.sum() - liver.sum()) < 0.25 * liver.sum()
    assert (prior != liver).sum() > 0
    dice = 2 * np.logical_and(prior > 0, liver).sum() / (prior.sum() + liver.sum())
    assert dice > 0.8


@pytest.mark.parametrize("growths", [0, 1])
def test_a_box_too_small_for_the_refiners_liver_grows_to_it(tmp_path, growths):
    # The locator sees only the bright core (x 12-16); the refiner sees the whole liver
    # (x 8-20). A 2 mm margin is 3 voxels along x: the first box (x 9-18) cuts the liver.
    image = np.full(SHAPE, -1000, dtype=np.int16)
    image[2:-2, 2:-2, 1:-1] = 0
    image[8:21, 10:30, 3:8] = 200
    image[12:17, 10:30, 3:8] = 300
    path = save_nifti(image, _lps_affine(), tmp_path / "case.nii.gz")
    cascade = _cascade(2.0, BrightIsLiver(), locator=VeryBrightIsLiver(), max_box_growths=growths)
    prediction = cascade.predict(Scan("case", path, "nifti"))
    liver = prediction.labels == 1
    expected = np.zeros(SHAPE, dtype=bool)
    expected[8:21, 10:30, 3:8] = True
    if growths:
        np.testing.assert_array_equal(liver, expected)
        assert any("the box was grown" in w for w in prediction.warnings)
    else:  # the first box's x range only: the liver is cut
        np.testing.assert_array_equal(
            liver,
            expected
            & (np.arange(SHAPE[0]) >= 9)[:, None, None]
            & (np.arange(SHAPE[0]) <= 19)[:, None, None],
        )
        assert prediction.warnings == []


def _two_livers(tmp_path, large_hu: int = 200, small_hu: int = 300) -> Scan:
    """A large region and, well apart, a smaller one (by default dim and bright)."""
    image = np.full(SHAPE, -1000, dtype=np.int16)
    image[2:-2, 2:-2, 1:-1] = 0
    image[3:13, 4:24, 3:8] = large_hu  # 1000 voxels, 1.8 mL
    image[26:32, 24:34, 3:8] = small_hu  # 300 voxels, 0.54 mL
    path = save_nifti(image, _lps_affine(), tmp_path / "case.nii.gz")
    return Scan("case", path, "nifti")


@pytest.mark.parametrize("max_candidates", [1, 3])
def test_the_refiner_chooses_among_liver_sized_located_regions(tmp_path, max_candidates):
    # The locator calls both regions liver; the refiner only the bright one. The
    # largest located region is the wrong one.
    cascade = _cascade(2.0, VeryBrightIsLiver(), max_candidates=max_candidates)
    prediction = cascade.predict(_two_livers(tmp_path))
    bright = np.zeros(SHAPE, dtype=bool)
    bright[26:32, 24:34, 3:8] = True
    liver = prediction.labels == 1
    if max_candidates == 1:  # the largest, unchecked: its box holds no liver
        assert not liver.any() and prediction.warnings == []
        return
    np.testing.assert_array_equal(liver, bright)
    # The largest was overruled: a warning, not a note.
    (note,) = prediction.warnings
    assert prediction.notes == []
    # 1000 and 300 voxels of 1.8 uL: the located and refined volumes, rounded to mL.
    assert note.startswith(
        "stage 1 found 2 liver-sized regions, 2 mL (refined: 0 mL, 0 mL of it inside), "
    )
    assert "1 mL (refined: 1 mL, 1 mL of it inside)" in note
    assert note.endswith("both stages agree on most liver in the one of 1 mL, which was kept")


class RecordingVeryBrightIsLiver(VeryBrightIsLiver):
    """VeryBrightIsLiver that records the spatial shape of every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return super().forward(x)


def test_candidates_compared_in_probe_blocks_and_only_the_chosen_box_refined(tmp_path):
    refiner = RecordingVeryBrightIsLiver()
    # 4 x 4 x 5 mm: blocks of 5 x 5 x 3 voxels (half-widths 2, 2, 1 around the deepest
    # voxel), each cropped with the 2 mm margin (3, 3, 1 voxels).
    cascade = _cascade(2.0, refiner, candidate_probe_mm=(4.0, 4.0, 5.0))
    prediction = cascade.predict(_two_livers(tmp_path))
    bright = np.zeros(SHAPE, dtype=bool)
    bright[26:32, 24:34, 3:8] = True
    # The same choice as whole boxes make (the test above), and the whole box refined.
    np.testing.assert_array_equal(prediction.labels == 1, bright)
    # Two probes of at most a block plus margins, then the chosen (small, bright) region's
    # whole box: 6 x 10 x 5 voxels plus the margins (y clipped at the scan's edge).
    assert len(refiner.shapes) == 3 and refiner.shapes[2] == (12, 15, 7)
    for probed, whole in zip(refiner.shapes[:2], [(16, 26, 7), (12, 15, 7)], strict=True):
        assert all(p <= b for p, b in zip(probed, (11, 11, 5), strict=True))
        assert np.prod(probed) < np.prod(whole)
    (note,) = prediction.warnings
    assert note.startswith(
        "stage 1 found 2 liver-sized regions (each refined in a 4 x 4 x 5 mm block around "
        "its deepest point), 2 mL (refined: 0 mL, 0 mL of it inside), "
    )
    with pytest.raises(ValueError, match="candidate_probe_mm must be three positive"):
        CascadePredictor(None, None, candidate_probe_mm=(4.0, 0.0, 5.0))  # type: ignore[arg-type]


def test_the_probe_block_lies_around_the_deepest_voxel_not_the_centroid():
    # A C: the centroid of the three bars lies in the empty middle.
    mask = np.zeros((40, 40, 10), dtype=bool)
    mask[5:35, 5:15, 2:8] = True  # the back, 10 voxels thick
    mask[5:11, 15:35, 2:8] = True  # the arms, 6 thick
    mask[29:35, 15:35, 2:8] = True
    spacing = np.array([1.0, 1.0, 2.0])
    probe = probe_region(mask, spacing, size_mm=np.array([8.0, 8.0, 4.0]), coarse_mm=1.0)
    assert probe.any() and not (probe & ~mask).any()
    points = np.nonzero(probe)
    extent = [int(p.max()) - int(p.min()) + 1 for p in points]
    # 8 mm at 1 mm is 4 either side (9 voxels); 4 mm at 2 mm is 1 either side.
    assert extent == [9, 9, 3]
    # The block's centre lies in the thick back (y 5-14), where the distance to the
    # surface peaks; the centroid of the C, (19.5, 16.2), lies in its empty middle.
    centre = tuple(int(p.min() + p.max()) // 2 for p in points)
    assert mask[centre] and 8 <= centre[1] <= 11 and not mask[19, 16, 5]
    # A mask smaller than the block is kept whole.
    np.testing.assert_array_equal(probe_region(mask, spacing, np.array([99.0, 99.0, 99.0])), mask)


def test_the_kept_region_is_where_both_stages_agree_not_where_the_refiner_finds_most(tmp_path):
    # The large region (1000 voxels at 300 HU) is liver to both stages. The smaller one is
    # a thin L of 300 HU (what the locator calls liver) around a 200 HU block that only the
    # refiner calls liver: its box holds 2.5 times more refined liver than the large
    # one's, but little of it inside the located L (as the pelvis of the real 3 mm CT).
    image = np.full(SHAPE, -1000, dtype=np.int16)
    image[2:-2, 2:-2, 1:-1] = 0
    image[3:13, 4:24, 3:8] = 300
    image[22:36, 6:32, 3:9] = 200
    image[21, 5:33, 3:9] = 300
    image[21:37, 5, 3:9] = 300
    scan = Scan("case", save_nifti(image, _lps_affine(), tmp_path / "case.nii.gz"), "nifti")
    cascade = _cascade(2.0, BrightIsLiver(), locator=VeryBrightIsLiver())
    prediction = cascade.predict(scan)
    large = np.zeros(SHAPE, dtype=bool)
    large[3:13, 4:24, 3:8] = True
    np.testing.assert_array_equal(prediction.labels == 1, large)
    # 1000 agreed voxels against 258 (the L), more than CLEAR_MARGIN times: a note.
    assert prediction.warnings == []
    (note,) = prediction.notes
    voxel_ml = np.prod(SPACING) / 1000.0
    refined_in_l_box = 258 + 14 * 26 * 6  # the L and the whole 200 HU block
    assert f"(refined: {refined_in_l_box * voxel_ml:.0f} mL, 0 mL of it inside)" in note
    assert note.endswith("the one of 2 mL, which was kept")


def test_a_clearly_confirmed_largest_region_is_a_note_not_a_warning(tmp_path):
    # Now the large region is the bright one: the refiner finds liver only there.
    cascade = _cascade(2.0, VeryBrightIsLiver())
    prediction = cascade.predict(_two_livers(tmp_path, large_hu=300, small_hu=200))
    large = np.zeros(SHAPE, dtype=bool)
    large[3:13, 4:24, 3:8] = True
    np.testing.assert_array_equal(prediction.labels == 1, large)
    assert prediction.warnings == []
    (note,) = prediction.notes
    assert note.startswith(
        "stage 1 found 2 liver-sized regions, 2 mL (refined: 2 mL, 2 mL of it inside), "
    )
    assert note.endswith("the one of 2 mL, which was kept")
    FolderRun(cascade, [_two_livers(tmp_path, 300, 200)], tmp_path / "out", progress=False).run()
    record = json.loads((tmp_path / "out" / "case.json").read_text())
    assert record["notes"] == [note] and record["warnings"] == []


def test_liver_candidates_are_the_large_components_largest_first():
    liver = np.zeros((20, 20, 20), dtype=bool)
    liver[1:4, 1:4, 1:4] = True  # 27 voxels
    liver[10:15, 10:15, 10:15] = True  # 125 voxels
    liver[15, 15, 15] = True  # diagonal neighbour: 26-connected to the 125
    liver[1:3, 15:18, 1:3] = True  # 12 voxels
    found = liver_candidates(liver, voxel_ml=2.0, min_liver_ml=50.0, max_candidates=3)
    assert [ml for _, ml in found] == [252.0, 54.0]
    assert found[0][0].sum() == 126 and found[0][0][15, 15, 15]
    assert found[1][0][1:4, 1:4, 1:4].all() and found[1][0].sum() == 27
    assert len(liver_candidates(liver, 2.0, 0.0, max_candidates=2)) == 2
    assert liver_candidates(np.zeros_like(liver), 2.0, 0.0, 3) == []


def test_grown_box_leaves_a_box_that_holds_the_refined_liver_alone():
    box = np.zeros((30, 30, 30), dtype=bool)
    box[10:20, 10:20, 10:20] = True
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    inside = np.zeros_like(box)
    inside[8:22, 10:20, 10:20] = True  # 2 voxels past the box: well inside the 8 mm margin
    assert grown_box(box, inside, affine, margin_mm=8.0) is None
    reaching = np.zeros_like(box)
    reaching[3:20, 10:20, 10:20] = True  # to voxel 3: the crop starts at 2
    np.testing.assert_array_equal(grown_box(box, reaching, affine, 8.0), box | reaching)
    # The crop is clipped at the scan's edge there: a liver at that face is not cut by it.
    edge_box = np.zeros_like(box)
    edge_box[2:12, 10:20, 10:20] = True
    at_edge = np.zeros_like(box)
    at_edge[0:12, 10:20, 10:20] = True
    assert grown_box(edge_box, at_edge, affine, 8.0) is None
    assert grown_box(box, np.zeros_like(box), affine, 8.0) is None


def test_no_liver_gives_an_empty_mask_and_a_warning_in_the_case_json(tmp_path):
    scan = _scan(tmp_path, block=None)
    summary = FolderRun(_cascade(), [scan], tmp_path / "out", progress=False).run()
    assert summary.done == ["case"] and not summary.failed
    mask = nib.load(tmp_path / "out" / "case_seg.nii.gz")
    assert mask.shape == SHAPE and not np.asarray(mask.dataobj).any()
    record = json.loads((tmp_path / "out" / "case.json").read_text())
    assert len(record["warnings"]) == 1 and "found no liver" in record["warnings"][0]
    with open(tmp_path / "out" / "warnings.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["case"] == "case" and "found no liver" in row["warning"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["warnings"][0]["case"] == "case"


def test_a_liver_cut_by_the_field_of_view_is_segmented_with_a_warning(tmp_path):
    block = (slice(8, 20), slice(10, 30), slice(0, 5))  # the first axial slice holds liver
    prediction = _cascade().predict(_scan(tmp_path, block))
    assert prediction.warnings == [] and prediction.quality.verdict == "warn"
    assert any("touches the scan's edge (array axes [2])" in r for r in prediction.quality.reasons)
    assert prediction.labels[8:20, 10:30, 0:5].min() == 2


def test_edge_axes_names_each_axis_a_mask_touches():
    mask = np.zeros((5, 6, 7), dtype=bool)
    assert edge_axes(mask) == []
    mask[2, 3, 3] = True
    assert edge_axes(mask) == []
    mask[4, 0, 3] = True
    assert edge_axes(mask) == [0, 1]


def test_refined_labels_far_from_the_located_liver_are_removed(tmp_path):
    block = (slice(8, 20), slice(10, 30), slice(3, 8))
    # The refiner marks its whole box, the block plus 5 mm: 7, 6 and 2 voxels of 0.8,
    # 0.9 and 2.5 mm, x 1-26, y 4-35, z 1-9 (7488 voxels).
    cascade = _cascade(5.0, keep_within_located_mm=2.0)
    prediction = cascade.predict(_scan(tmp_path, block))
    # Within 2 mm of the block: 2 voxels along x (1.6 mm) and y (1.8 mm), none along z
    # (2.5 mm), and diagonally (2, 1) 1.84 mm and (1, 2) 1.97 mm, but not (2, 2) 2.41 mm.
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[6:22, 8:32, 3:8] = 2
    for x in (6, 21):
        for y in (8, 31):
            expected[x, y, :] = 0
    np.testing.assert_array_equal(prediction.labels, expected)
    # (7488 - 380 * 5) voxels of 0.8 x 0.9 x 2.5 mm = 10.06 mL removed.
    assert prediction.notes == [
        "10.1 mL of the refiner's liver and tumour lay more than 2 mm from stage 1's liver "
        "and were removed"
    ]
    assert prediction.warnings == []
    # predict() (the Python API, and sim2real.json through it) hands the note on.
    assert predict(_scan(tmp_path, block).path, predictor=cascade).notes == prediction.notes
    # The same cascade without the setting keeps the whole box.
    whole = _cascade(5.0).predict(_scan(tmp_path, block))
    assert np.count_nonzero(whole.labels) == 7488 and whole.notes == []


def test_negative_min_liver_and_no_candidates_are_refused():
    with pytest.raises(ValueError, match="min_liver_ml"):
        CascadePredictor(None, None, min_liver_ml=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_candidates must be >= 1"):
        CascadePredictor(None, None, max_candidates=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_within_located_mm"):
        CascadePredictor(None, None, keep_within_located_mm=-1.0)  # type: ignore[arg-type]


def test_pending_scan_keys_tell_filters_with_the_same_effect_apart():
    probabilities = torch.zeros(3, 8, 8, 8)
    probabilities[1] = 1.0
    probabilities[1, 1:3, 1:3, 1:3], probabilities[2, 1:3, 1:3, 1:3] = 0.3, 0.7  # unsure
    probabilities[1, 5:7, 5:7, 5:7], probabilities[2, 5:7, 5:7, 5:7] = 0.05, 0.95  # sure
    output = NetworkOutput({}, probabilities, np.eye(4), (8, 8, 8))
    pending = PendingScan(lambda _: None, output)
    keys = {t: pending.key(LesionFilter(min_lesion_mean_prob=t)) for t in (0.0, 0.5, 0.8, 0.9)}
    assert keys[0.0] == keys[0.5]  # both keep both lesions
    assert keys[0.8] == keys[0.9] != keys[0.0]  # both drop the unsure one
    assert PendingScan(lambda _: None).key(LesionFilter()) == "no network output"


def test_the_depth_rule_measures_on_the_network_grid_in_mm():
    # A one-voxel tumour shell on the liver's x face, confident: 1.5 mm deep at 1.5 mm
    # voxels, 3 mm at 3 mm voxels; a 2 mm depth rule keeps it only on the coarser grid.
    probabilities = torch.zeros(3, 12, 12, 12)
    probabilities[0] = 1.0
    probabilities[0, 2:10, 2:10, 2:10], probabilities[1, 2:10, 2:10, 2:10] = 0.0, 1.0
    probabilities[1, 2, 4:8, 4:8], probabilities[2, 2, 4:8, 4:8] = 0.0, 1.0
    rule = LesionFilter(min_lesion_depth_mm=2.0)
    kept = {}
    for size in (1.5, 3.0):
        # Rotated axes: the spacing is each affine column's length, not the diagonal.
        affine = torch.tensor(
            [[0.0, -size, 0.0, 10.0], [size, 0.0, 0.0, 0.0], [0.0, 0.0, size, 0.0], [0, 0, 0, 1]]
        )
        image = MetaTensor(torch.zeros(1, 12, 12, 12), affine=affine)
        assert grid_spacing(image) == pytest.approx((size, size, size))
        output = NetworkOutput({"image": image}, probabilities, np.eye(4), (12, 12, 12))
        kept[size] = PendingScan(lambda _: None, output).key(rule)
    unfiltered = PendingScan(
        lambda _: None, NetworkOutput({}, probabilities, np.eye(4), (12, 12, 12))
    ).key(LesionFilter())
    assert kept[3.0] == unfiltered != kept[1.5]
    assert grid_spacing(None) == (1.0, 1.0, 1.0)


def _refiner_preprocessing(**overrides: object) -> tuple[Compose, dict]:
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml", "cascade.yaml"))
    parser.update({"pixdim": [1.0, 1.0, 1.0], **overrides})
    return Compose(parser.get_parsed_content("preprocess_transforms")), parser.get_parsed_content(
        "trained_for"
    )


def test_the_refiners_input_is_smoothed_after_the_window_and_recorded_as_trained_for():
    # Liver-like HU (window [-100, 400]: 0.4) with +-20 HU of checkerboard noise in a
    # 20^3 liver box at 1 mm: a 1-voxel Gaussian leaves a fraction of the noise.
    index = np.indices((24, 24, 24)).sum(axis=0)
    hu = (100.0 + 20.0 * np.where(index % 2 == 0, 1.0, -1.0)).astype(np.float32)
    label = np.zeros((24, 24, 24), dtype=np.uint8)
    label[2:22, 2:22, 2:22] = 1
    affine = torch.eye(4, dtype=torch.float64)

    def preprocessed(**overrides: object) -> np.ndarray:
        transforms, _ = _refiner_preprocessing(**overrides)
        data = {
            "image": MetaTensor(torch.from_numpy(hu)[None], affine=affine),
            "label": MetaTensor(torch.from_numpy(label)[None], affine=affine),
        }
        return np.asarray(transforms(data)["image"])[0]

    raw, smoothed = preprocessed(input_smoothing_sigma=0.0), preprocessed()
    # The box: 20 voxels plus the 20 mm margin, held by the 24-voxel image.
    assert raw.shape == smoothed.shape == (24, 24, 24)
    np.testing.assert_allclose(raw[10:14, 10:14, 10:14].std(), 0.04, rtol=1e-4)
    assert smoothed[10:14, 10:14, 10:14].std() < 0.1 * raw[10:14, 10:14, 10:14].std()
    np.testing.assert_allclose(smoothed[10:14, 10:14, 10:14].mean(), 0.4, atol=0.005)
    # The box's faces (the image's, here) keep the liver's level: the border repeats them.
    np.testing.assert_allclose(smoothed[:, :, 0].mean(), 0.4, atol=0.01)
    zero_border = preprocessed(input_smoothing_border="zeros")
    assert zero_border[:, :, 0].mean() < 0.3  # MONAI's GaussianSmooth pads with 0
    np.testing.assert_array_equal(zero_border[6:18, 6:18, 6:18], smoothed[6:18, 6:18, 6:18])
    trained_for = _refiner_preprocessing()[1]
    assert trained_for["input_smoothing_sigma"] == 1.0
    assert trained_for["input_smoothing_border"] == "edge"


def test_a_refiner_trained_before_input_smoothing_is_refused_with_smoothing_on():
    _, configured = _refiner_preprocessing()
    older = {
        k: v
        for k, v in configured.items()
        if k not in ("input_smoothing_sigma", "input_smoothing_border")
    }
    assert trained_for_differences(older, configured) == [
        "input_smoothing_sigma: trained 0.0, configured 1.0",
        "input_smoothing_border: trained 'zeros', configured 'edge'",
    ]
    _, unsmoothed = _refiner_preprocessing(input_smoothing_sigma=0.0)
    assert trained_for_differences(older, unsmoothed) == []
    # A refiner smoothed before the border was a setting had MONAI's zero border.
    smoothed_before = {**older, "input_smoothing_sigma": 1.0}
    assert trained_for_differences(smoothed_before, configured) == [
        "input_smoothing_border: trained 'zeros', configured 'edge'"
    ]
    _, zero_border = _refiner_preprocessing(input_smoothing_border="zeros")
    assert trained_for_differences(smoothed_before, zero_border) == []


class TumourWhereDarkerThanLiver(torch.nn.Module):
    """Tumour where the liver-contrast channel is under -0.2, liver elsewhere in the box."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        darker = (x[:, 1:2] < -0.2).float()
        return torch.cat([torch.zeros_like(darker), 1.0 - darker, 2.0 * darker], 1)


def test_the_liver_contrast_channel_is_centred_on_the_located_liver(tmp_path):
    # Liver at 300 HU with a 260 HU lesion: 40 HU below the located liver's median is
    # -0.4 at a half width of 100 HU, the liver itself 0. Centred anywhere else (0 HU,
    # the scan's median) the liver would read +1 and no tumour would be found.
    block = (slice(8, 20), slice(10, 30), slice(3, 8))
    lesion = (slice(12, 15), slice(16, 20), slice(5, 7))
    scan = _scan(tmp_path, block)
    image = nib.load(scan.path)
    hu = np.asarray(image.dataobj).copy()
    hu[lesion] = 260
    save_nifti(hu, image.affine, scan.path)
    cascade = _cascade(0.0, TumourWhereDarkerThanLiver(), liver_contrast_hu=100.0)
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[block] = 1
    expected[lesion] = 2
    np.testing.assert_array_equal(cascade.predict(scan).labels, expected)


def test_the_liver_contrast_channel_is_on_recorded_and_a_one_channel_refiner_refused():
    transforms, trained_for = _refiner_preprocessing()  # cascade.yaml's default: 100 HU
    assert trained_for["in_channels"] == 2 and trained_for["liver_contrast_hu"] == 100.0
    hu = np.full((1, 24, 24, 24), 60.0, dtype=np.float32)
    hu[0, 10:14, 10:14, 10:14] = 35.0
    label = np.zeros((1, 24, 24, 24), dtype=np.uint8)
    label[0, 2:22, 2:22, 2:22] = 1
    out = transforms({"image": MetaTensor(hu), "label": MetaTensor(label)})
    assert out["image"].shape == (2, 24, 24, 24) and "liver_contrast" not in out
    # Channel 0 the [-100, 400] window (60 HU: 0.32); channel 1 25 HU under the liver,
    # both smoothed by the 1-voxel Gaussian (the lesion's centre keeps most of it).
    assert float(out["image"][0, 3, 3, 3]) == pytest.approx(0.32, abs=1e-4)
    assert float(out["image"][1, 3, 3, 3]) == pytest.approx(0.0, abs=1e-4)
    assert -0.25 < float(out["image"][1, 11, 11, 11]) < -0.15
    _, one_channel = _refiner_preprocessing(liver_contrast_hu=0.0)
    assert one_channel["in_channels"] == 1
    older = {k: v for k, v in one_channel.items() if k != "liver_contrast_hu"}
    assert trained_for_differences(older, trained_for) == [
        "in_channels: trained 1, configured 2",
        "liver_contrast_hu: trained 0.0, configured 100.0",
    ]
    parser = ConfigParser()
    parser.read_config(configs("common.yaml", "train.yaml", "cascade.yaml"))
    parser.update({"liver_contrast_hu": 100.0})
    assert parser.get_parsed_content("locator#trained_for#in_channels") == 1
