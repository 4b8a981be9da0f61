"""``train.seed`` seeds every random draw of a run: the same recipe and seed give the same bytes in
the same process twice, inside a sweep whatever ran before, and in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from steer_cli import train
from steer_cli.recipe import build_recipe
from steer_cli.sweep import sweep

BASE = {
    "model": "tiny-llama",
    "data": {"train_size": 16, "validation_size": 4, "test_size": 4},
    "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2},
    "eval": {"before": False, "batch_size": 8, "max_new_tokens": 4},
}
# LoRA with dropout draws from torch's global RNG on every forward; JoLA draws gate noise.
METHODS = {
    "lora-dropout": {"method": "lora", "lora": {"dropout": 0.3}},
    "jola": {"method": "jola"},
}


def _raw(method: str, **train_changes) -> dict:
    raw = json.loads(json.dumps({**BASE, **METHODS[method]}))
    raw["train"].update(train_changes)
    return raw


def _weights(run_dir: Path) -> dict[str, bytes]:
    files = sorted(run_dir.rglob("*.safetensors"))
    assert files, f"no weights in {run_dir}"
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files}


def _disturb_global_rng() -> None:
    """What another trial, an evaluation or a user's own code may have drawn before this run."""
    torch.rand(1000)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_process_twice_same_bytes_whatever_was_drawn_before(tmp_path, method):
    torch.manual_seed(0)
    train.run(build_recipe(_raw(method)), tmp_path / "a")
    _disturb_global_rng()
    train.run(build_recipe(_raw(method)), tmp_path / "b")
    train.run(build_recipe(_raw(method, seed=7)), tmp_path / "c")
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")
    assert _weights(tmp_path / "a") != _weights(tmp_path / "c"), "the seed must matter"


def test_training_leaves_the_callers_rng_as_it_was(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    train.run(build_recipe(_raw("lora-dropout")), tmp_path / "run")
    assert torch.equal(torch.rand(4), expected)


def test_a_sweep_trial_equals_the_same_run_on_its_own(tmp_path):
    """seed-43 of a sweep (after lr and seed-42 trials) is the run ``train.seed=43`` alone."""
    recipe = build_recipe(_raw("lora-dropout"))
    summary = sweep(recipe, tmp_path / "sweep", seeds=2, lrs=[1e-3, 1e-2], log=lambda m: None)
    lone = build_recipe(_raw("lora-dropout", seed=43, lr=summary["best_lr"]))
    _disturb_global_rng()  # as if other trials had run first, or in another order
    train.run(lone, tmp_path / "lone")
    assert _weights(tmp_path / "sweep" / "seed-43") == _weights(tmp_path / "lone")


def test_a_fresh_process_gives_the_same_bytes(tmp_path):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(_raw("lora-dropout")))
    _disturb_global_rng()
    train.run(build_recipe(_raw("lora-dropout")), tmp_path / "here")
    # Same bytes for the same intra-op thread count: a parallel reduction's order (and so its
    # last bits) depends on it, and this process runs tests on one thread (conftest).
    threads = str(torch.get_num_threads())
    subprocess.run(
        [sys.executable, "-m", "steer_cli", "train", str(recipe_file), "-o", str(tmp_path / "cli")],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
    )
    assert _weights(tmp_path / "here") == _weights(tmp_path / "cli")
