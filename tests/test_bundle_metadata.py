"""The bundle's metadata.json verifies offline against the local schema copy.

`python -m monai.bundle verify_metadata` normally downloads the schema named by the
metadata's `schema` URL; with `--filepath` pointing at an existing file (and no hash)
monai skips the download and validates against that file. These tests run it with the
HTTP(S) proxies pointed at a closed port, so any download attempt would fail.
"""

from __future__ import annotations

import configparser
import copy
import json
import logging
import logging.handlers
import math
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from bundle_files import CONFIGS, ROOT

META = CONFIGS / "metadata.json"
SCHEMA = CONFIGS / "meta_schema.json"
LOGGING_CONF = CONFIGS / "logging.conf"

DEAD_PROXY = "http://127.0.0.1:9"
SUCCESS = "metadata is verified with no error."
SKIPPED = "skipped downloading"


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("no_proxy", "NO_PROXY"):
        env.pop(key, None)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[key] = DEAD_PROXY
    return env


def _start_verify(meta_file: Path) -> subprocess.Popen[str]:
    # A missing schema file would make monai try to download it; never let that happen here.
    assert SCHEMA.is_file(), f"local schema copy missing: {SCHEMA}"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_metadata",
            "--meta_file",
            str(meta_file),
            "--filepath",
            str(SCHEMA),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_offline_env(),
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Both CLI runs, started together (each spends most of its time importing monai)."""
    meta = _load(META)
    del meta["task"]
    broken = tmp_path_factory.mktemp("meta") / "metadata.json"
    broken.write_text(json.dumps(meta, indent=4), encoding="utf-8")

    procs = {"committed": _start_verify(META), "missing_task": _start_verify(broken)}
    runs = {}
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        runs[name] = (proc.returncode, output)
    return runs


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_committed_metadata_verifies_offline(cli_runs) -> None:
    returncode, output = cli_runs["committed"]
    assert returncode == 0, output
    assert SUCCESS in output, output
    assert SKIPPED in output, output  # the local schema was used, nothing was fetched


def test_missing_required_key_fails_verification_naming_it(cli_runs) -> None:
    returncode, output = cli_runs["missing_task"]
    assert returncode != 0, output
    assert "'task' is a required property" in output, output
    assert SUCCESS not in output, output


def test_schema_requires_every_key_it_lists() -> None:
    """In-process, the same `jsonschema.validate` call monai makes, for every required key."""
    schema = _load(SCHEMA)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    meta = _load(META)
    jsonschema.validate(instance=meta, schema=schema)

    assert set(schema["required"]) >= {
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    }
    for key in schema["required"]:
        broken = copy.deepcopy(meta)
        del broken[key]
        with pytest.raises(jsonschema.ValidationError, match=f"'{key}' is a required property"):
            jsonschema.validate(instance=broken, schema=schema)

    broken = copy.deepcopy(meta)
    del broken["network_data_format"]["outputs"]["pred"]["num_channels"]
    with pytest.raises(jsonschema.ValidationError, match="'num_channels' is a required property"):
        jsonschema.validate(instance=broken, schema=schema)


def test_network_data_format_matches_the_labels() -> None:
    fmt = _load(META)["network_data_format"]
    image = fmt["inputs"]["image"]
    pred = fmt["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["modality"] == "CT"
    assert pred["num_channels"] == 3
    assert pred["channel_def"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert image["spatial_shape"] == pred["spatial_shape"] == [96, 96, 96]


def test_eval_metrics_are_empty_or_what_liver_tumor_record_writes() -> None:
    """`eval_metrics` is written by `liver-tumor record` from a real run, never by hand."""
    from pipeline.workflows.model_card import eval_metrics

    metrics = dict(_load(META)["eval_metrics"])
    if not metrics:
        return
    run = metrics.pop("run")
    assert isinstance(run, dict) and run.get("date") and run.get("budget"), run
    assert set(metrics) == set(eval_metrics(_SUMMARY_SHAPE))
    assert isinstance(metrics.pop("n_cases"), int)
    for name, value in metrics.items():
        if value is None:  # e.g. no lesion of 10 mm or more in the test split
            continue
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
        assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, value)


# The smallest report summary eval_metrics() accepts, to learn the keys it writes.
_SUMMARY_SHAPE = {
    "n_cases": 1,
    "liver": {"dice": {"mean": 1.0}, "dice_global": 1.0},
    "tumour": {"dice": {"mean": 1.0}, "dice_global": 1.0},
    "lesions": {"by_size": {k: {"n_ref": 0, "tp_iou": 0} for k in ("10-20mm", ">20mm")}},
}


def _is_stdlib_logging_class(value: str) -> bool:
    """Same rule as monai 1.6.1's guard: a Handler/Formatter from `logging`/`logging.handlers`."""
    module, _, name = value.strip().rpartition(".")
    owner = {"": logging, "logging": logging, "logging.handlers": logging.handlers}.get(module)
    obj = getattr(owner, name, None) if owner is not None else None
    return isinstance(obj, type) and issubclass(obj, (logging.Handler, logging.Formatter))


def test_logging_conf_is_plain_stdlib_logging() -> None:
    parser = configparser.RawConfigParser()
    assert parser.read(LOGGING_CONF, encoding="utf-8"), LOGGING_CONF
    assert parser.get("logger_root", "level") == "INFO"
    handler = parser.get("logger_root", "handlers").strip()
    assert parser.get(f"handler_{handler}", "class").strip() == "StreamHandler"
    for section in parser.sections():
        if parser.has_option(section, "class"):
            assert _is_stdlib_logging_class(parser.get(section, "class")), section
        for field in ("args", "kwargs"):
            if parser.has_option(section, field):
                value = parser.get(section, field).strip()
                assert value in {"(sys.stdout,)", "(sys.stderr,)", "()", "{}"}, (section, value)
