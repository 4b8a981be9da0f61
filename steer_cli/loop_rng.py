"""The random draws of a training: torch's global RNG seeded per run and process, the
per-step generator a part draws from (JoLA's gates), the same in every process, and GRPO's
sampling, seeded per step and process."""

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
    return torch.Generator().manual_seed(_hashed(seed, step))


def _hashed(*entropy: int) -> int:
    from numpy.random import SeedSequence

    return int(SeedSequence(list(entropy)).generate_state(1)[0])


@contextmanager
def rollout_seeded(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """GRPO's sampling at optimizer step ``step`` in process ``rank``: torch's RNG (which
    ``generate`` samples from) seeded by the three, the caller's restored afterwards. The
    samples are a function of the run's seed, the step and the process alone, so a run resumed
    from a checkpoint samples what the whole run sampled, whatever else drew from the RNG."""
    with seeded(_hashed(seed, step, rank), device):
        yield
