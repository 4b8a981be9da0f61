"""The random draws of a training: torch's global RNG seeded per run and process, and the
per-step generator a part draws from (JoLA's gates), the same in every process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Every draw from torch's global RNG inside (peft's LoRA dropout, a model's own dropout)
    follows ``seed``, and the caller's RNG state is restored afterwards: the same recipe gives
    the same bytes whatever ran before it in the process (sweep trials in any order)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for optimizer step ``step`` of a run seeded ``seed``: the same in every
    process, and apart from torch's global RNG (seeded ``seed + rank``). The pair is hashed to
    32 bits (numpy's SeedSequence): a CPU generator reads only the low 32 bits of its seed."""
    from numpy.random import SeedSequence

    return torch.Generator().manual_seed(int(SeedSequence([seed, step]).generate_state(1)[0]))
