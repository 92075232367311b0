from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from bundle_files import TRAIN_QUICK

from pipeline.workflows.sweep import main
from pipeline.workflows.sweep_grid import (
    GridSpecError,
    grid_points,
    parse_grid,
    parse_settings,
    parse_value,
    point_name,
    split_top_level,
)
from pipeline.workflows.sweep_tables import markdown_table, write_tables

QUICK = str(TRAIN_QUICK)
# Smaller than quick.yaml still: 12 mm voxels give volumes of about 35^3, so a 16^3
# sliding window needs a few windows; start-up, not training, dominates the test's time.
TINY = {
    "synthetic": {"n_cases": 4, "shape": [40, 40, 32], "seed": 0},
    "pixdim": [12.0, 12.0, 12.0],
    "roi_size": [16, 16, 16],
    "channels": [4, 8, 16],
    "num_res_units": 1,
    "num_samples": 1,
    "sw_batch_size": 4,
    "sw_overlap": 0.25,
}


def _sweep_args(out: Path, synthetic_dir: Path, *grid: str) -> list[str]:
    settings = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    return [
        "--out", str(out), "--config_file", QUICK, "--grid", *grid,
        "--set", f"synthetic_dir={synthetic_dir}", *settings,
    ]  # fmt: skip


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "sweep.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _table_rows(markdown: str) -> list[str]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return lines[2:]  # after the header and the alignment row


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path]:
    """A finished two-point sweep (epochs 1 and 2) and its synthetic data folder."""
    tmp = tmp_path_factory.mktemp("sweep")
    out, synthetic = tmp / "out", tmp / "synthetic"
    assert main(_sweep_args(out, synthetic, "epochs=1,2")) == 0
    return out, synthetic


# ---- the grid syntax ---------------------------------------------------------------------------
def test_grid_values_parse_as_json_literals_or_words():
    grid = parse_grid(
        ["roi_size=[32,32,32],[48, 48, 48]", "network_name=segresnet,unet",
         "learning_rate=1e-3,3e-3", "amp=true,False", "label_map={5: 1},null"]
    )  # fmt: skip
    assert grid == {
        "roi_size": [[32, 32, 32], [48, 48, 48]],
        "network_name": ["segresnet", "unet"],
        "learning_rate": [0.001, 0.003],
        "amp": [True, False],
        "label_map": [{5: 1}, None],
    }
    assert parse_settings(["network_def#feature_size=24", "pixdim=[1.5,1.5,2.0]"]) == {
        "network_def#feature_size": 24,
        "pixdim": [1.5, 1.5, 2.0],
    }


def test_split_respects_brackets_and_quotes():
    assert split_top_level('[1,2],{"a": [3,4]},"x,y", z') == ["[1,2]", '{"a": [3,4]}', '"x,y"', "z"]
    assert parse_value('"1e-3"') == "1e-3"  # quoted: stays a string


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("batch_size", "expected KEY=VALUE"),
        ("=1,2", "expected KEY=VALUE"),
        ("batch_size=", "expected KEY=VALUE"),
        ("roi_size=[32,32", "unclosed bracket"),
        ("roi_size=32,32]", "unbalanced"),
        ("batch_size=1,,2", "empty value"),
        ("batch_size=1,1", "repeats a value"),
        ("batch size=1", "not a config id"),
        ("output_dir=a,b", "set per point"),
        ("label_map={5: },{}", "neither JSON nor a Python literal"),
    ],
)
def test_bad_grid_items_raise_clear_errors(item, message):
    with pytest.raises(GridSpecError, match=message):
        parse_grid([item])


def test_key_twice_and_folder_name_clash_are_errors():
    with pytest.raises(GridSpecError, match="appears twice"):
        parse_grid(["epochs=1,2", "epochs=3"])
    with pytest.raises(GridSpecError, match="same folder name"):
        grid_points({"norm": ["a b", "a_b"]})


def test_points_are_the_product_in_order_with_readable_names():
    points = grid_points({"batch_size": [1, 2], "roi_size": [[32, 32, 32]], "lr": [1e-3, 3e-3]})
    assert len(points) == 4
    assert points[1] == {"batch_size": 1, "roi_size": [32, 32, 32], "lr": 0.003}
    assert point_name(points[1]) == "batch_size-1__roi_size-32_32_32__lr-0.003"
    assert point_name({"network_def#feature_size": 24}) == "network_def_feature_size-24"


def test_liver_tumor_sweep_subcommand_hands_over_its_options(tmp_path, capsys):
    from pipeline.cli import main as cli_main

    assert cli_main(["sweep", "--out", str(tmp_path), "--grid", "epochs=1,2", "--dry_run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_command_line_rejects_bad_grid_with_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--grid", "epochs=[1,2"])
    assert exit_info.value.code == 2
    assert "epochs=[1,2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--grid", "epochs=1,2", "--set", "epochs=3"])
    assert "both varied" in capsys.readouterr().err


