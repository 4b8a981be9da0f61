"""Win rate, its standard error, and the length-controlled (LC) win rate, from preferences.

A preference is P(the model's output is better than the reference's) for one instruction, in
[0, 1]: 1 a win, 0 a loss, 0.5 a tie, anything between from a weighted judge (AlpacaEval's
``preference - 1``). Percentages, as AlpacaEval reports them (and under its column names):

- ``win_rate``: the mean preference (so a tie counts half);
- ``standard_error``: the preferences' sample standard deviation (ddof 1) over sqrt(n);
- ``length_controlled_winrate``: what the win rate would be if both outputs had the same length;
- ``lc_standard_error``: its standard error, the way AlpacaEval computes it (below).

AlpacaEval 2.0 fits a logistic GLM ``preference ~ tanh(delta / std(delta)) +
instruction_difficulty + not_gamed_baseline`` (delta: the difference of the two outputs' lengths
in characters; L1-penalized, cross-validated, regularized towards pre-fitted "gamed" baselines,
with per-instruction difficulties downloaded from its hub repository), predicts every instruction
at delta = 0 and averages. **Our simplification** keeps the length term and drops the hub-fitted
parts, which do not exist offline or for other instruction sets: an unpenalized maximum-likelihood
fit with soft labels of ``preference ~ b + w * tanh(delta / std(delta))`` (delta = model length
minus reference length, std with ddof 1), by Newton's method (= IRLS), and LC = sigmoid(b): with
no per-instruction term the prediction at delta = 0 is the same for every instruction.

**LC standard error.** AlpacaEval 2.0 reports ``lc_standard_error`` as the standard error of the
mean of the per-instruction length-controlled predictions (their sample std, ddof 1, over
sqrt(n)), which differ through its per-instruction difficulty term. Ours carry that
per-instruction part in the instruction's own residual: the per-instruction length-controlled
preference is ``q_i = LC + (p_i - mu_i)``, ``mu_i = s(b + w tanh(delta_i / std(delta)))`` the
fit at the instruction's own length difference, i.e. its preference with the fitted length
effect taken out. At the fit, sum(p_i - mu_i) = 0 (the intercept's score equation), so mean(q)
is LC, and ``lc_standard_error = 100 * std(q, ddof=1) / sqrt(n)``. With no length effect
(w = 0) it is the raw win rate's standard error; the more of the preferences length explains,
the smaller it is. (Taking AlpacaEval's formula literally on our fit would give 0 always.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from steer_cli.errors import SteerError

# Soft labels are kept this far inside (0, 1) so the likelihood has a finite maximum even when
# every preference is 0 or 1 (then LC is within 1e-6 of the raw win rate's 0 or 1).
_EPS = 1e-6
_TIE = 1e-9


def logistic_fit(features: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> np.ndarray:
    """Maximum-likelihood logistic regression with soft labels in [0, 1]: the ``beta`` that
    maximizes sum(y log s(X beta) + (1 - y) log(1 - s(X beta))). Newton steps with halving
    (the objective is concave; halving only guards the first steps of a steep start)."""
    x = np.asarray(features, dtype=float)
    y = np.clip(np.asarray(labels, dtype=float), _EPS, 1 - _EPS)
    beta = np.zeros(x.shape[1])

    def loglik(b: np.ndarray) -> float:
        z = x @ b
        return float(np.sum(y * z - np.logaddexp(0.0, z)))

    current = loglik(beta)
    for _ in range(iterations):
        mu = 1.0 / (1.0 + np.exp(-(x @ beta)))
        gradient = x.T @ (y - mu)
        hessian = (x * (mu * (1 - mu))[:, None]).T @ x
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while (value := loglik(beta + scale * step)) < current - 1e-12 and scale > 1e-8:
            scale /= 2
        if value < current - 1e-12:  # no ascent left: at the maximum up to rounding
            break
        beta, previous, current = beta + scale * step, current, value
        if np.max(np.abs(scale * step)) < 1e-10 or current - previous < 1e-14:
            break
    return beta


def win_rate_stats(
    preferences: Sequence[float],
    model_lengths: Sequence[int],
    reference_lengths: Sequence[int],
) -> dict:
    """AlpacaEval's leaderboard numbers for one model against one reference (see the module
    doc); ``lc_fit`` holds the GLM's intercept and length coefficient."""
    p = _checked(preferences, model_lengths, reference_lengths)
    n = len(p)
    intercept, slope, spread, per_instruction = _length_fit(p, model_lengths, reference_lengths)
    lc = 1.0 / (1.0 + math.exp(-intercept))
    return {
        "win_rate": 100 * float(p.mean()),
        "standard_error": _sem(p),
        "length_controlled_winrate": 100 * lc,
        "lc_standard_error": _sem(per_instruction),
        "n_wins": int(np.sum(p > 0.5 + _TIE)),
        "n_wins_base": int(np.sum(p < 0.5 - _TIE)),
        "n_draws": int(np.sum(np.abs(p - 0.5) <= _TIE)),
        "n_total": n,
        "avg_length": float(np.mean(model_lengths)),
        "reference_avg_length": float(np.mean(reference_lengths)),
        "lc_fit": {
            "intercept": float(intercept),
            "length_coef": float(slope),
            "delta_length_std": spread,
        },
    }


def lc_preferences(
    preferences: Sequence[float], model_lengths: Sequence[int], reference_lengths: Sequence[int]
) -> np.ndarray:
    """Each instruction's length-controlled preference ``q_i`` (fractions; their mean is the LC
    win rate): what ``steer compare`` resamples for a judged cell's interval."""
    p = _checked(preferences, model_lengths, reference_lengths)
    return _length_fit(p, model_lengths, reference_lengths)[3]


def _checked(
    preferences: Sequence[float], model_lengths: Sequence[int], reference_lengths: Sequence[int]
) -> np.ndarray:
    p = np.asarray(preferences, dtype=float)
    n = len(p)
    if n == 0:
        raise SteerError("no preferences to compute a win rate from")
    if len(model_lengths) != n or len(reference_lengths) != n:
        raise ValueError("one model length and one reference length per preference")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("preferences must lie in [0, 1]")
    return p


def _length_fit(
    p: np.ndarray, model_lengths: Sequence[int], reference_lengths: Sequence[int]
) -> tuple[float, float, float, np.ndarray]:
    """The GLM's intercept and length coefficient, the length differences' std, and q_i."""
    n = len(p)
    delta = np.asarray(model_lengths, dtype=float) - np.asarray(reference_lengths, dtype=float)
    spread = float(np.std(delta, ddof=1)) if n > 1 else 0.0
    # All differences equal: length and intercept cannot be told apart; fit the intercept only.
    length = np.tanh(delta / spread) if spread > 0 else np.zeros(n)
    intercept, slope = logistic_fit(np.column_stack([np.ones(n), length]), p)
    lc = 1.0 / (1.0 + math.exp(-intercept))
    fitted = 1.0 / (1.0 + np.exp(-(intercept + slope * length)))
    per_instruction = lc + (p - fitted)  # each preference, its fitted length effect taken out
    return float(intercept), float(slope), spread, per_instruction


def _sem(values: np.ndarray) -> float | None:
    """The standard error of the mean in %: sample std (ddof 1) over sqrt(n); None for n < 2."""
    n = len(values)
    return 100 * float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else None
