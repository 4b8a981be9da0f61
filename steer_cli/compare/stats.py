"""``steer compare``'s statistics, all from scipy.stats with a fixed RNG seed (the same runs
print the same numbers).

- **A cell's 95% interval**: a two-way percentile bootstrap (``scipy.stats.bootstrap``, 9999
  resamples): the runs (seeds) and the test items are resampled independently, each with
  replacement, and the statistic is the mean score over the resampled seeds x items. Every seed
  is scored on the same items, so an item's difficulty is shared by all of them: it is drawn once
  for all seeds (a crossed design), and the interval counts both seed and item variation. One
  run: items alone. Noise particular to one (seed, item) is drawn with both, so the interval
  errs wide when that noise dominates (Owen 2007, the "pigeonhole" bootstrap), and narrow with
  three seeds that differ a lot (a bootstrap of three).
- **The paired difference against ``--baseline``**: the mean of the per-(seed, item) differences
  over the seeds both methods ran and the items both were scored on; its interval is the same
  bootstrap of those differences.
- **p**: a two-sided paired permutation test (``scipy.stats.permutation_test``,
  ``permutation_type='samples'``): each (seed, item)'s two scores are swapped at random, i.e.
  the difference's sign flipped; 9999 resamples, or every arrangement when there are at most
  9999. Zero differences are the same under every swap and are left out. On right/wrong items
  it is McNemar's exact test. It holds the trained runs fixed (item variation only); the
  interval counts seeds too, and the verdict is read from the interval.
- **The verdict**: ``equivalent`` when the whole interval lies inside +-margin (``--margin``;
  with none there is no such verdict), else ``better`` when it lies above 0, ``worse`` below 0,
  else ``inconclusive``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 9999
SEED = 0  # each cell's computation starts from np.random.default_rng(SEED)
VERDICTS = ("better", "worse", "equivalent", "inconclusive")
_BATCH_FLOATS = 4_000_000  # resamples are drawn in batches of about this many numbers


@dataclass(frozen=True)
class Interval:
    """A 95% interval of a cell's mean score (points), and what it resampled."""

    low: float
    high: float
    seeds: int
    items: int


@dataclass(frozen=True)
class Paired:
    """A cell against the baseline method's: mean difference (points), interval, p, verdict."""

    baseline: str
    difference: float
    low: float
    high: float
    p: float
    verdict: str
    seeds: int
    items: int


def interval(matrix: np.ndarray) -> Interval:
    """The two-way bootstrap interval of ``matrix.mean()`` (rows: seeds, columns: items, at
    least two items)."""
    ci = _bootstrap(matrix).confidence_interval
    return Interval(float(ci.low), float(ci.high), *matrix.shape)


def one_sided_p(matrix: np.ndarray) -> tuple[float, float]:
    """One-sided p-values of ``matrix.mean()`` (paired differences) from the same two-way
    bootstrap as :func:`interval` (same resamples): ``(p_greater, p_less)``, the share of
    resampled means at or below 0 (the evidence against "the mean is above 0") and at or above
    0, each ``(count + 1) / (resamples + 1)`` so never 0. ``p_greater < 0.025`` where the
    interval lies above 0 (the percentile interval's lower end is the 2.5% quantile)."""
    means = _bootstrap(matrix).bootstrap_distribution
    total = means.size + 1
    return float(((means <= 0).sum() + 1) / total), float(((means >= 0).sum() + 1) / total)


def _bootstrap(matrix: np.ndarray):
    """scipy.stats.bootstrap's result for the two-way percentile bootstrap of the mean."""
    from scipy.stats import bootstrap

    seeds, items = matrix.shape

    def mean(*index: np.ndarray, axis: int = -1) -> np.ndarray:
        *rows, columns = index
        per_item = matrix[rows[0]].mean(axis=-2) if rows else matrix[0]
        if per_item.ndim == 1:
            return per_item[columns].mean(axis=-1)
        return np.take_along_axis(per_item, columns, axis=-1).mean(axis=-1)

    data = ((np.arange(seeds),) if seeds > 1 else ()) + (np.arange(items),)
    return bootstrap(
        data,
        mean,
        n_resamples=RESAMPLES,
        batch=max(1, _BATCH_FLOATS // (seeds * items)),
        vectorized=True,
        paired=False,  # seeds and items drawn independently of each other
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )


def paired(
    ours: np.ndarray, theirs: np.ndarray, baseline: str, margin: float | None = None
) -> Paired:
    """``ours`` against ``theirs`` (seeds x items, the same seeds and items in the same order)."""
    differences = ours - theirs
    spread = interval(differences)
    return Paired(
        baseline=baseline,
        difference=float(differences.mean()),
        low=spread.low,
        high=spread.high,
        p=permutation_p(differences.ravel()),
        verdict=verdict(spread.low, spread.high, margin),
        seeds=spread.seeds,
        items=spread.items,
    )


def permutation_p(differences: np.ndarray) -> float:
    """Two-sided p of the mean paired difference under random swaps within each pair."""
    from scipy.stats import permutation_test

    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        return 1.0
    result = permutation_test(
        (nonzero,),
        np.mean,
        permutation_type="samples",  # one sample: each difference's sign is flipped at random
        vectorized=True,
        n_resamples=RESAMPLES,
        batch=max(1, _BATCH_FLOATS // nonzero.size),
        alternative="two-sided",
        rng=np.random.default_rng(SEED),
    )
    return float(result.pvalue)


def verdict(low: float, high: float, margin: float | None) -> str:
    """The interval read against 0 and the margin; equivalence first: the margin is what the
    user called a negligible difference."""
    if margin is not None and -margin < low and high < margin:
        return "equivalent"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inconclusive"


def method_lines(margin: float | None) -> list[str]:
    """The methods, as printed under the table and in the JSON."""
    equivalent = (
        f"equivalent when it lies inside +-{margin:g} points (--margin), else "
        if margin is not None
        else "(no 'equivalent' without --margin) "
    )
    return [
        f"intervals: {LEVEL:.0%} two-way percentile bootstrap of the mean (scipy.stats.bootstrap, "
        f"{RESAMPLES} resamples, rng seed {SEED}): seeds (runs) and test items resampled "
        "independently, items shared by all seeds; one run: items only",
        "vs baseline: mean paired difference over shared seeds and items, its interval by the "
        "same bootstrap; p: two-sided paired permutation test over items within seeds "
        f"(scipy.stats.permutation_test, permutation_type='samples', {RESAMPLES} resamples or "
        "exact; McNemar's exact test on right/wrong items), holding the runs fixed",
        f"verdict from the interval: {equivalent}better above 0, worse below 0, else inconclusive",
    ]