def test_dry_run_lists_default_grid_without_running(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "s"), "--dry_run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 8  # batch_size x epochs x learning_rate, two values each
    assert not (tmp_path / "s").exists()


# ---- tables ------------------------------------------------------------------------------------
def _result(epochs: int, mean: float | None, status: str = "ok") -> dict:
    metrics = {"liver_dice": mean, "tumour_dice": mean, "mean_dice": mean} if mean else {}
    return {
        "point": f"epochs-{epochs}", "values": {"epochs": epochs}, "status": status,
        "error": "" if status == "ok" else "RuntimeError: boom", "params": 1000,
        "train_seconds": 3.0, **metrics,
    }  # fmt: skip


def test_markdown_bolds_one_best_row_and_lists_failures(tmp_path):
    results = [_result(1, 0.5), _result(2, 0.7), _result(3, 0.7), _result(4, None, "failed")]
    rows = _table_rows(markdown_table(["epochs"], results))
    assert ["**" in row for row in rows] == [False, True, False, False]  # first of the tie
    assert "failed" in rows[3]
    write_tables(tmp_path, ["epochs"], results)
    assert "RuntimeError: boom" in (tmp_path / "sweep.md").read_text()
    csv_rows = _rows(tmp_path)
    assert [r["status"] for r in csv_rows] == ["ok", "ok", "ok", "failed"]
    assert csv_rows[3]["error"] == "RuntimeError: boom" and csv_rows[3]["mean_dice"] == ""


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    args = _sweep_args(tmp_path / "out", tmp_path / "synthetic", "network_name=no_such_net,unet2")
    assert main([*args, "--set", "label_map={5: 1, 6: 2}"]) == 1
    # The point's overrides keep integer keys (YAML), as the training config expects them.
    config = yaml.safe_load((tmp_path / "out" / "network_name-unet2" / "config.yaml").read_text())
    assert config["label_map"] == {5: 1, 6: 2} and config["network_name"] == "unet2"
    rows = _rows(tmp_path / "out")
    assert [r["network_name"] for r in rows] == ["no_such_net", "unet2"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "no_such_net" in rows[0]["error"] and "unet2" in rows[1]["error"]


# ---- a real two-point sweep --------------------------------------------------------------------
def test_sweep_csv_has_one_row_per_point_with_numbers_in_range(swept):
    out, _ = swept
    rows = _rows(out)
    assert [r["epochs"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:2] == ["epochs", "liver_dice"]  # varied keys, then metrics
    for row in rows:
        assert row["status"] == "ok", row["error"]
        for key in ("liver_dice", "tumour_dice", "mean_dice", "liver_iou", "tumour_iou"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["mean_dice"]) == pytest.approx(
            (float(row["liver_dice"]) + float(row["tumour_dice"])) / 2, abs=1e-5
        )
        assert float(row["train_seconds"]) > float(row["seconds_per_epoch"]) > 0
        assert float(row["peak_memory_mb"]) > 0
        assert int(row["n_val_cases"]) == 1
    assert [int(r["epochs_run"]) for r in rows] == [1, 2]
    for point in ("epochs-1", "epochs-2"):
        assert (out / point / "models" / "model.pt").is_file()
        assert len(list((out / point / "val_pred").glob("*_seg.nii.gz"))) == 1
        assert (out / point / "val_report" / "summary.json").is_file()


def test_sweep_params_match_an_independently_built_network(swept):
    from pipeline.nets.networks import build_network, network_parameter_count

    network = build_network(
        "unet", spatial_dims=3, in_channels=1, out_channels=3, channels=TINY["channels"],
        num_res_units=TINY["num_res_units"], norm="instance", roi_size=TINY["roi_size"],
        spacing=TINY["pixdim"],
    )  # fmt: skip
    expected = network_parameter_count(network)
    assert [int(r["params"]) for r in _rows(swept[0])] == [expected, expected]


def test_sweep_markdown_marks_exactly_one_best_row(swept):
    out, _ = swept
    text = (out / "sweep.md").read_text()
    rows = _table_rows(text)
    assert len(rows) == 2 and sum("**" in row for row in rows) == 1
    best = max(_rows(out), key=lambda r: float(r["mean_dice"]))
    assert f"**{best['epochs']}**" in next(row for row in rows if "**" in row)
    assert "CPUs" in text and "torch" in text and "Fixed settings" in text


def test_rerun_skips_finished_points(swept, capsys):
    out, synthetic = swept
    stamps = [(out / p / "result.json").stat().st_mtime_ns for p in ("epochs-1", "epochs-2")]
    assert main(_sweep_args(out, synthetic, "epochs=1,2")) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    assert [
        (out / p / "result.json").stat().st_mtime_ns for p in ("epochs-1", "epochs-2")
    ] == stamps
    assert not math.isnan(float(_rows(out)[0]["mean_dice"]))
