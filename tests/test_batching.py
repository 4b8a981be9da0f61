"""Length-grouped batches: little padding, every example once per epoch, seeded."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from steer_cli.data.batching import (
    batch_stream,
    batches_per_epoch,
    epoch_batches,
    padding_fraction,
)

FIXTURES = Path(__file__).parent / "fixtures"


def lognormal_lengths(n: int, median: float, sigma: float, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(8, round(median * math.exp(rng.gauss(0, sigma)))) for _ in range(n)]


def gsm8k_like_lengths(n: int = 7473, seed: int = 0) -> list[int]:
    """GSM8K-shaped: the fixture's rows' character lengths / 4 (about a token each), spread by a
    lognormal factor like the real question + rationale lengths (median ~200 tokens)."""
    rows = [
        json.loads(line) for line in (FIXTURES / "gsm8k" / "train.jsonl").read_text().splitlines()
    ]
    base = [len(r["question"]) + len(r["answer"]) for r in rows]
    rng = random.Random(seed)
    return [
        max(16, round(rng.choice(base) / 4 * 2.5 * math.exp(rng.gauss(0, 0.45)))) for _ in range(n)
    ]


@pytest.mark.parametrize(
    "lengths",
    [
        gsm8k_like_lengths(),
        lognormal_lengths(9427, median=180, sigma=0.6),  # BoolQ-like: long-tailed passages
        lognormal_lengths(2000, median=60, sigma=0.3),
    ],
)
@pytest.mark.parametrize(("batch_size", "micro"), [(8, None), (8, 2), (32, 8)])
def test_padding_under_ten_percent(lengths, batch_size, micro) -> None:
    grouped = epoch_batches(lengths, batch_size, seed=42)
    random_order = epoch_batches(lengths, batch_size, seed=42, mega_batches=0)
    grouped_pad = padding_fraction(lengths, grouped, micro)
    assert grouped_pad < 0.10
    assert grouped_pad < padding_fraction(lengths, random_order, micro) / 3


def test_every_example_once_per_epoch_and_seeded() -> None:
    lengths = lognormal_lengths(1003, median=100, sigma=0.5)
    batches = epoch_batches(lengths, 8, seed=42)
    assert len(batches) == batches_per_epoch(1003, 8) == 126
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert [len(b) for b in batches[:-1]] == [8] * 125 and len(batches[-1]) == 3
    assert batches == epoch_batches(lengths, 8, seed=42)
    assert batches != epoch_batches(lengths, 8, seed=43)
    assert batches != epoch_batches(lengths, 8, seed=42, epoch=1)
    # The stream is epoch after epoch; each epoch covers everything once.
    stream = list(islice(batch_stream(lengths, 8, seed=42), 3 * 126))
    assert stream[:126] == batches
    for epoch in range(3):
        seen = Counter(i for b in stream[epoch * 126 : (epoch + 1) * 126] for i in b)
        assert set(seen.values()) == {1} and len(seen) == 1003


def test_batch_order_is_not_sorted() -> None:
    lengths = lognormal_lengths(4000, median=100, sigma=0.5)
    maxima = [max(lengths[i] for i in b) for b in epoch_batches(lengths, 8, seed=42)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    # Long and short batches are spread over the epoch, not bunched at one end.
    half = len(maxima) // 2
    assert abs(sum(maxima[:half]) / sum(maxima[half:]) - 1) < 0.1


@pytest.mark.parametrize("mega_batches", [0, 50])
def test_last_batch_topped_up_for_processes(mega_batches) -> None:
    lengths = lognormal_lengths(17, median=50, sigma=0.5)
    plain = epoch_batches(lengths, 8, seed=1, mega_batches=mega_batches)
    assert len(plain[-1]) == 1
    topped = epoch_batches(lengths, 8, seed=1, mega_batches=mega_batches, min_last=4)
    assert topped[:-1] == plain[:-1] and len(topped[-1]) == 4
    assert topped[-1][0] == plain[-1][0] and len(set(topped[-1])) == 4
    assert {i for b in topped for i in b} == set(range(17))


def test_edge_cases() -> None:
    assert epoch_batches([5], 8, seed=0) == [[0]]
    assert padding_fraction([4, 4], [[0, 1]]) == 0.0
    assert padding_fraction([2, 4], [[0, 1]]) == 0.25
    assert padding_fraction([2, 4], [[0, 1]], micro_batch_size=1) == 0.0
    with pytest.raises(ValueError):
        next(batch_stream([], 8, seed=0))
    with pytest.raises(ValueError):
        epoch_batches([1, 2], 0, seed=0)
