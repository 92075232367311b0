"""The demo's training minutes within its budget, and the CPU description it records."""

from __future__ import annotations

import pytest

from pipeline.workflows.demo_budget import (
    cpu_description,
    cut_explanation,
    main,
    training_minutes,
)


def test_no_budget_keeps_the_planned_minutes() -> None:
    assert training_minutes(0, 3600, 7, 15) == 15


def test_a_fast_machine_keeps_the_planned_minutes() -> None:
    # 6 minutes used, 7 kept after: 16 left, more than the 15 planned.
    assert training_minutes(29, 360, 7, 15) == 15


def test_a_slow_machine_trains_for_what_is_left() -> None:
    # 9.6 minutes used (576 s), 7 kept after: 29 - 9.6 - 7 = 12.4.
    assert training_minutes(29, 576, 7, 15) == pytest.approx(12.4)


def test_never_less_than_three_minutes() -> None:
    assert training_minutes(29, 25 * 60, 7, 15) == 3.0


@pytest.mark.parametrize(
    ("native", "precision"),
    [(True, "native bfloat16"), (False, "no native bfloat16: float32")],
)
def test_cpu_description_reads_the_model_name(
    monkeypatch: pytest.MonkeyPatch, native: bool, precision: str
) -> None:
    monkeypatch.setattr("pipeline.nets.precision.native_cpu_bf16", lambda: native)
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n"
    assert cpu_description(text) == f"AMD EPYC 7B13 ({precision})"


def test_command_line_prints_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["minutes", "29", "576", "7", "15"]) == 0
    assert capsys.readouterr().out.strip() == "12.4"
    assert main(["nonsense"]) == 2


def test_explanation_is_empty_when_nothing_is_cut() -> None:
    assert cut_explanation(29, 360, 7, 15) == ""
    assert cut_explanation(0, 3600, 7, 15) == ""


def test_explanation_of_a_cut_within_the_budget() -> None:
    said = cut_explanation(29, 576, 7, 15)
    assert "at most 12.4 min instead of 15" in said
    assert "ends within 29 min" in said
    assert "overruns" not in said


def test_explanation_of_the_floor_says_the_demo_overruns() -> None:
    # 25 minutes used, 7 kept: -3 left, so the 3-minute floor overruns 29 by about 6.
    said = cut_explanation(29, 25 * 60, 7, 15)
    assert "at most 3.0 min instead of 15" in said
    assert "overruns its 29 min by about 6 min" in said
    assert "ends within" not in said
