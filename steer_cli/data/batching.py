"""Training order: batches of similar lengths, so little compute goes to padding.

Each epoch: a seeded permutation of the examples is cut into *mega-batches* of
``mega_batches * batch_size`` examples; each mega-batch is sorted by length and cut into
batches; then the order of all the epoch's batches is shuffled. Every example is seen exactly
once per epoch (the last batch of an epoch may be smaller), the batch order is random, and it all
depends only on the seed. This is the "bucket by length within a window" trick of fairseq's and
HF's ``LengthGroupedSampler``, in a dozen lines of pure Python.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

MEGA_BATCHES = 50
"""Batches per sorting window: large enough to find similar lengths, small enough that the
order stays random at the scale of an epoch."""


def _rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch)


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    mega_batches: int = MEGA_BATCHES,
    min_last: int = 1,
) -> list[list[int]]:
    """One epoch of batches (lists of example indices), length-grouped.

    ``mega_batches <= 1`` turns grouping off: consecutive batches of a seeded permutation.
    A last batch smaller than ``min_last`` is topped up with the epoch's first examples (so
    each of ``min_last`` processes gets at least one; those few are then seen twice).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = _rng(seed, epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if mega_batches <= 1:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return _top_up(batches, order, min(min_last, batch_size))
    window = batch_size * mega_batches
    batches: list[list[int]] = []
    partial: list[int] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        for i in range(0, len(chunk), batch_size):
            batch = chunk[i : i + batch_size]
            if len(batch) == batch_size:
                batches.append(batch)
            else:
                partial = batch  # only the last window can leave a partial batch
    rng.shuffle(batches)
    if partial:
        batches.append(partial)
    return _top_up(batches, order, min(min_last, batch_size))


def _top_up(batches: list[list[int]], order: list[int], size: int) -> list[list[int]]:
    if batches and len(batches[-1]) < size:
        last = batches[-1]
        extra = [i for i in order if i not in last][: size - len(last)]
        batches[-1] = last + extra
    return batches


def batch_stream(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    mega_batches: int = MEGA_BATCHES,
    min_last: int = 1,
) -> Iterator[list[int]]:
    """Epoch after epoch of :func:`epoch_batches` (each epoch its own seeded order)."""
    if not lengths:
        raise ValueError("no examples to batch")
    epoch = 0
    while True:
        yield from epoch_batches(
            lengths,
            batch_size,
            seed=seed,
            epoch=epoch,
            mega_batches=mega_batches,
            min_last=min_last,
        )
        epoch += 1


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def padding_fraction(
    lengths: Sequence[int], batches: Sequence[Sequence[int]], micro_batch_size: int | None = None
) -> float:
    """Pad tokens / all tokens processed when each (micro-)batch is padded to its longest."""
    padded = real = 0
    for batch in batches:
        step = micro_batch_size or len(batch)
        for i in range(0, len(batch), step):
            sizes = [lengths[j] for j in batch[i : i + step]]
            padded += max(sizes) * len(sizes)
            real += sum(sizes)
    return 1 - real / padded if padded else 0.0
