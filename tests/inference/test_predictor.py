from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_files import CONFIGS
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer
from oracle_predictor import (
    INFERENCE,
    TINY,
    block_ct,
    inference_parser,
    oracle_predictor,
    save_tiny_checkpoint,
)

import pipeline
from pipeline.checkpoints import CheckpointMismatchError, load_network_weights, sha256_of
from pipeline.inference.folder_run import FolderRun
from pipeline.inference.inferers import FlipTTAInferer
from pipeline.io import save_nifti
from pipeline.nets.networks import build_network

SPACING = (0.8, 0.9, 2.5)
ORIENTATIONS = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAS": (-1, 1, 1)}


def _affine(orientation: str, spacing=SPACING) -> np.ndarray:
    signs = ORIENTATIONS[orientation]
    affine = np.diag([s * d for s, d in zip(signs, spacing, strict=True)] + [1.0])
    affine[:3, 3] = (-120.0, 35.5, -300.25)
    return affine


_parser = inference_parser


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def _oracle_predictor(tiny_ckpt: Path, **overrides):
    return oracle_predictor(tiny_ckpt, **overrides)


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_mask_has_the_scans_shape_affine_and_voxels(tmp_path, tiny_ckpt, orientation):
    image, block = block_ct()
    scan = save_nifti(image, _affine(orientation), tmp_path / "in" / "case.nii.gz")
    # Network grid = the scan's spacing: orientation and crop are inverted exactly.
    predictor = _oracle_predictor(tiny_ckpt, pixdim=list(SPACING))
    FolderRun(predictor, scan.parent, tmp_path / "out", progress=False).run()
    out = nib.load(tmp_path / "out" / "case_seg.nii.gz")
    original = nib.load(scan)
    assert out.shape == original.shape
    assert np.array_equal(out.affine, original.affine)
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(out.dataobj), block.astype(np.uint8))


@pytest.mark.parametrize("orientation", ["LPS", "LAS"])
def test_mask_after_resampling_to_a_coarser_grid_overlays_the_scan(
    tmp_path, tiny_ckpt, orientation
):
    image, block = block_ct((60, 54, 16))
    block = np.zeros_like(block)
    block[10:40, 12:42, 4:12] = True
    image[(image == 300)] = 0
    image[block] = 300
    scan = save_nifti(image, _affine(orientation), tmp_path / "in" / "case.nii.gz")
    predictor = _oracle_predictor(tiny_ckpt, pixdim=[2.0, 2.0, 3.0])
    result = pipeline.predict(scan, predictor=predictor)
    assert result.labels.shape == image.shape
    assert np.array_equal(result.affine, nib.load(scan).affine)
    liver = result.labels == 1
    overlap = np.logical_and(liver, block).sum()
    dice = 2 * overlap / (liver.sum() + block.sum())
    # Nearest neighbour from a grid 2.5 times coarser puts each face of the block within
    # one network voxel (ties included: the oracle's 150 HU lies half-way between the
    # block and the body), so Dice >= 0.85 for this block; a flip or a shift of the
    # grid would move the mask's centre by far more than a network voxel.
    assert dice > 0.85
    offset_mm = (np.argwhere(liver).mean(0) - np.argwhere(block).mean(0)) * np.array(SPACING)
    assert np.all(np.abs(offset_mm) < [2.0, 2.0, 3.0])


def test_predict_on_an_array_quantifies_the_known_block(tiny_ckpt):
    image, block = block_ct()
    affine = _affine("LPS")
    predictor = _oracle_predictor(tiny_ckpt, pixdim=list(SPACING))
    result = pipeline.predict(image, affine=affine, predictor=predictor)
    assert np.array_equal(result.labels, block.astype(np.uint8))
    voxel_ml = np.prod(SPACING) / 1000.0
    assert result.quantification["liver_volume_ml"] == pytest.approx(block.sum() * voxel_ml)
    assert result.quantification["n_tumours"] == 0
    assert set(result.seconds) == {"load", "preprocess", "network", "invert", "postprocess"}
    with pytest.raises(ValueError, match="affine"):
        pipeline.predict(image, predictor=predictor)


