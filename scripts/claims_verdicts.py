"""How the claims report judges: the verdict rules, Holm's correction across the report, the
``Claim`` record and the findings built from pairs of recipes. What it measures is in
:mod:`claims_runs`, the paper's figures in :mod:`claims_paper`; the claims themselves in
:mod:`claims_list`, :mod:`claims_joint` and :mod:`claims_oracle`.

Every rule has three outcomes, fixed before the numbers: shown, opposite, or inconclusive at this
scale. Accuracy claims read steer compare's paired statistics (``steer_cli.compare``: the
two-way bootstrap over seeds and test items of the per-(seed, item) differences):

- **beats** (A > B): one-sided at 95%, p = the share of the bootstrap's resampled mean
  differences at or below 0 (``compare.stats.one_sided_p``), Holm-corrected across every
  one-sided test of the report (:func:`decide`); opposite: the reverse test, corrected alike.
- **matches** (A is no more than M below B): the whole 95% interval of A - B above -M; opposite
  when it lies wholly below -M. M is the paper's own gap (``steer_cli.published``).
- **adds little** (A is no more than M above B): the mirror image.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

from claims_paper import in_words, signed
from claims_runs import Cell, Context, Pair, cell_interval

SHOWN, OPPOSITE, NOT_RUN = "shown", "opposite", "not run"
INCONCLUSIVE = "inconclusive at this scale"
PASSED, FAILED = "sanity check passed", "sanity check failed"
ALPHA = 0.05  # one-sided, family-wise over the report's one-sided tests (Holm)
PENDING = "pending"  # a one-sided test's verdict before Holm's correction (decide)

# -- verdicts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneSided:
    """A one-sided test in the report's Holm family: ``p_greater`` against "not A > B",
    ``p_less`` against "not A < B" (the opposite direction, corrected as a family of its own)."""

    p_greater: float
    p_less: float


@dataclass(frozen=True)
class Finding:
    measured: str
    verdict: str
    rule: str
    headline: str = ""  # the number for the summary table
    test: OneSided | None = None  # decided by Holm's correction across the report
    adjusted: tuple[float, float] | None = None  # Holm-adjusted (p_greater, p_less)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): the k-th smallest times (m - k + 1), made
    non-decreasing in that order and capped at 1. A hypothesis is rejected at family-wise level
    alpha where its adjusted p is at most alpha."""
    m = len(ps)
    adjusted = [1.0] * m
    running = 0.0
    for k, i in enumerate(sorted(range(m), key=ps.__getitem__)):
        running = max(running, min(1.0, (m - k) * ps[i]))
        adjusted[i] = running
    return adjusted


def beats_rule(what: str = "A is above B") -> str:
    """A one-sided rule; ``{family}`` becomes the family's size in :func:`decide`."""
    return (
        f"one-sided at 95% with Holm's correction across the report's {{family}} one-sided "
        f"tests: shown if the Holm-adjusted p of the test that {what} is at most {ALPHA:g}; "
        "opposite if the reverse test's Holm-adjusted p is; otherwise inconclusive at this scale"
    )


BOOTSTRAP_P = (
    "p: the share of the two-way bootstrap's resampled mean differences (seeds and test items, "
    "steer compare's) on the wrong side of 0"
)


def decide(found: list[Claim]) -> list[Claim]:
    """The one-sided tests' verdicts: Holm's correction over every one of them in the report,
    each direction a family of its own."""
    tested = [i for i, c in enumerate(found) if c.finding.test is not None]
    greater = holm([found[i].finding.test.p_greater for i in tested])
    less = holm([found[i].finding.test.p_less for i in tested])
    out = list(found)
    for i, g, s in zip(tested, greater, less, strict=True):
        finding = found[i].finding
        verdict = SHOWN if g <= ALPHA else OPPOSITE if s <= ALPHA else INCONCLUSIVE
        rule = finding.rule.replace("{family}", in_words(len(tested)))
        out[i] = replace(
            found[i], finding=replace(finding, verdict=verdict, rule=rule, adjusted=(g, s))
        )
    return out


def beats(pair: Pair | str, measured: str, headline: str) -> Finding:
    """A > B, one-sided, to be decided with the report's other one-sided tests."""
    if isinstance(pair, str):
        return Finding(f"{measured}: {pair}", NOT_RUN, beats_rule())
    return Finding(
        f"{measured}; {pair.text()}; one-sided p (A > B) = {pair.p_greater:.4f}",
        PENDING,
        beats_rule() + "; " + BOOTSTRAP_P,
        headline,
        OneSided(pair.p_greater, pair.p_less),
    )


