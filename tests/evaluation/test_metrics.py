"""Known-answer tests for pipeline.evaluation.metrics (overlap, surface, burden, summaries)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
    SurfaceDistanceMetric,
)
from scipy import ndimage

from pipeline import LIVER, TUMOUR
from pipeline.evaluation.metrics import (
    class_metrics,
    evaluate_case,
    summarize,
    surface_distances,
)

ANISO = (0.8, 0.8, 2.0)


def _labels(shape: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def _ball(shape: tuple[int, ...], spacing: tuple[float, ...], centre_mm, radius_mm) -> np.ndarray:
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2


# --- overlap and volume -------------------------------------------------------------------


def test_two_cubes_exact_overlap_metrics():
    ref = np.zeros((32, 32, 32), dtype=bool)
    pred = np.zeros_like(ref)
    ref[10:20, 10:20, 10:20] = True  # |G| = 1000
    pred[15:27, 10:20, 10:20] = True  # |P| = 1200, overlap 5 x 10 x 10 = 500
    m = class_metrics(pred, ref, (1.0, 1.0, 1.0))
    inter, p, g, total = 500, 1200, 1000, 32**3
    assert m["n_intersection"] == inter
    assert m["dice"] == pytest.approx(2 * inter / (p + g))  # 1000 / 2200
    assert m["iou"] == pytest.approx(inter / (p + g - inter))  # 500 / 1700
    assert m["voe"] == pytest.approx(1 - inter / (p + g - inter))
    assert m["rvd"] == pytest.approx((p - g) / g)  # +0.2
    assert m["precision"] == pytest.approx(inter / p)
    assert m["recall"] == pytest.approx(inter / g)
    tn = total - (p + g - inter)
    assert m["specificity"] == pytest.approx(tn / (tn + p - inter))
    assert m["accuracy"] == pytest.approx((inter + tn) / total)


def test_volume_ml_of_box_with_anisotropic_spacing():
    labels = _labels()
    labels[2:12, 5:25, 10:15] = LIVER  # 10 * 20 * 5 = 1000 voxels
    ref = labels.copy()
    ref[2:12, 5:25, 10:13] = LIVER
    ref[2:12, 5:25, 13:15] = 0  # 600 voxels
    result = evaluate_case(labels, ref, ANISO)
    # 0.8 * 0.8 * 2.0 = 1.28 mm^3 per voxel; 1000 mm^3 = 1 mL.
    assert result["liver_vol_pred_ml"] == pytest.approx(1000 * 1.28 / 1000)
    assert result["liver_vol_ref_ml"] == pytest.approx(600 * 1.28 / 1000)
    assert result["liver_rvd"] == pytest.approx(400 / 600)


def test_tumour_burden_and_its_error():
    ref, pred = _labels(), _labels()
    ref[5:15, 5:15, 5:15] = LIVER  # liver 1000 voxels (tumour included)
    pred[5:15, 5:15, 5:15] = LIVER
    ref[6:10, 6:11, 6:11] = TUMOUR  # 100 voxels -> burden 0.10
    pred[6:8, 6:11, 6:11] = TUMOUR  # 50 voxels -> burden 0.05
    result = evaluate_case(pred, ref, ANISO)
    assert result["tumour_burden_ref"] == pytest.approx(0.10)
    assert result["tumour_burden_pred"] == pytest.approx(0.05)
    assert result["tumour_burden_abs_error"] == pytest.approx(0.05)


# --- surface distances --------------------------------------------------------------------


def test_shifted_sphere_matches_analytic_distances():
    # Two spheres of radius R whose centres are d apart (d <= R): a point on one sphere at
    # polar angle t to the shift axis is |sqrt(R^2 + 2 R d cos t + d^2) - R| from the
    # other sphere. cos t is uniform over a sphere's surface, which makes that distance
    # exactly uniform on [0, d]: ASSD = d / 2, HD95 = 0.95 d, maximum = d, for any R >= d.
    radius, d = 20.0, 8.0
    cos_t = np.linspace(-1.0, 1.0, 200_001)
    dist = np.abs(np.sqrt(radius**2 + 2 * radius * d * cos_t + d**2) - radius)
    assert dist.mean() == pytest.approx(d / 2, rel=1e-4)  # numeric check of the analytic mean
    assert np.percentile(dist, 95) == pytest.approx(0.95 * d, rel=1e-4)

    shape = (64, 64, 40)
    centre = (32 * 0.8, 32 * 0.8, 16 * 2.0)
    ref = _ball(shape, ANISO, centre, radius)
    # Shift by 4 slices along axis 2 (2.0 mm): ignoring or permuting the spacing would
    # give 4 or 3.2 mm instead of 8 mm and fail the HD checks below.
    pred = np.roll(ref, 4, axis=2)
    m = class_metrics(pred, ref, ANISO)
    tol = max(ANISO)  # one voxel of the coarsest axis
    # Observed: ASSD 4.54, HD95 8.0, MSSD 8.0. ASSD is biased high because every surface
    # voxel weighs the same and the caps facing the 2 mm axis (where the distance is ~d)
    # hold more voxels per mm^2 than the equator; discrete HD95 hits d on the flat caps.
    assert m["assd"] == pytest.approx(d / 2, abs=tol)
    assert m["hd95"] == pytest.approx(0.95 * d, abs=tol)
    assert m["mssd"] == pytest.approx(d, abs=tol)
    assert m["surface_defined"] is True
    # The shift is symmetric, so each directed distance set has the same answers.
    directed = surface_distances(pred, ref, ANISO)
    assert directed is not None
    # Independent cross-check of the KD-tree: an anisotropic EDT to the other surface.
    surf_pred = pred & ~ndimage.binary_erosion(pred)
    surf_ref = ref & ~ndimage.binary_erosion(ref)
    edt_to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=ANISO)[surf_pred]
    np.testing.assert_allclose(directed[0], edt_to_ref, rtol=1e-12)
    for one_way in directed:
        assert one_way.mean() == pytest.approx(d / 2, abs=tol)
        assert np.percentile(one_way, 95) == pytest.approx(0.95 * d, abs=tol)
        assert one_way.max() == pytest.approx(d, abs=tol)


def test_surface_distances_unchanged_by_cropping_and_border():
    # The same pattern alone in a tight array (touching the border) and inside a larger
    # array must give identical distances: checks the bounding-box crop and that border
    # voxels count as surface.
    small_ref = np.ones((6, 7, 5), dtype=bool)
    small_pred = np.zeros_like(small_ref)
    small_pred[1:, 2:, :4] = True
    big_ref = np.zeros((40, 40, 40), dtype=bool)
    big_pred = np.zeros_like(big_ref)
    big_ref[20:26, 3:10, 30:35] = small_ref
    big_pred[20:26, 3:10, 30:35] = small_pred
    small = surface_distances(small_pred, small_ref, ANISO)
    big = surface_distances(big_pred, big_ref, ANISO)
    assert small is not None and big is not None
    for a, b in zip(small, big, strict=True):
        np.testing.assert_allclose(np.sort(a), np.sort(b))


def _random_case(seed: int, shape=(48, 48, 32)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    bowl = 0.5 - sum(g * g for g in grids)

    def blobby(offset: float) -> np.ndarray:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
        return noise * 6 + bowl > offset

    ref, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    ref[blobby(0.0)] = LIVER
    pred[np.roll(blobby(0.0), 2, axis=0) | (ref > 0)] = LIVER
    ref[(ref > 0) & (ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0.12)] = TUMOUR
    pred[(pred > 0) & (ndimage.gaussian_filter(rng.standard_normal(shape), 2) > 0.12)] = TUMOUR
    pred[(ref == TUMOUR) & (pred > 0) & (rng.random(shape) < 0.7)] = TUMOUR
    return pred, ref


def test_agrees_with_monai_metrics():
    # Surfaces here are defined exactly as in MONAI (mask XOR 6-connected erosion, exact
    # Euclidean distances between voxel centres), so the only expected difference is
    # MONAI returning float32: tolerance rel 1e-5 (abs 1e-5 for values near 0).
    spacing = (0.8, 0.9, 2.0)
    pred, ref = _random_case(7)
    result = evaluate_case(pred, ref, spacing, nsd_tolerance_mm=2.0)
    assert result["tumour_surface_defined"] and result["liver_surface_defined"]
    assert 0.3 < result["tumour_dice"] < 0.95  # a non-trivial case

    def onehot(labels: np.ndarray) -> torch.Tensor:
        channels = [labels >= LIVER, labels == TUMOUR]
        return torch.as_tensor(np.stack(channels)[None], dtype=torch.float32)

    y_pred, y = onehot(pred), onehot(ref)
    kw = {"spacing": spacing}
    expected = {
        "dice": DiceMetric(include_background=True)(y_pred, y),
        "iou": MeanIoU(include_background=True)(y_pred, y),
        "hd95": HausdorffDistanceMetric(include_background=True, percentile=95)(y_pred, y, **kw),
        "mssd": HausdorffDistanceMetric(include_background=True)(y_pred, y, **kw),
        "assd": SurfaceDistanceMetric(include_background=True, symmetric=True)(y_pred, y, **kw),
        "nsd": SurfaceDiceMetric([2.0, 2.0], include_background=True)(y_pred, y, **kw),
    }
    for key, values in expected.items():
        for channel, name in enumerate(("liver", "tumour")):
            monai_value = float(values[0, channel])
            ours = result[f"{name}_{key}"]
            assert ours == pytest.approx(monai_value, rel=1e-5, abs=1e-5), (name, key)


# --- empty-case policy --------------------------------------------------------------------


def _liver_only() -> np.ndarray:
    labels = _labels()
    labels[4:28, 4:28, 4:28] = LIVER
    return labels


def test_both_empty_tumour_follows_policy():
    result = evaluate_case(_liver_only(), _liver_only(), ANISO)
    assert result["tumour_dice"] == 1.0
    assert result["tumour_iou"] == 1.0
    assert result["tumour_voe"] == 0.0
    assert result["tumour_precision"] == 1.0 and result["tumour_recall"] == 1.0
    assert math.isnan(result["tumour_rvd"])
    assert result["tumour_surface_defined"] is False
    for key in ("assd", "mssd", "hd95", "nsd"):
        assert math.isnan(result[f"tumour_{key}"])
    assert result["lesion_n_ref"] == result["lesion_n_pred"] == result["lesion_fp"] == 0
    assert result["tumour_burden_ref"] == result["tumour_burden_abs_error"] == 0.0


def test_false_positive_only_case():
    pred = _liver_only()
    pred[10:14, 10:14, 10:14] = TUMOUR
    result = evaluate_case(pred, _liver_only(), ANISO)
    assert result["tumour_dice"] == 0.0 and result["tumour_iou"] == 0.0
    assert result["tumour_voe"] == 1.0
    assert math.isnan(result["tumour_rvd"])  # reference empty
    assert result["tumour_precision"] == 0.0 and math.isnan(result["tumour_recall"])
    assert result["tumour_surface_defined"] is False and math.isnan(result["tumour_hd95"])
    assert (result["lesion_fp"], result["lesion_tp_any"], result["lesion_fn_any"]) == (1, 0, 0)


def test_false_negative_only_case():
    ref = _liver_only()
    ref[10:14, 10:14, 10:14] = TUMOUR
    result = evaluate_case(_liver_only(), ref, ANISO)
    assert result["tumour_dice"] == 0.0
    assert result["tumour_rvd"] == -1.0
    assert math.isnan(result["tumour_precision"]) and result["tumour_recall"] == 0.0
    assert result["tumour_surface_defined"] is False and math.isnan(result["tumour_assd"])
    assert (result["lesion_fp"], result["lesion_fn_iou"], result["lesion_fn_any"]) == (0, 1, 1)


def test_summary_averages_surface_metrics_only_where_defined():
    ref = _liver_only()
    ref[10:14, 10:14, 10:14] = TUMOUR
    pred = _liver_only()
    pred[10:14, 10:14, 11:15] = TUMOUR  # shifted by one 2 mm slice
    defined = evaluate_case(pred, ref, ANISO, case_id="a")
    undefined = evaluate_case(_liver_only(), ref, ANISO, case_id="b")  # FN only
    summary = summarize([defined, undefined])
    hd95 = summary["tumour"]["hd95"]
    assert hd95["n"] == 1 and summary["tumour"]["n_surface_defined"] == 1
    assert hd95["mean"] == pytest.approx(defined["tumour_hd95"])  # not halved by a NaN->0
    assert hd95["mean"] == pytest.approx(2.0)
    assert summary["tumour"]["dice"]["n"] == 2
    assert summary["tumour"]["dice"]["mean"] == pytest.approx(defined["tumour_dice"] / 2)


# --- data-set level -----------------------------------------------------------------------


def test_per_case_versus_global_dice():
    big_ref = _labels()
    big_ref[0:10, 0:10, 0:10] = LIVER  # 1000 voxels, predicted perfectly: Dice 1
    small_ref = _labels()
    small_ref[0:10, 0:10, 0:1] = LIVER  # 100 voxels
    small_pred = _labels()
    small_pred[0:5, 0:10, 0:1] = LIVER  # 50 voxels inside it: Dice 100 / 150
    cases = [
        evaluate_case(big_ref, big_ref, ANISO, case_id="big"),
        evaluate_case(small_pred, small_ref, ANISO, case_id="small"),
    ]
    liver = summarize(cases)["liver"]
    assert liver["dice"]["mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert liver["dice"]["median"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert liver["dice"]["sd"] == pytest.approx(np.std([1.0, 2 / 3], ddof=1))
    assert liver["dice"]["n"] == 2
    assert liver["dice_global"] == pytest.approx(2 * (1000 + 50) / (2000 + 150))


def test_summary_pools_lesions_and_burden():
    ref = _liver_only()
    ref[6:10, 6:10, 6:10] = TUMOUR
    ref[20:24, 20:24, 20:24] = TUMOUR
    pred = _liver_only()
    pred[6:10, 6:10, 6:10] = TUMOUR  # one hit, one miss
    pred[14:16, 20:22, 6:8] = TUMOUR  # one false positive
    summary = summarize([evaluate_case(pred, ref, ANISO, case_id="c1")])
    assert summary["n_cases"] == 1
    lesions = summary["lesions"]
    assert (lesions["iou"]["tp"], lesions["iou"]["fp"], lesions["iou"]["fn"]) == (1, 1, 1)
    assert lesions["iou"]["precision"] == pytest.approx(0.5)
    assert lesions["iou"]["f1"] == pytest.approx(0.5)
    records = summary["lesion_records"]
    assert sum(r["kind"] == "ref" for r in records) == 2
    assert all(r["case_id"] == "c1" for r in records)
    assert summary["burden"]["abs_error"]["mean"] == pytest.approx((128 - 72) / 24**3)


# --- validation ---------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(8, 8, 9\)"):
        evaluate_case(np.zeros((8, 8, 8), np.uint8), np.zeros((8, 8, 9), np.uint8), ANISO)


@pytest.mark.parametrize(
    "spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1, 1, math.nan), "abc"]
)
def test_bad_spacing_is_rejected(spacing):
    labels = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(labels, labels, spacing)


def test_labels_outside_range_are_rejected():
    labels = np.zeros((4, 4, 4), np.uint8)
    bad = labels.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match="labels"):
        evaluate_case(bad, labels, ANISO)
