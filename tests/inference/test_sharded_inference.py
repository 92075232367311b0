"""torchrun shares a folder among processes: every scan once, the tables merged by rank 0.

The two-process run and the one-process run it is compared with are real command lines
(``torchrun -m monai.bundle run inference`` on CPU with gloo, and ``python -m monai.bundle
run inference``), started together once for the module.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from oracle_predictor import INFERENCE, TINY, save_tiny_checkpoint

from pipeline.data.synth.phantom import PhantomConfig, generate_phantom
from pipeline.inference.sharding import deal
from pipeline.io import save_nifti

# Different sizes, so the deal by bytes has something to balance.
SHAPES = [(32, 32, 32), (48, 48, 40), (40, 40, 36), (36, 44, 32), (48, 40, 48)]
GOOD = [f"case{i}" for i in range(len(SHAPES))]


@pytest.mark.parametrize(
    ("sizes", "n_shards", "expected"),
    [
        # Largest first, each to the lightest shard: 8 | 7, 6 | 5, 4 (tie: fewer items).
        ([8, 7, 6, 5, 4], 2, [[0, 3, 4], [1, 2]]),
        # One large item: the small ones all go to the other shard until it is as heavy.
        ([1, 1, 10, 1, 1, 1], 2, [[2], [0, 1, 3, 4, 5]]),
        ([1, 1, 1, 1], 2, [[0, 2], [1, 3]]),  # equal sizes: listed order, dealt in turn
        ([3, 3], 3, [[0], [1], []]),  # more shards than items
        ([], 2, [[], []]),
    ],
)
def test_deal_gives_every_item_to_one_shard_largest_first(sizes, n_shards, expected):
    shards = deal(sizes, n_shards)
    assert shards == expected
    assert sorted(i for shard in shards for i in shard) == list(range(len(sizes)))
    assert deal(list(sizes), n_shards) == shards  # the same sizes, the same deal


def test_deal_balances_many_items_within_one_item():
    sizes = [int(s) for s in np.random.default_rng(0).integers(1, 1000, size=101)]
    loads = [sum(sizes[i] for i in shard) for shard in deal(sizes, 4)]
    assert max(loads) - min(loads) <= max(sizes)
    with pytest.raises(ValueError, match="n_shards"):
        deal(sizes, 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The folder segmented by two torchrun processes and by one process."""
    root = tmp_path_factory.mktemp("sharded")
    folder = root / "in"
    for i, shape in enumerate(SHAPES):
        phantom = generate_phantom(100 + i, PhantomConfig(shape=shape))
        save_nifti(phantom.image, phantom.affine, folder / f"case{i}.nii.gz")
    data = (folder / "case1.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    ckpt = save_tiny_checkpoint(root / "model.pt")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launchers = {
        "sharded": [*torchrun, "--nproc_per_node=2", "-m", "monai.bundle"],
        "single": [sys.executable, "-m", "monai.bundle"],
    }
    # One thread per process: torchrun warns otherwise, and three processes share 2 cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = {}
    for name, launcher in launchers.items():
        args = [*launcher, "run", "inference", "--config_file", str(INFERENCE),
                "--logging_file", "False", "--ckpt", str(ckpt), "--input_dir", str(folder),
                "--output_dir", str(root / name)]  # fmt: skip
        for key, value in TINY.items():
            args += [f"--{key}", json.dumps(value)]
        started[name] = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    done = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        done[name] = (
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
            root / name,
        )
    return done


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_failed_scan_makes_the_run_exit_non_zero_and_rank0_alone_reports(runs):
    process, out = runs["sharded"]
    assert process.returncode != 0
    assert "1 scan(s) failed" in process.stderr
    assert process.stdout.count("inference: 5 segmented, 0 already done, 1 failed") == 1
    failures = _rows(out / "failures.csv")
    assert [f["case"] for f in failures] == ["truncated"]
    assert failures[0]["input"].endswith("truncated.nii.gz")
    assert "truncated" in failures[0]["error"]  # the reason, not only the file
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_every_scan_is_dealt_to_one_rank_and_done_once(runs):
    _, out = runs["sharded"]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert run["done"] == GOOD  # each good case once, in the folder's order
    assert [f["case"] for f in run["failed"]] == ["truncated"]
    assert run["not_run"] == []
    dealt = {case: share["rank"] for share in run["ranks"] for case in share["cases"]}
    assert sum(len(share["cases"]) for share in run["ranks"]) == len(dealt) == 6
    assert all(share["done"] > 0 for share in run["ranks"])  # both ranks worked
    for case in GOOD:
        record = json.loads((out / f"{case}.json").read_text())
        assert (record["rank"], record["world_size"]) == (dealt[case], 2)
    timings = _rows(out / "timings.csv")
    assert {t["case"]: int(t["rank"]) for t in timings} == {case: dealt[case] for case in GOOD}


def test_merged_tables_equal_a_one_process_run(runs):
    single, single_out = runs["single"]
    assert single.returncode != 0 and "1 scan(s) failed" in single.stderr
    _, out = runs["sharded"]
    quantification = _rows(out / "quantification.csv")
    assert [row["case_id"] for row in quantification] == GOOD
    assert quantification == _rows(single_out / "quantification.csv")
    for table in ("failures.csv", "warnings.csv"):
        assert _rows(out / table) == _rows(single_out / table)
    one = json.loads((single_out / "run.json").read_text())
    assert one["world_size"] == 1
    assert [share["cases"] for share in one["ranks"]] == [[*GOOD, "truncated"]]
    for case in GOOD:
        sharded_mask = np.asarray(nib.load(out / f"{case}_seg.nii.gz").dataobj)
        single_mask = np.asarray(nib.load(single_out / f"{case}_seg.nii.gz").dataobj)
        assert np.array_equal(sharded_mask, single_mask), case
        assert sharded_mask.any()