def within(
    pair: Pair | str, measured: str, verdict: Callable[[Pair], str], rule: str, headline: str
) -> Finding:
    """A claim judged against a margin stated before measuring (``verdict``: :func:`at_least`
    or :func:`at_most` with that margin); not run while ``pair`` is the reason it is missing."""
    if isinstance(pair, str):
        return Finding(f"{measured}: {pair}", NOT_RUN, "")
    return Finding(f"{measured}; {pair.text()}", verdict(pair), rule, headline)


def at_least(pair: Pair, margin: float) -> str:
    """A is no more than ``margin`` below B: the interval's lower end above -margin."""
    if pair.low > -margin:
        return SHOWN
    return OPPOSITE if pair.high < -margin else INCONCLUSIVE


def at_most(pair: Pair, margin: float) -> str:
    """A is no more than ``margin`` above B: the interval's upper end below +margin."""
    if pair.high < margin:
        return SHOWN
    return OPPOSITE if pair.low > margin else INCONCLUSIVE


def at_least_rule(margin: float, source: str) -> str:
    return (
        f"a match within a margin stated before measuring, M = {signed(margin)} points "
        f"({source}): shown if the whole 95% interval of A − B lies above −M; opposite if it "
        "lies wholly below −M; otherwise inconclusive at this scale"
    )


def split_half(values: list[float], inside: Callable[[float], bool], outside: Callable) -> str:
    """A descriptive number measured on each half of the oracle's sample: shown if both halves
    are ``inside`` the claim, opposite if both are ``outside`` it, else inconclusive."""
    if all(inside(v) for v in values):
        return SHOWN
    return OPPOSITE if all(outside(v) for v in values) else INCONCLUSIVE


def mean_std(values: list[float], digits: int = 3) -> str:
    if not values:
        return "not run"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {std:.{digits}f} (n={len(values)})"


def seed_test(larger: list[float], smaller: list[float]) -> OneSided:
    """Welch's t-test over seeds, one-sided both ways (scipy.stats.ttest_ind)."""
    from scipy.stats import ttest_ind

    def p(alternative: str) -> float:
        result = ttest_ind(larger, smaller, equal_var=False, alternative=alternative)
        return 1.0 if math.isnan(result.pvalue) else float(result.pvalue)

    return OneSided(p("greater"), p("less"))


WELCH = "p: Welch's t-test over the seeds (scipy.stats.ttest_ind, one-sided)"

# -- the claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    title: str
    source: str  # where the paper (or its blog) makes it
    paper: str  # the paper's own figure
    finding: Finding
    keys: tuple[str, ...] = ()  # the recipes measured (their commands go beside the claim)
    note: str = ""
    limits: str = ""  # what limits the verdict at this scale

    @property
    def sanity(self) -> bool:
        """A check of the machinery, not a finding: not counted among the verdicts."""
        return self.finding.verdict in (PASSED, FAILED)


# -- building claims ---------------------------------------------------------------------------


def described(ctx: Context, key: str) -> str:
    """``A = `postblock` 39.7 ± 3.1 (n=5), 95% interval [35.1, 44.0], LR 0.002``."""
    cell = ctx.cell(key)
    if not cell.n:
        return f"{run_name(key)} not run"
    spread = cell_interval(ctx, key)
    text = f"{run_name(key)} {cell.text()}"
    if spread is not None:
        text += f", 95% interval [{spread.low:.1f}, {spread.high:.1f}]"
    lr = cell.setting("train", "lr")
    return text + (f", LR {lr:g}" if lr is not None else "")


def measured_pair(ctx: Context, a: str, b: str) -> str:
    return f"A = {described(ctx, a)}; B = {described(ctx, b)}"


def pair_claim(ctx: Context, a: str, b: str) -> Finding:
    """A beats B (one-sided, Holm)."""
    return beats(ctx.pair(a, b), measured_pair(ctx, a, b), versus(ctx.cell(a), ctx.cell(b)))


def versus(a: Cell, b: Cell) -> str:
    if not a.n or not b.n:
        return "not run"
    return f"{a.key.split('/')[-1]} {a.mean:.1f} vs {b.key.split('/')[-1]} {b.mean:.1f}"


def run_name(key: str) -> str:
    return f"`{key.split('/')[-1]}`"
