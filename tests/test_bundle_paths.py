"""Where a bundle command's configs and bundle root come from (pipeline/bundle.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_files import CONFIGS, ROOT

from pipeline.bundle import (
    bundle_root_from_command_line,
    check_command_line_configs,
    config_files_from_command_line,
    root_cause,
)

TRAIN = ["bundles/liver_tumor/configs/common.yaml", "bundles/liver_tumor/configs/train.yaml"]


def test_config_files_are_read_from_either_form_of_the_argument():
    listed = ["python", "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN)]
    assert config_files_from_command_line(listed) == TRAIN
    assert config_files_from_command_line(["run", f"--config_file={TRAIN[1]}"]) == [TRAIN[1]]
    assert config_files_from_command_line(["run", "training"]) == []


def test_bundle_root_is_the_parent_of_the_first_configs_folder(monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["run", "--config_file", str([str(CONFIGS / "common.yaml")])]
    assert Path(bundle_root_from_command_line(argv)) == ROOT / "bundles" / "liver_tumor"


def test_a_command_without_common_yaml_is_refused_with_the_fixed_command():
    check_command_line_configs(["run", "--config_file", str(TRAIN)])  # complete: passes
    check_command_line_configs(["run", "training"])  # no config files (a notebook): passes
    with pytest.raises(SystemExit) as refused:
        check_command_line_configs(["run", "--config_file", TRAIN[1]])
    message = str(refused.value)
    assert "lacks common.yaml" in message
    assert f'--config_file "{TRAIN}"' in message  # the command that works


def test_a_bundle_commands_last_line_is_the_error_to_act_on(tmp_path):
    # A model trained at 1 mm applied with quick.yaml's 6 mm: MONAI reports "Failed to
    # evaluate ConfigExpression" last, so the mismatch is repeated below it.
    ckpt = tmp_path / "model.pt"
    torch.save({"model": {}, "trained_for": {"pixdim": [1.0, 1.0, 1.0]}}, ckpt)
    files = [str(CONFIGS / name) for name in ("common.yaml", "inference.yaml", "quick.yaml")]
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file"]
    result = subprocess.run(
        [*command, str(files), "--ckpt", str(ckpt), "--input_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: CheckpointMismatchError: {ckpt} was trained for other")
    assert "pixdim: trained [1.0, 1.0, 1.0], configured [6.0, 6.0, 6.0]" in last


def test_root_cause_follows_the_chain_to_its_first_error():
    try:
        try:
            raise ValueError("the real problem")
        except ValueError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as outer:
        cause = root_cause(outer)
    assert isinstance(cause, ValueError) and str(cause) == "the real problem"
    plain = KeyError("alone")
    assert root_cause(plain) is plain
