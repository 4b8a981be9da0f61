"""The bundled ``steer_listops`` test split: generated ListOps that no recipe trains on.

A recipe's own splits are cut from one seeded stream (test first, then validation, then train:
:func:`steer_cli.data.listops.make_splits`), so they are disjoint, but two recipes' streams are
not: the paper-sized test split of the seed-42 stream (its first 2,000 expressions) would hold
1,600 of the quickstart's training expressions (its indices 300-1,899). So the bundled test split
is a stream of its own, under a named seed (:data:`TEST`), that skips every expression of
:data:`TRAINED`: the first 100,000 expressions of each stream a recipe trains on. Those hold every
train split cut at ``data.seed`` 42 with sizes summing to at most the paper's 96,000 + 2,000 +
2,000: the quickstart, ``recipes/methods/*`` and the paper's LRA cells (``tests/test_listops.py``
checks each shipped recipe against them by hashing), any recipe with the default generator
settings and seed, and the bundled task's own train and validation splits (its few-shot pool).

The price of that guarantee: the 100,000 excluded expressions include nearly every short one
(a flat operator over 2 or 3 digits has only 1,600 and 16,000 spellings), so the bundled test
leans to longer expressions than a recipe's own test split does. LRA streams (500 tokens or
more) can never meet the depth-2 test stream, so they are not generated to be excluded.
"""

from __future__ import annotations

import functools

from steer_cli.data import listops
from steer_cli.data.splits import LISTOPS_SIZES

TEST_NAME = "steer_listops/test"
TEST = listops.Stream(seed=listops.seed_for(TEST_NAME), count=LISTOPS_SIZES["test"])
"""The bundled test split: the paper's 2,000 expressions, at the generator's default settings
(depth 2, arity 4: the quickstart's), from a seed no recipe's ``data.seed`` names."""

PAPER_TOTAL = sum(LISTOPS_SIZES.values())
TRAINED: tuple[listops.Stream, ...] = (
    listops.Stream(seed=42, count=PAPER_TOTAL),  # the quickstart, methods/*, the defaults
    listops.Stream(seed=42, count=PAPER_TOTAL, **listops.LRA),  # data.listops.preset: lra
)
"""Every stream a recipe's train split is cut from, as far as any split of the paper's sizes
reaches (a recipe trains on a slice of one of these: ``tests/test_listops.py``)."""


@functools.cache
def excluded() -> frozenset[str]:
    """The expressions of :data:`TRAINED` that the test stream could otherwise draw."""
    out: set[str] = set()
    for stream in TRAINED:
        if stream.may_share(TEST):
            out.update(stream.expressions())
    return frozenset(out)


def held_out_rows() -> list[dict]:
    """The bundled test split's rows, ``{"expression", "value"}``, as the generator makes them."""
    expressions = TEST.expressions(exclude=excluded())
    return [{"expression": e, "value": listops.evaluate(e)} for e in expressions]
