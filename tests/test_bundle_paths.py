"""Where a bundle command's configs and bundle root come from (pipeline/bundle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_files import CONFIGS, ROOT

from pipeline.bundle import (
    bundle_root_from_command_line,
    check_command_line_configs,
    config_files_from_command_line,
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
