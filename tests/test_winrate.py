"""Win rate, standard error and the length-controlled win rate, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steer_cli.errors import SteerError
from steer_cli.evaluate.winrate import logistic_fit, win_rate_stats


def test_symmetric_example_worked_by_hand() -> None:
    # Four instructions; the model's output is 10 characters longer on the first two and 10
    # shorter on the last two: delta = +10, +10, -10, -10.
    #   std(delta, ddof=1) = sqrt(4 * 100 / 3) = 11.547, so every feature is +t or -t with
    #   t = tanh(10 / 11.547).
    # Preferences: 0.7, 0.9 on the longer pair (mean p+ = 0.8), 0.3, 0.5 on the shorter pair
    # (mean p- = 0.4).
    # The logistic score equations, sum (p_i - s(b + w x_i)) = 0 and sum x_i (p_i - s(...)) = 0,
    # with x = +t twice and -t twice give s(b + w t) = p+ and s(b - w t) = p-; adding the two
    # logits: b = (logit 0.8 + logit 0.4) / 2 = (ln 4 + ln(2/3)) / 2 = 0.490415.
    # LC = s(b) = 1 / (1 + exp(-b)), exp(-b) = sqrt(0.25 * 1.5) = sqrt(0.375), so
    #   LC = 1 / (1 + sqrt(0.375)) = 0.620204.
    # Raw win rate: mean = 0.6. Standard error: deviations 0.1, 0.3, -0.3, -0.1; sum of squares
    # 0.2; variance 0.2 / 3; SE = sqrt(0.2 / 3) / sqrt(4) = 0.129099.
    # The draw is the 0.5; 0.7 and 0.9 are wins, 0.3 a loss.
    stats = win_rate_stats([0.7, 0.9, 0.3, 0.5], [30, 30, 20, 20], [20, 20, 30, 30])
    assert stats["win_rate"] == pytest.approx(60.0)
    assert stats["standard_error"] == pytest.approx(100 * math.sqrt(0.2 / 3) / 2)
    assert stats["standard_error"] == pytest.approx(12.9099, abs=1e-4)
    assert stats["lc_fit"]["intercept"] == pytest.approx((math.log(4) + math.log(2 / 3)) / 2)
    assert stats["length_controlled_winrate"] == pytest.approx(100 / (1 + math.sqrt(0.375)))
    assert stats["length_controlled_winrate"] == pytest.approx(62.0204, abs=1e-4)
    t = math.tanh(10 / math.sqrt(400 / 3))
    assert stats["lc_fit"]["length_coef"] * t == pytest.approx((math.log(4) - math.log(2 / 3)) / 2)
    # LC standard error: the fit is 0.8 on the longer pair and 0.4 on the shorter one, so the
    # residuals are -0.1, 0.1, -0.1, 0.1 and the per-instruction LC preferences LC -+ 0.1
    # (mean: LC). Their SE: sqrt(0.04 / 3) / sqrt(4) = 0.057735, under the raw 0.129099 because
    # length explains part of the spread.
    assert stats["lc_standard_error"] == pytest.approx(100 * math.sqrt(0.04 / 3) / 2)
    assert stats["lc_standard_error"] == pytest.approx(5.7735, abs=1e-4)
    assert (stats["n_wins"], stats["n_wins_base"], stats["n_draws"]) == (2, 1, 1)
    assert stats["n_total"] == 4


def test_discrete_preferences_with_ties_count_half() -> None:
    # 3 wins, 1 loss, 2 ties: (3 + 2 * 0.5) / 6 = 66.67%.
    stats = win_rate_stats([1, 1, 1, 0, 0.5, 0.5], [5] * 6, [5] * 6)
    assert stats["win_rate"] == pytest.approx(100 * 4 / 6)
    assert (stats["n_wins"], stats["n_wins_base"], stats["n_draws"]) == (3, 1, 2)


def test_without_length_differences_lc_equals_the_win_rate() -> None:
    # Equal lengths everywhere: no length signal, so the fit is the intercept alone and
    # s(b) is the mean preference.
    prefs = [0.2, 0.9, 0.6, 0.75, 0.1]
    stats = win_rate_stats(prefs, [12] * 5, [12] * 5)
    assert stats["length_controlled_winrate"] == pytest.approx(100 * np.mean(prefs))
    assert stats["lc_fit"]["length_coef"] == 0.0
    assert stats["lc_standard_error"] == pytest.approx(stats["standard_error"])


def test_lc_standard_error_is_the_sem_of_per_instruction_lc_preferences() -> None:
    # Uneven data: each preference minus the fit at its own length difference, plus LC,
    # averages to LC (the intercept's score equation), and the SE is their mean's.
    prefs = np.array([0.8, 0.3, 0.6, 0.4, 0.9, 0.55, 0.2])
    model, reference = [40, 10, 25, 30, 60, 21, 12], [20, 30, 20, 25, 20, 20, 18]
    stats = win_rate_stats(prefs, model, reference)
    fit = stats["lc_fit"]
    delta = np.subtract(model, reference)
    mu = 1 / (
        1 + np.exp(-(fit["intercept"] + fit["length_coef"] * np.tanh(delta / delta.std(ddof=1))))
    )
    lc = stats["length_controlled_winrate"] / 100
    per_instruction = lc + prefs - mu
    assert per_instruction.mean() == pytest.approx(lc, abs=1e-6)
    expected = 100 * per_instruction.std(ddof=1) / math.sqrt(len(prefs))
    assert stats["lc_standard_error"] == pytest.approx(expected)
    assert 0 < stats["lc_standard_error"] < stats["standard_error"]


def test_lc_discounts_a_length_driven_preference() -> None:
    # The model wins exactly when it is longer, and is longer 3 times out of 4: a raw 75%.
    # At equal length the fit predicts about a coin flip, far below the raw rate.
    stats = win_rate_stats([1, 1, 1, 0], [30, 31, 32, 10], [10, 10, 10, 30])
    assert stats["win_rate"] == pytest.approx(75.0)
    assert stats["length_controlled_winrate"] < 60
    assert stats["lc_fit"]["length_coef"] > 1


def test_lc_ignores_the_length_unit() -> None:
    # delta is divided by its std: lengths in characters or in tenths of them agree.
    prefs = [0.8, 0.3, 0.6, 0.4, 0.9]
    a = win_rate_stats(prefs, [40, 10, 25, 30, 60], [20, 30, 20, 25, 20])
    b = win_rate_stats(prefs, [4, 1, 2.5, 3, 6], [2, 3, 2, 2.5, 2])
    assert a["length_controlled_winrate"] == pytest.approx(b["length_controlled_winrate"])


def test_all_wins_stays_finite() -> None:
    stats = win_rate_stats([1.0, 1.0, 1.0], [1, 2, 3], [3, 2, 1])
    assert stats["win_rate"] == 100.0
    assert 99.99 < stats["length_controlled_winrate"] <= 100.0


def test_logistic_fit_matches_a_direct_gradient_check() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(50), rng.normal(size=50)])
    y = rng.uniform(size=50)
    beta = logistic_fit(x, y)
    mu = 1 / (1 + np.exp(-(x @ beta)))
    assert np.allclose(x.T @ (y - mu), 0, atol=1e-8)  # the score equations hold


def test_bad_preferences_are_refused() -> None:
    with pytest.raises(SteerError):
        win_rate_stats([], [], [])
    with pytest.raises(ValueError):
        win_rate_stats([1.2], [1], [1])
    single = win_rate_stats([0.7], [3], [4])
    assert single["standard_error"] is None and single["win_rate"] == pytest.approx(70.0)
    assert single["lc_standard_error"] is None
