from __future__ import annotations

import pytest

from pipeline.training.config_helpers import split_key_metric


def test_split_key_metric_by_name():
    metrics = {"val_mean_dice": "mean", "val_liver_dice": "liver", "val_tumour_dice": "tumour"}
    key, others = split_key_metric(metrics, "val_liver_dice")
    assert key == {"val_liver_dice": "liver"}
    assert others == {"val_mean_dice": "mean", "val_tumour_dice": "tumour"}
    with pytest.raises(ValueError, match="'val_dice' is not a validation metric"):
        split_key_metric(metrics, "val_dice")
