"""Where the checkout and its bundle configs are, for every test (one place, no parents[N])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "liver_tumor" / "configs"
REAL_CT = ROOT.parent / "shared" / "data" / "real_ct"


def configs(*names: str) -> list[str]:
    """Absolute paths of bundle configs, in the order given (as ``--config_file`` takes them)."""
    return [str(CONFIGS / name) for name in names]


TRAIN_QUICK = configs("common.yaml", "train.yaml", "quick.yaml")
"""The quick training run of the tests: common.yaml, train.yaml, quick.yaml."""


def bundle_workflow(files: list[str], run_id: str, **overrides: Any) -> ConfigWorkflow:
    """An initialised workflow of ``files`` running ``run_id``, as ``monai.bundle run`` does."""
    workflow = ConfigWorkflow(
        config_file=files,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        run_id=run_id,
        **overrides,
    )
    workflow.initialize()
    return workflow


def error_messages(error: BaseException | None) -> str:
    """The messages of ``error`` and of its causes, joined.

    MONAI wraps an error raised while building a config component in a RuntimeError
    ("Failed to evaluate ..."); the message a user acts on is the cause's.
    """
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)