class _BandOracle(torch.nn.Module):
    """Liver where the windowed intensity is over 0.5 (150 HU), tumour over 0.9 (350 HU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver = 40.0 * (x - 0.5)
        return torch.cat([torch.zeros_like(x), liver, liver + 40.0 * (x - 0.9)], dim=1)


@pytest.mark.parametrize("pixdim", [[1.6, 1.8, 2.5], [1.5, 1.5, 3.0]], ids=["2x", "uneven"])
def test_postprocessing_on_the_network_grid_equals_it_on_the_scans(tiny_ckpt, monkeypatch, pixdim):
    image = np.full((72, 64, 20), -1000, dtype=np.int16)
    image[4:-4, 4:-4, 1:-1] = 0  # the body
    image[10:50, 10:50, 4:16] = 300  # the liver
    image[24:30, 24:30, 8:12] = 0  # an enclosed hole
    image[58:64, 50:56, 4:8] = 300  # a detached island
    image[40:46, 14:20, 6:10] = 400  # a tumour in the liver
    image[60:64, 10:14, 12:16] = 400  # a tumour with no liver around it
    image[14, 40, 12] = 400  # a speck under 10 mm^3
    affine = _affine("LPS")
    predictor = _oracle_predictor(tiny_ckpt, pixdim=pixdim)
    predictor.network = _BandOracle()

    import pipeline.inference.predictor as module

    early = module.postprocess_label_blocks
    calls: list[bool] = []

    def spy(*args, **kwargs):
        done = early(*args, **kwargs)
        calls.append(done is not None)
        return done

    monkeypatch.setattr(module, "postprocess_label_blocks", spy)
    on_network_grid = pipeline.predict(image, affine=affine, predictor=predictor).labels
    assert calls == [True]
    monkeypatch.setattr(module, "postprocess_label_blocks", lambda *args, **kwargs: None)
    on_scan_grid = pipeline.predict(image, affine=affine, predictor=predictor).labels
    unprocessed = pipeline.predict(
        image, affine=affine, predictor=predictor.with_postprocessing(None)
    ).labels
    np.testing.assert_array_equal(on_network_grid, on_scan_grid)
    # The post-processing had work to do: the island, the hole, the floating tumour.
    assert (on_scan_grid[58:64, 50:56, 4:8] == 0).all() and unprocessed[60, 52, 6] == 1
    assert (on_scan_grid[25:29, 25:29, 9:11] == 1).all() and unprocessed[27, 27, 10] == 0
    assert (on_scan_grid[61:63, 11:13, 13:15] == 0).all() and unprocessed[62, 12, 14] == 2
    assert (on_scan_grid[41:45, 15:19, 7:9] == 2).all()


def _bad_scans(folder: Path) -> dict[str, str]:
    """Each kind of bad scan, and a word its failure reason must contain."""
    good = folder / "good.nii.gz"
    save_nifti(block_ct()[0], _affine("RAS"), good)
    (folder / "unreadable.nii.gz").write_bytes(b"this is not a NIfTI file" * 10)
    data = good.read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    save_nifti(np.zeros((20, 20), np.int16), np.eye(4), folder / "flat2d.nii.gz")
    save_nifti(np.zeros((20, 20, 8, 3), np.int16), np.eye(4), folder / "series4d.nii.gz")
    nan = block_ct()[0].astype(np.float32)
    nan[3, 3, 3] = np.nan
    save_nifti(nan, _affine("RAS"), folder / "nan.nii.gz")
    # No sform / qform: the grid comes from pixdim, where one voxel size is zero.
    zero = nib.Nifti1Image(block_ct()[0], None)
    zero.header["pixdim"][1:4] = (0.8, 0.0, 2.5)
    nib.save(zero, folder / "zero_spacing.nii.gz")
    (folder / "empty_dicom").mkdir()
    return {
        "unreadable": "unreadable",
        "truncated": "truncated",
        "flat2d": "2D",
        "series4d": "4D",
        "nan": "NaN",
        "zero_spacing": "spacing",
        "empty_dicom": "empty",
    }


def test_folder_with_bad_scans_writes_every_good_mask_and_lists_each_failure(tmp_path, tiny_ckpt):
    expected = _bad_scans(tmp_path / "in")
    run = _parser(
        ckpt=str(tiny_ckpt), input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out")
    )
    with pytest.raises(SystemExit, match="7 scan"):
        run.get_parsed_content("folder_run")()
    out = tmp_path / "out"
    assert (out / "good_seg.nii.gz").exists()
    with open(out / "failures.csv", newline="") as handle:
        failures = {row["case"]: row for row in csv.DictReader(handle)}
    assert set(failures) == set(expected)
    for case, word in expected.items():
        assert case in failures[case]["input"]
        assert word.lower() in failures[case]["error"].lower(), failures[case]["error"]
    record = json.loads((out / "good.json").read_text())
    assert record["checkpoint_sha256"] == sha256_of(tiny_ckpt)
    assert set(record["seconds"]) >= {"load", "preprocess", "network", "invert", "save"}
    with open(out / "quantification.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ["good"]
    # Nothing half-written: every file in the output is a finished one.
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_command_line_run_exits_non_zero_when_a_scan_fails(tmp_path, tiny_ckpt):
    folder = tmp_path / "in"
    save_nifti(block_ct()[0], _affine("LAS"), folder / "good.nii.gz")
    (folder / "broken.nii.gz").write_bytes(gzip.compress(b"not a header"))
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        str(INFERENCE),
        "--logging_file",
        "False",
        "--ckpt",
        str(tiny_ckpt),
        "--input_dir",
        str(folder),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    for key, value in TINY.items():
        args += [f"--{key}", json.dumps(value)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "1 scan(s) failed" in done.stderr
    # Nothing a user cannot act on (a library's FutureWarning, a missing GPU decoder).
    noise = [line for line in done.stderr.splitlines() if "Warning" in line or "nvImage" in line]
    assert noise == []
    assert (tmp_path / "out" / "good_seg.nii.gz").exists()
    assert "broken" in (tmp_path / "out" / "failures.csv").read_text()


def test_rerun_skips_finished_cases_unless_overwrite(tmp_path, tiny_ckpt):
    save_nifti(block_ct()[0], _affine("RAS"), tmp_path / "in" / "a.nii.gz")
    predictor = _parser(ckpt=str(tiny_ckpt)).get_parsed_content("predictor")
    first = FolderRun(predictor, tmp_path / "in", tmp_path / "out", progress=False).run()
    assert first.done == ["a"]
    mask = tmp_path / "out" / "a_seg.nii.gz"
    stamp = mask.stat().st_mtime_ns
    again = FolderRun(predictor, tmp_path / "in", tmp_path / "out", progress=False).run()
    assert again.skipped == ["a"] and again.done == []
    assert mask.stat().st_mtime_ns == stamp
    redo = FolderRun(
        predictor, tmp_path / "in", tmp_path / "out", overwrite=True, progress=False
    ).run()
    assert redo.done == ["a"]
    assert "a" in (tmp_path / "out" / "quantification.csv").read_text()


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import pipeline.io

    def crash_midway(image, path):
        Path(path).write_bytes(b"\x1f\x8b half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.io.nib, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_nifti(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp_path / "case_seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path, tiny_ckpt):
    other = build_network("unet", channels=[4, 8], num_res_units=1, norm="instance")
    with pytest.raises(CheckpointMismatchError) as err:
        load_network_weights(other, tiny_ckpt)
    message = str(err.value)
    assert str(tiny_ckpt) in message and "unexpected keys model." in message
    assert "shape mismatches model." in message
    # A training checkpoint ({"model": ...}) saved from DDP ("module." prefix) loads.
    state = torch.load(tiny_ckpt, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    net = build_network("unet", channels=TINY["channels"], num_res_units=1, norm="instance")
    load_network_weights(net, wrapped)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key])
    with pytest.raises(FileNotFoundError, match="train first"):
        load_network_weights(net, tmp_path / "missing.pt")


def test_model_used_at_other_settings_than_trained_for_stops_with_each_named(tmp_path, tiny_ckpt):
    # As training saves it: the weights and what they were trained for (common.yaml's
    # trained_for, here the tiny config's own).
    trained_for = _parser().get_parsed_content("trained_for")
    assert trained_for["role"] == "single" and trained_for["pixdim"] == TINY["pixdim"]
    ckpt = tmp_path / "model.pt"
    torch.save(
        {"model": torch.load(tiny_ckpt, weights_only=True), "trained_for": trained_for}, ckpt
    )
    # The same settings load (4 and 4.0 are the same voxel size).
    same = _parser(ckpt=str(ckpt), pixdim=[int(p) for p in TINY["pixdim"]])
    assert same.get_parsed_content("trained_network") is not None

    other_size = [p * 0.5 for p in TINY["pixdim"]]
    wrong = _parser(ckpt=str(ckpt), pixdim=other_size, hu_window=[-200, 300])
    with pytest.raises(RuntimeError) as err:  # MONAI's wrapper of the config's error
        wrong.get_parsed_content("trained_network")
    assert isinstance(err.value.__cause__, CheckpointMismatchError)
    message = str(err.value.__cause__)
    assert str(ckpt) in message
    assert f"pixdim: trained {TINY['pixdim']!r}, configured {other_size!r}" in message
    assert "hu_window: trained [-100, 400], configured [-200, 300]" in message
    assert "role" not in message and "channels" not in message  # only what differs

    # A checkpoint from before trained_for was saved loads unchecked.
    old = _parser(ckpt=str(tiny_ckpt), pixdim=other_size)
    assert old.get_parsed_content("trained_network") is not None


def test_flip_tta_is_the_mean_softmax_over_mirrors():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 4, 5, 6)
    weight = torch.randn(3, 1, 2, 1, 1)

    def network(batch):  # not mirror-symmetric: TTA changes the answer
        return torch.nn.functional.conv3d(batch, weight, padding=(1, 0, 0))[:, :, :-1]

    tta = FlipTTAInferer(SimpleInferer(), spatial_axes=(0, 2))(x, network)
    expected = torch.zeros_like(tta)
    for dims in ([], [2], [4], [2, 4]):
        flipped = torch.flip(x, dims) if dims else x
        probs = torch.softmax(network(flipped), 1)
        expected += (torch.flip(probs, dims) if dims else probs) / 4
    torch.testing.assert_close(tta, expected)
    once = FlipTTAInferer(SimpleInferer(), enabled=False)(x, network)
    torch.testing.assert_close(once, torch.softmax(network(x), 1))


def _export(command: str, path: Path, ckpt: Path, *extra: str) -> None:
    """Run ``python -m monai.bundle <command> network_def`` on the tiny network."""
    args = [sys.executable, "-m", "monai.bundle", command, "network_def",
            "--filepath", str(path), "--ckpt_file", str(ckpt),
            "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(INFERENCE),
            *extra]  # fmt: skip
    for key in ("channels", "num_res_units", "pixdim", "roi_size"):
        args += [f"--{key}", json.dumps(TINY[key])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _tiny_network(ckpt: Path) -> torch.nn.Module:
    net = build_network(
        "unet", channels=TINY["channels"], num_res_units=1, norm="instance",
        roi_size=TINY["roi_size"], spacing=TINY["pixdim"],
    )  # fmt: skip
    return load_network_weights(net, ckpt)


def test_torchscript_export_matches_the_eager_network(tmp_path, tiny_ckpt):
    ts = tmp_path / "model.ts"
    _export("ckpt_export", ts, tiny_ckpt)
    scripted = torch.jit.load(str(ts))
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), _tiny_network(tiny_ckpt)(x))


def test_real_dicom_series_gives_a_mask_on_the_series_grid(tmp_path, tiny_ckpt, real_ct_dir):
    series = real_ct_dir / "abdomen_ct_dicom"
    predictor = _parser(ckpt=str(tiny_ckpt)).get_parsed_content("predictor")
    summary = FolderRun(predictor, series, tmp_path / "out", progress=False).run()
    assert summary.done == ["abdomen_ct_dicom"] and not summary.failed
    mask = nib.load(tmp_path / "out" / "abdomen_ct_dicom_seg.nii.gz")
    # The organ labels of the same series were written on its grid (stored with the
    # y axis the other way round): the same voxels in the world once both are canonical.
    organs = nib.load(real_ct_dir / "abdomen_ct_dicom_organs.nii.gz")
    assert mask.shape == organs.shape == (512, 512, 20)
    canonical_mask, canonical_organs = (
        nib.as_closest_canonical(mask),
        nib.as_closest_canonical(organs),
    )
    np.testing.assert_allclose(canonical_mask.affine, canonical_organs.affine, atol=1e-3)


def test_onnx_export_matches_the_eager_network(tmp_path, tiny_ckpt):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    path = tmp_path / "model.onnx"
    _export("onnx_export", path, tiny_ckpt, "--input_shape", "[1,1,16,16,16]")
    x = torch.rand(1, 1, 16, 16, 16)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = _tiny_network(tiny_ckpt)(x).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-4, rtol=1e-4)


def test_a_2d_slice_network_segments_a_volume_through_the_inference_overlay(tmp_path):
    slice_roi = [2 * TINY["roi_size"][0]] * 2
    net = build_network(
        "unet2d", spatial_dims=2, channels=TINY["channels"], num_res_units=1, norm="instance",
        roi_size=slice_roi, spacing=TINY["pixdim"],
    )  # fmt: skip
    ckpt = tmp_path / "unet2d.pt"
    torch.save(net.state_dict(), ckpt)
    parser = ConfigParser()
    # The training overlay itself: it replaces ids by name, so it stacks on inference too.
    parser.read_config([*INFERENCE, str(CONFIGS / "slice2d.yaml")])
    parser.update({**TINY, "ckpt": str(ckpt)})
    predictor = parser.get_parsed_content("predictor")
    image, _ = block_ct()
    scan = save_nifti(image, _affine("LPS"), tmp_path / "case.nii.gz")
    result = pipeline.predict(scan, predictor=predictor)
    assert result.labels.shape == image.shape
    assert np.array_equal(result.affine, nib.load(scan).affine)
    assert set(np.unique(result.labels)) <= {0, 1, 2}
