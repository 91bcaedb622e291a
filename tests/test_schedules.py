"""Learning-rate schedules and the early-stopping rule."""

from __future__ import annotations

import math

import pytest
import torch

from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.schedules import EarlyStopping, make_schedule, replay_stopping


def _optimizer(lr: float = 1e-3, factors: tuple[float, ...] = (1.0,)) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * f} for f in factors]
    return torch.optim.SGD(groups, lr=lr)


def _rates(config: TrainConfig, val: list[float], factors: tuple[float, ...] = (1.0,)) -> list[list[float]]:
    optimizer = _optimizer(config.lr, factors)
    schedule = make_schedule(optimizer, config)
    rates = []
    for value in val:
        rates.append([group["lr"] for group in optimizer.param_groups])
        schedule.step(value)
    return rates


def test_cosine_warms_up_then_anneals_to_its_floor_at_the_cap() -> None:
    config = TrainConfig(lr=1e-3, epochs=11, schedule="cosine", warmup_epochs=1, min_lr_factor=0.01)
    rates = [r[0] for r in _rates(config, [1.0] * 11)]
    assert rates[0] == pytest.approx(0.5e-3)  # warm-up: half the rate in the first of one warm-up epoch
    assert rates[1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))  # never rises again
    optimizer = _optimizer()
    schedule = make_schedule(optimizer, config)
    for _ in range(11):
        schedule.step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # at the cap: lr x min_lr_factor


def test_cosine_with_anneal_epochs_holds_its_floor_after_the_anneal() -> None:
    annealed = TrainConfig(lr=1e-3, epochs=11, schedule="cosine", warmup_epochs=1)
    held = annealed.model_copy(update={"epochs": 15, "anneal_epochs": 11})
    rates = [r[0] for r in _rates(held, [1.0] * 15)]
    assert rates[:11] == pytest.approx([r[0] for r in _rates(annealed, [1.0] * 11)])  # the same anneal
    assert rates[11:] == pytest.approx([1e-5] * 4)


def test_anneal_epochs_must_fit_between_the_warm_up_and_the_cap() -> None:
    with pytest.raises(ValueError, match="anneal_epochs"):
        TrainConfig(schedule="cosine", epochs=10, anneal_epochs=11)
    with pytest.raises(ValueError, match="anneal_epochs"):
        TrainConfig(schedule="cosine", epochs=10, warmup_epochs=2, anneal_epochs=2)


def test_plateau_decays_after_lr_patience_epochs_without_improvement_and_keeps_group_ratios() -> None:
    config = TrainConfig(lr=1e-3, schedule="plateau", lr_patience=2, lr_decay=0.5, min_delta=0.01)
    # improves, improves, then only by 0.5 % (below the 1 % margin) twice: the rate halves
    val = [1.0, 0.9, 0.8955, 0.891, 0.5, 0.5, 0.5]
    rates = _rates(config, val, factors=(1.0, 0.1))
    first = [r[0] for r in rates]
    assert first[:4] == pytest.approx([1e-3] * 4)
    assert first[4] == pytest.approx(0.5e-3)
    assert first[6] == pytest.approx(0.5e-3)  # 0.5 improved once, then one bad epoch: not yet
    assert all(r[1] == pytest.approx(r[0] * 0.1) for r in rates)


def test_schedule_state_round_trips() -> None:
    config = TrainConfig(lr=1e-3, schedule="plateau", lr_patience=1, warmup_epochs=1)
    optimizer = _optimizer()
    schedule = make_schedule(optimizer, config)
    for value in [1.0, 1.0, 1.0, 1.0]:
        schedule.step(value)
    state = schedule.state_dict()
    other_optimizer = _optimizer()
    other = make_schedule(other_optimizer, config)
    other.load_state_dict(state)
    assert other_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] < 1e-3


def test_early_stopping_counts_epochs_since_the_last_relative_improvement() -> None:
    stopper = EarlyStopping(patience=3, min_delta=0.01)
    assert not stopper.update(1.0)
    assert not stopper.update(0.995)  # better, but by less than 1 %: a bad epoch
    assert not stopper.update(0.98)  # 2 % below the reference 1.0: resets
    assert [stopper.update(v) for v in (0.975, 0.99, 0.979)] == [False, False, True]
    assert EarlyStopping(patience=None, min_delta=0.0).update(math.inf) is False


def test_replay_gives_the_state_of_an_uninterrupted_run() -> None:
    history = [{"val_mae": v} for v in (1.0, 0.8, 0.8, 0.79, 0.81)]
    replayed = replay_stopping(history, TrainConfig(patience=3, min_delta=0.05))
    assert replayed.plateaued and replayed.reference == 0.8
    assert not replay_stopping(history, TrainConfig(patience=4, min_delta=0.05)).plateaued


def test_a_cosine_run_does_not_stop_on_a_plateau_before_its_anneal_has_ended() -> None:
    stalled = [{"val_mae": v} for v in (1.0, 0.8, 0.81, 0.82, 0.83, 0.84)]  # a plateau after epoch 5
    annealing = TrainConfig(epochs=12, schedule="cosine", warmup_epochs=1, anneal_epochs=8, patience=3)
    assert not replay_stopping(stalled, annealing).plateaued
    stopper = replay_stopping(stalled, annealing)
    assert [stopper.update(0.85), stopper.update(0.86)] == [False, True]  # the 8th epoch ends the anneal
    # the same plateau stops a run that anneals to its cap, and one on another schedule, at once
    assert replay_stopping(stalled, annealing.model_copy(update={"anneal_epochs": None})).plateaued
    assert replay_stopping(stalled, annealing.model_copy(update={"schedule": "plateau", "lr_patience": 2})).plateaued


def test_the_command_line_offers_every_schedule() -> None:
    from typing import get_args

    from cgat_dgl.cli import SCHEDULES
    from cgat_dgl.training.config import ScheduleName
    from cgat_dgl.training.schedules import SCHEDULES as IMPLEMENTED

    assert set(SCHEDULES) == set(get_args(ScheduleName)) == set(IMPLEMENTED)


def test_plateau_needs_its_rate_to_decay_before_the_run_stops() -> None:
    with pytest.raises(ValueError, match="lr_patience"):
        TrainConfig(schedule="plateau", lr_patience=5, patience=5)
