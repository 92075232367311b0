import math

import pytest
import torch
from ignite.engine import Engine

from pipeline.training import schedules
from pipeline.training.schedules import BudgetedSchedule, ScheduleStep, build_scheduler

# The tests step schedules without training steps; torch warns about that order.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


class FakeClock:
    """time.perf_counter stand-in the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The schedules' clock, moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr(schedules.time, "perf_counter", fake)
    return fake


@pytest.mark.parametrize(
    "shape, progress, expected",
    [
        ("cosine", 0.0, 1.0),
        ("cosine", 0.5, 0.5),
        ("cosine", 1.0, 0.0),
        ("cosine", 2.0, 0.0),  # clipped: past the budget stays at the end value
        ("poly", 0.5, 0.5**0.9),
        ("constant", 0.9, 1.0),
    ],
)
def test_schedule_factor_values(shape, progress, expected):
    assert schedules.schedule_factor(shape, progress) == pytest.approx(expected)


def test_unknown_schedule_is_refused_with_its_name():
    with pytest.raises(ValueError, match="'linear'"):
        build_scheduler(_optimizer(), "linear", 10)


def test_epochs_alone_drive_the_schedule_without_a_time_limit():
    optimizer = _optimizer(2.0)
    scheduler = build_scheduler(optimizer, "cosine", epochs=4)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(4):
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    expected = [2.0 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert rates == pytest.approx(expected)


def test_time_limit_ends_the_schedule_before_the_epochs_do(clock):
    optimizer = _optimizer(1.0)
    # 100 epochs planned, 10 minutes allowed: the minutes run out first.
    scheduler = BudgetedSchedule(optimizer, "cosine", epochs=100, time_limit_minutes=10)
    scheduler.start_clock()
    clock.now += 300  # half the time, 1 % of the epochs
    scheduler.step()
    assert scheduler.progress == pytest.approx(0.5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.now += 300
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_epochs_win_when_they_run_out_first(clock):
    optimizer = _optimizer(1.0)
    scheduler = BudgetedSchedule(optimizer, "poly", epochs=2, time_limit_minutes=60)
    scheduler.start_clock()
    clock.now += 60
    scheduler.step()  # epoch 1 of 2: progress 0.5, time only 1/60
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5**0.9)


def test_warmup_ramps_before_the_schedule_starts():
    optimizer = _optimizer(1.0)
    scheduler = BudgetedSchedule(optimizer, "cosine", epochs=12, warmup_epochs=2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1 / 3)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2 / 3)
    scheduler.step()  # warm-up done: progress 0 of the 10 scheduled epochs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)


def test_resumed_schedule_keeps_its_epoch_and_the_new_settings(clock):
    first = BudgetedSchedule(_optimizer(), "cosine", epochs=10, time_limit_minutes=5)
    first.start_clock()
    for _ in range(3):
        first.step()
    state = first.state_dict()
    assert state["last_epoch"] == 3
    assert not {"_clock_start", "epochs", "time_limit_seconds", "shape"} & set(state)

    optimizer = _optimizer()
    resumed = BudgetedSchedule(optimizer, "cosine", epochs=20, time_limit_minutes=0)
    resumed.load_state_dict(state)
    resumed.step()  # epoch 4 of the resumed run's 20, no time limit
    assert resumed.last_epoch == 4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 20)))


def test_schedule_step_handler_starts_the_clock_and_steps_each_epoch(clock):
    optimizer = _optimizer(1.0)
    scheduler = BudgetedSchedule(optimizer, "cosine", epochs=1000, time_limit_minutes=1)

    def iteration(engine, batch):
        clock.now += 10  # each iteration takes 10 s of the 60 s budget
        return 0.0

    trainer = Engine(iteration)
    ScheduleStep(scheduler).attach(trainer)
    trainer.run([0, 1, 2], max_epochs=1)  # 30 s: half the budget
    assert scheduler.last_epoch == 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
