"""pipeline.workflows.measured_process: exit code, timeout and each process's own peak memory."""

from __future__ import annotations

import sys

import pytest

from pipeline.workflows.measured_process import run_measured


def test_peak_memory_belongs_to_each_process_alone(tmp_path):
    big = run_measured(
        [sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
        tmp_path / "big.log",
    )
    small = run_measured([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert big.returncode == small.returncode == 0
    assert big.peak_memory_mb > 200
    assert 0 < small.peak_memory_mb < 100  # not the earlier child's peak
    assert big.seconds > 0


def test_exit_code_and_timeout(tmp_path):
    failed = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "a.log")
    assert failed.returncode == 3
    with pytest.raises(TimeoutError):
        run_measured([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "b", 0.5)
