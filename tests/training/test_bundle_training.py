from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_files import CONFIGS, TRAIN_QUICK, configs
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

QUICK = TRAIN_QUICK


def _overrides(tmp: Path, **extra) -> dict:
    return {
        "output_dir": str(tmp / "run"),
        "ckpt_dir": str(tmp / "run" / "models"),
        "synthetic_dir": str(tmp / "synthetic"),
        **extra,
    }


def _workflow(tmp: Path, **extra) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=QUICK,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **_overrides(tmp, **extra),
    )
    workflow.initialize()
    return workflow


def _run_training(
    tmp: Path, launcher: list[str], configs: list[str], *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``monai.bundle run training`` in a subprocess with outputs under ``tmp``.

    Args:
        check: assert that the run succeeded (else the caller looks at the result).
    """
    args = [
        *launcher,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        str(configs),
        "--logging_file",
        "False",
        *extra,
    ]
    for key, value in _overrides(tmp).items():
        args += [f"--{key}", value]
    done = subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


# What libstdc++ prints when a C++ thread object is destroyed while still running: seen
# once in CI and once in eight local runs from a torchrun rank tearing down gloo after
# the training had finished (pytorch/pytorch#190489 describes the same abort).
TEARDOWN_ABORT = "terminate called without an active exception"


def _rows(tmp: Path) -> list[dict]:
    with open(tmp / "run" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_quick_training_through_config_workflow(tmp_path):
    workflow = _workflow(tmp_path)
    assert workflow.check_properties() in (None, [])
    workflow.run()
    workflow.finalize()
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("liver_dice", "tumour_dice", "mean_dice"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["mean_dice"]) == pytest.approx(
            (float(row["liver_dice"]) + float(row["tumour_dice"])) / 2, abs=1e-5
        )
        assert float(row["loss"]) > 0
    models = tmp_path / "run" / "models"
    assert (models / "model.pt").exists()
    assert (models / "checkpoint_epoch=2.pt").exists()
    assert not (models / "checkpoint_epoch=1.pt").exists()  # only the newest is kept
    # What inference's TTA follows: the default training mirrors no axis.
    assert torch.load(models / "model.pt", weights_only=True)["trained_for"]["mirrored_axes"] == []


def test_the_locator_keeps_its_best_liver_not_its_best_mean_dice(tmp_path):
    workflow = ConfigWorkflow(
        config_file=configs("common.yaml", "train.yaml", "quick.yaml", "locator.yaml"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **_overrides(tmp_path, epochs=3, val_interval=1),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    state = workflow.parser.get_parsed_content("validate#evaluator").state
    assert state.key_metric_name == "val_liver_dice"
    # Early stopping follows the same metric.
    assert workflow.parser.get_parsed_content("early_stopping").metric_name == "val_liver_dice"
    liver = [float(r["liver_dice"]) for r in rows]
    assert state.best_metric == pytest.approx(max(liver), abs=1e-6)
    assert state.best_metric_epoch == 1 + liver.index(max(liver))
    # Mean and tumour Dice are still measured and logged.
    for row in rows:
        assert float(row["mean_dice"]) == pytest.approx(
            (float(row["liver_dice"]) + float(row["tumour_dice"])) / 2, abs=1e-5
        )


def test_resume_continues_at_next_epoch_with_saved_optimizer(tmp_path):
    first = _workflow(tmp_path, epochs=1)
    first.run()
    first.finalize()
    saved = torch.load(tmp_path / "run" / "models" / "checkpoint_epoch=1.pt", weights_only=False)
    state = saved["trainer"]  # ignite keeps iteration and epoch_length, not the epoch
    assert state["iteration"] // state["epoch_length"] == 1
    second = _workflow(tmp_path, epochs=2, resume=True)
    trainer = second.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: started.append(e.state.epoch))
    optimizer = second.parser.get_parsed_content("optimizer")
    scheduler = second.parser.get_parsed_content("lr_scheduler")
    second.run()
    second.finalize()
    assert started == [2], "resumed run must train epoch 2 only"
    step = next(iter(optimizer.state.values()))["step"]
    # AdamW's step count continued from the checkpoint instead of restarting at zero.
    assert float(step) == pytest.approx(2 * state["epoch_length"])
    # The schedule continued from epoch 1 to the end of its 2 epochs: cosine at zero.
    assert scheduler.last_epoch == 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [int(r["epoch"]) for r in _rows(tmp_path)] == [1, 2]


def _launch_training(tmp: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
            str(QUICK), "--logging_file", "False", *extra]  # fmt: skip
    for key, value in _overrides(tmp).items():
        args += [f"--{key}", value]
    return subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_killed_run_resumes_from_its_epoch_and_keeps_the_best_model(tmp_path):
    models = tmp_path / "run" / "models"
    first = _launch_training(tmp_path, "--epochs", "20")
    deadline = time.monotonic() + 300
    while not list(models.glob("checkpoint_epoch=[2-9].pt")) and first.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    (saved,) = list(models.glob("checkpoint_epoch=*.pt"))
    saved_epoch = int(saved.stem.split("=")[1])
    state = torch.load(saved, weights_only=True)
    (best_score, best_file), *_ = state["best_model"]["_saved"]
    before = [float(r["mean_dice"]) for r in _rows(tmp_path) if int(r["epoch"]) <= saved_epoch]
    assert best_score == pytest.approx(max(before))

    # Make the best model before the kill unbeatable (as if it had scored 0.99) and mark
    # its file: after the resume no validation may replace it.
    state["best_model"]["_saved"] = [(0.99, best_file)]
    torch.save(state, saved)
    marker = {"marker": torch.tensor([7])}
    torch.save(marker, models / "model.pt")
    resumed = _launch_training(tmp_path, "--epochs", str(saved_epoch + 2), "--resume", "True")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-3000:]
    epochs = [int(r["epoch"]) for r in _rows(tmp_path)]
    assert epochs[-2:] == [saved_epoch + 1, saved_epoch + 2]  # continued, not restarted
    assert torch.load(models / "model.pt", weights_only=True).keys() == marker.keys()
    (last,) = list(models.glob("checkpoint_epoch=*.pt"))
    assert torch.load(last, weights_only=True)["best_model"]["_saved"] == [(0.99, best_file)]


def test_early_stopping_counter_survives_a_resume(tmp_path):
    from ignite.engine import Engine

    from pipeline.training.handlers import EarlyStopping

    evaluator, trainer = Engine(lambda e, b: None), Engine(lambda e, b: None)
    stopping = EarlyStopping(evaluator, patience=3)
    stopping.attach(trainer)
    stopping.handler.counter, stopping.handler.best_score = 2, 0.61
    again = EarlyStopping(evaluator, patience=3)
    again.attach(trainer)
    again.load_state_dict(stopping.state_dict())
    assert (again.handler.counter, again.handler.best_score) == (2, 0.61)
    off = EarlyStopping(evaluator, patience=0)
    off.attach(trainer)
    assert off.state_dict() == {}


def test_lesion_balanced_crops_train_through_the_bundle(tmp_path):
    workflow = _workflow(tmp_path, epochs=1, lesion_balanced_crops=True)
    transforms = workflow.parser.get_parsed_content("train#preprocessing").transforms
    names = [type(t).__name__ for t in transforms]
    assert "LesionBalancedIndicesd" in names and "ClassIndicesd" not in names
    # The crop reads the balanced indices (without them it would sample by voxel).
    crop = next(t for t in transforms if type(t).__name__ == "RandCropByLabelClassesd")
    assert crop.indices_key == "label_cls_indices"
    assert names.index("LesionBalancedIndicesd") < names.index("RandCropByLabelClassesd")
    workflow.run()
    workflow.finalize()
    assert len(_rows(tmp_path)) == 1
    assert float(_rows(tmp_path)[0]["loss"]) > 0


def test_quick_training_from_the_command_line(tmp_path):
    done = _run_training(tmp_path, [sys.executable], QUICK, "--epochs", "1")
    assert "val_liver_dice" in done.stderr + done.stdout
    assert len(_rows(tmp_path)) == 1


def test_two_process_torchrun_on_cpu_only_rank0_writes(tmp_path):
    files = configs("common.yaml", "train.yaml", "multi_gpu_train.yaml", "quick.yaml")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    extra = ("--synthetic#n_cases", "6", "--val_fraction", "0.34")
    done = _run_training(tmp_path, launcher, files, *extra, check=False)
    finished = (tmp_path / "run" / "models" / "model.pt").exists()
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr and finished:
        # Torch's teardown after a finished run, not this project's code: once more, and
        # that run must pass.
        shutil.rmtree(tmp_path / "run")
        done = _run_training(tmp_path, launcher, files, *extra, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [int(r["epoch"]) for r in _rows(tmp_path)] == [1, 2]
    # One process writes: two TensorBoardStatsHandlers and the epoch report, one checkpoint.
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 3
    assert sorted(p.name for p in (tmp_path / "run" / "models").iterdir()) == [
        "checkpoint_epoch=2.pt",
        "model.pt",
    ]


def test_verify_net_in_out_offline(tmp_path):
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(CONFIGS / "metadata.json"),
        "--config_file",
        str(QUICK),
        "--logging_file",
        "False",
        "--synthetic_dir",
        str(tmp_path / "unused"),
    ]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data shape of network is verified with no error" in done.stdout + done.stderr


def _one_case_datalist(tmp: Path) -> Path:
    """A datalist whose only training case is also its validation case."""
    from pipeline.data.synth.dataset import write_synthetic_dataset

    source = write_synthetic_dataset(tmp / "one", n_cases=1, seed=7, shape=(48, 48, 40))
    case = json.loads(Path(source).read_text())
    records = [*case.get("training", []), *case.get("validation", []), *case.get("test", [])]
    assert len(records) == 1
    datalist = Path(source).parent / "overfit.json"  # paths are relative to the JSON
    datalist.write_text(json.dumps({"training": records, "validation": records}))
    return datalist


def test_overfitting_one_case_reaches_liver_dice_above_0_8(tmp_path):
    datalist = _one_case_datalist(tmp_path)
    workflow = _workflow(
        tmp_path,
        dataset_dir=str(datalist),
        epochs=150,
        val_interval=50,
        batch_size=1,
        num_samples=2,
        roi_size=[48, 48, 48],
        learning_rate=0.01,
        lr_schedule="constant",
        crop_ratios=[1, 3, 1],
    )
    workflow.run()
    workflow.finalize()
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [50, 100, 150]
    assert float(rows[-1]["liver_dice"]) > 0.8
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_early_stopping_ends_training_after_patience_validations(tmp_path):
    # min_delta 1.0: no validation can count as better than the first one, so training
    # stops after the first validation plus `patience` more.
    workflow = _workflow(
        tmp_path, epochs=6, val_interval=1, early_stop_patience=2, early_stop_min_delta=1.0
    )
    workflow.run()
    workflow.finalize()
    assert [int(r["epoch"]) for r in _rows(tmp_path)] == [1, 2, 3]
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 3


def test_time_limit_stops_at_the_end_of_an_epoch(tmp_path):
    # A budget of 0.06 s: the first epoch already overruns it, so training ends after it
    # instead of running all five epochs. Validation is every 3 epochs, but the last
    # epoch is validated anyway, so it is scored and can become the best model.
    workflow = _workflow(tmp_path, epochs=5, val_interval=3, time_limit_minutes=0.001)
    workflow.run()
    workflow.finalize()
    assert [int(r["epoch"]) for r in _rows(tmp_path)] == [1]
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (tmp_path / "run" / "models" / "model.pt").exists()


def _run_evaluate_config(tmp: Path, run_id: str, **extra) -> ConfigWorkflow:
    """Run ``run_id`` of evaluate.yaml on the quick model trained under ``tmp``."""
    workflow = ConfigWorkflow(
        config_file=[*QUICK, str(CONFIGS / "evaluate.yaml")],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        run_id=run_id,
        **_overrides(tmp, eval_dir=str(tmp / "eval"), **extra),
    )
    workflow.initialize()
    workflow.run()
    return workflow


def test_evaluating_scores_the_checkpoint_on_the_original_grid(tmp_path):
    _workflow(tmp_path).run()
    workflow = _run_evaluate_config(tmp_path, "evaluating")
    summary = json.loads((tmp_path / "eval" / "report" / "summary.json").read_text())
    # The quick synthetic data set holds one test case, and the test split is scored.
    assert summary["n_cases"] == 1 and summary["n_failed"] == 0
    with open(tmp_path / "eval" / "report" / "metrics_per_case.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert summary["liver"]["dice"]["mean"] == pytest.approx(float(row["liver_dice"]))
    assert 0.0 < float(row["liver_dice"]) <= 1.0
    mask = next((tmp_path / "eval" / "predictions").glob("*_seg.nii.gz"))
    # Scored in the same process: no records written to disk to be read back.
    assert not (tmp_path / "eval" / "cases.json").exists()
    (reference,) = workflow.parser.get_parsed_content("datalist")["test"]
    case = json.loads(mask.with_name(mask.name.replace("_seg.nii.gz", ".json")).read_text())
    assert Path(case["input"]).resolve() == Path(reference["image"]).resolve()
    import nibabel as nib

    assert nib.load(mask).shape == nib.load(reference["label"]).shape
    assert (tmp_path / "eval" / "report" / "report.html").stat().st_size > 10_000
    # Reusing the masks (as the demo does after `run inference`) scores them unchanged.
    written = mask.stat().st_mtime_ns
    _run_evaluate_config(tmp_path, "evaluating", reuse_predictions=True)
    assert mask.stat().st_mtime_ns == written
    rescored = json.loads((tmp_path / "eval" / "report" / "summary.json").read_text())
    assert rescored["liver"]["dice"]["mean"] == summary["liver"]["dice"]["mean"]


def test_tuning_chooses_the_false_tumour_controls_on_the_validation_split(tmp_path):
    _workflow(tmp_path).run()
    workflow = _run_evaluate_config(tmp_path, "tuning")
    tuning = tmp_path / "eval" / "postprocess_tuning"
    result = json.loads((tuning / "postprocess.json").read_text())
    validation = workflow.parser.get_parsed_content("datalist")["validation"]
    assert result["split"] == "validation" and len(result["cases"]) == len(validation) == 1
    sizes = [row["min_tumour_mm3"] for row in result["table"]]
    assert sizes == [0.0, 10.0, 30.0, 65.0, 125.0, 250.0, 500.0]
    # 4 lesion thresholds x 3 case thresholds x 3 depths x 7 sizes, each scored on the
    # validation case.
    assert len(result["grid"]) == 252
    best = max(row["tumour_dice_per_case"] for row in result["grid"])
    chosen = result["contributions"]["chosen"]
    # Within the tolerance of the best Dice, the fewest false lesions.
    tolerance = result["dice_tolerance"]
    assert tolerance == 0.01
    near = [r for r in result["grid"] if r["tumour_dice_per_case"] >= best - tolerance - 1e-9]
    assert chosen in near
    assert chosen["false_lesions"] == min(r["false_lesions"] for r in near)
    names = ("min_tumour_mm3", "min_lesion_mean_prob", "min_lesion_depth_mm", "min_case_max_prob")
    assert [chosen[name] for name in names] == [result[name] for name in names]
    # Each control alone can only do as well as the best combination, and "none" is the
    # grid's row with every control off.
    for name in ("none", "size_only", "lesion_prob_only", "lesion_depth_only", "case_prob_only"):
        assert result["contributions"][name]["tumour_dice_per_case"] <= best + 1e-9
    (off,) = [r for r in result["grid"] if all(r[name] == 0 for name in names)]
    assert result["contributions"]["none"] == off
    # The configured filter of evaluation and inference is left as it was.
    configured = workflow.parser.get_parsed_content("predictor").postprocessing
    assert configured.transform.config.min_tumour_mm3 == 10.0
