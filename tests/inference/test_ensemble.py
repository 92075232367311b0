"""Fold ensembles: several checkpoints in one inference average their probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oracle_predictor import TINY, block_ct, inference_parser

from pipeline.inference.folder_run import FolderRun
from pipeline.inference.scans import Scan
from pipeline.io import save_nifti, sha256_of
from pipeline.nets.ensemble import ProbabilityEnsemble
from pipeline.nets.networks import build_network


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("folds")
    paths = []
    for seed in range(3):  # three different networks, as three folds would give
        torch.manual_seed(seed)
        net = build_network("unet", channels=TINY["channels"], num_res_units=1, norm="instance",
                            roi_size=TINY["roi_size"], spacing=TINY["pixdim"])  # fmt: skip
        paths.append(folder / f"fold{seed}.pt")
        torch.save(net.state_dict(), paths[-1])
    image = block_ct((48, 44, 20))[0]
    scan = save_nifti(image, np.diag([2.0, 2.0, 3.0, 1.0]), folder / "case.nii.gz")
    return paths, Scan("case", scan, "nifti")


def _probabilities(ckpt, scan):
    predictor = inference_parser(ckpt=ckpt, save_probabilities=True).get_parsed_content("predictor")
    return predictor, predictor.predict(scan)


def test_the_ensemble_is_the_mean_of_its_members_probabilities(folds):
    paths, scan = folds
    singles = [_probabilities(str(p), scan)[1].probabilities for p in paths]
    assert not np.allclose(singles[0], singles[1], atol=1e-3)  # the members differ
    predictor, together = _probabilities([str(p) for p in paths], scan)
    assert isinstance(predictor.network, ProbabilityEnsemble)
    assert len(predictor.network.members) == 3
    np.testing.assert_allclose(together.probabilities, np.mean(singles, axis=0), atol=1e-5)


def test_calling_the_ensemble_on_one_window_gives_log_mean_probabilities():
    torch.manual_seed(0)
    nets = [torch.nn.Conv3d(1, 3, 1) for _ in range(2)]
    x = torch.rand(1, 1, 4, 4, 4)
    expected = torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0)
    out = ProbabilityEnsemble(nets)(x)
    torch.testing.assert_close(torch.softmax(out, 1), expected)
    with pytest.raises(ValueError, match="at least 2 networks"):
        ProbabilityEnsemble(nets[:1])


def test_an_ensemble_run_records_every_checkpoint(folds, tmp_path):
    paths, scan = folds
    predictor = inference_parser(ckpt=[str(p) for p in paths]).get_parsed_content("predictor")
    FolderRun(predictor, [scan], tmp_path, checkpoint=paths, progress=False).run()
    record = json.loads((tmp_path / "case.json").read_text())
    assert record["checkpoint"] == [str(p) for p in paths]
    assert record["checkpoint_sha256"] == "+".join(sha256_of(p) for p in paths)


def test_tta_mirrors_only_the_axes_training_mirrored(tmp_path, caplog):
    from pipeline.checkpoints import recorded_setting
    from pipeline.inference.inferers import FlipTTAInferer

    trained = tmp_path / "model.pt"
    torch.save({"model": {}, "trained_for": {"role": "single", "mirrored_axes": []}}, trained)
    assert recorded_setting(str(trained), "mirrored_axes", [0, 1, 2]) == []
    assert recorded_setting([str(trained)], "mirrored_axes", [0, 1, 2]) == []
    assert recorded_setting(str(tmp_path / "absent.pt"), "mirrored_axes", [0, 1]) == [0, 1]
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(1)}, bare)  # an older checkpoint records nothing
    assert recorded_setting(str(bare), "mirrored_axes", [0, 1, 2]) == [0, 1, 2]

    with caplog.at_level("WARNING"):
        once = FlipTTAInferer(lambda x, net: net(x), spatial_axes=[], enabled=True)
    assert once.flips == [()] and "trained without mirroring" in caplog.text
    assert len(FlipTTAInferer(lambda x, net: net(x), spatial_axes=[0, 1, 2]).flips) == 8
    parser = inference_parser(ckpt=str(trained), tta=True)
    assert parser.get_parsed_content("inferer").flips == [()]
