"""``make figures`` (``scripts/figures.py``): the README's quickstart figure is a mean ± std over
seeds, and says that the same seed gives the same bytes only on one machine and thread count
(another CPU's kernels round differently, and 200 steps amplify it).

The smoke run goes through ``scripts/figures.py`` in a fresh process, as ``make figures`` runs
it, on a tiny model (``--set``), keeping its runs (``--keep``) so the test can read them."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import figures  # noqa: E402

SMOKE = [
    *("--set", "model=tiny-llama", "--set", "train.max_steps=1", "--set", "train.batch_size=4"),
    *("--set", "data.train_size=16", "--set", "data.validation_size=4"),
    *("--set", "data.test_size=4", "--set", "eval.max_new_tokens=4"),
]


def _measured(accuracy: dict[int, float], **changes) -> dict:
    """What ``figures.measure`` returns, for ``accuracy`` per seed."""
    results = {
        "eval": {"before": {"accuracy": 0.0, "total": 200}, "after": {"total": 200}},
        "steps": 200,
        "examples": {"train": 1600},
        "trainable_params": 276480,
        "trainable_percent": 0.2055,
        "train_seconds": 331.0,
        "padding_fraction": 0.004,
    }
    config = {"train": {"batch_size": 8}, "data": {"listops": {"depth": 2}}}
    return {
        "results": results,
        "config": config,
        "seeds": sorted(accuracy),
        "accuracy": accuracy,
        "majority": 0.13,
        "step_seconds": 1.6,
        "wall_seconds": 381.0,
        "convert_seconds": 20.0,
        "repeat": 1,
        "identical": True,
        "cores": 2,
        "threads": 2,
        "kernels": "AVX2",
        "versions": "torch 2.13.0, transformers 5.24.0",
        **changes,
    }


def test_the_figure_is_the_mean_and_sample_std_over_three_seeds():
    block = figures.render(_measured({42: 0.51, 43: 0.445, 44: 0.47}))
    # mean 47.5; sample std sqrt((3.5^2 + 3^2 + 0.5^2) / 2) = 3.28 (the population std is 2.68)
    assert "mean ± std over 3 seeds | **47.5% ± 3.3** (51.0%, 44.5%, 47.0%) |" in block
    assert "(seeds 42, 43 and 44, each 200 optimizer steps" in " ".join(block.split())
    assert figures.README_SEEDS >= 3


def test_the_block_names_the_threads_and_kernels_the_bytes_hold_for():
    prose = " ".join(figures.render(_measured({42: 0.5, 43: 0.4, 44: 0.45})).split())
    assert "2 CPU cores, torch's 2 threads and AVX2 kernels" in prose
    assert "the same seed gives the same adapter on one machine with one thread count," in prose
    assert "another CPU (AVX2 or AVX-512 kernels" in prose
    repeated = " ".join(figures.render(_measured({42: 0.5, 43: 0.4}, repeat=2)).split())
    assert "; 2 runs of seed 42 wrote the same adapter, byte for byte," in repeated


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    keep = tmp_path_factory.mktemp("figures") / "runs"
    command = [sys.executable, "scripts/figures.py", *SMOKE, "--keep", str(keep)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return keep, done.stdout


def test_make_figures_trains_one_fresh_run_per_seed_and_prints_their_spread(smoke):
    keep, out = smoke
    seeds = [42, 43, 44]
    scores = []
    for seed in seeds:
        run = keep / f"seed-{seed}"
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == seed
        results = json.loads((run / "results.json").read_text())
        assert results["steps"] == 1 and results["model"] == "tiny-llama"
        assert ("before" in results["eval"]) == (seed == seeds[0])  # the base model once
        scores.append(100 * results["eval"]["after"]["accuracy"])
    adapters = {(keep / f"seed-{s}" / "adapter.safetensors").read_bytes() for s in seeds}
    assert len(adapters) == len(seeds), "every seed must train its own adapter"
    mean, std = statistics.fmean(scores), statistics.stdev(scores)
    each = ", ".join(f"{s:.1f}%" for s in scores)
    assert f"mean ± std over 3 seeds | **{mean:.1f}% ± {std:.1f}** ({each}) |" in out
    assert "+What it reaches (seeds 42, 43 and 44, each 1 optimizer steps" in out
    for name in ("GRPO", "DPO"):  # refined from seed 42's run, once per seed
        assert f"<!-- figures:{name.lower()} -->" in out  # its block, in a diff or unchanged
        results = json.loads((keep / f"{name.lower()}-44" / "results.json").read_text())
        assert results["objective"] == name.lower() and results["steps"] == 1
        assert yaml.safe_load((keep / f"{name.lower()}-44" / "config.yaml").read_text())["train"][
            "init_from"
        ] == str(keep / "seed-42")
    assert "README.md updated" not in out


def test_the_gain_interval_is_scipys_t_interval_over_seeds():
    from scipy import stats

    after = [0.55, 0.52, 0.60]
    gain, low, high = figures.gain_interval(0.50, after)
    gains = [100 * (a - 0.50) for a in after]
    expected = stats.t.interval(
        0.95, len(gains) - 1, loc=statistics.fmean(gains), scale=stats.sem(gains)
    )
    assert gain == pytest.approx(statistics.fmean(gains))
    assert (low, high) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--write", "--seeds", "2"], "--write takes the recipe as it is and at least 3 seeds"),
        (["--write", "--set", "model=tiny-llama"], "--write takes the recipe as it is and at "),
        (["--seeds", "1"], "--seeds must be at least 2 (a std needs two)"),
        (["--keep", "README.md"], "--keep README.md exists; name a new directory"),
        (["--resume", "--only", "dpo"], "--resume takes --only grpo or dpo and the --keep"),
    ],
)
def test_figures_refuses_what_it_cannot_average_before_training(tmp_path, arguments, message):
    readme = (ROOT / "README.md").read_text()
    command = [sys.executable, "scripts/figures.py", *arguments]
    # its own process group and TMPDIR: if the refusal is gone, what it starts ends here
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _, stderr = done.communicate(timeout=60)
    finally:
        if done.poll() is None:
            os.killpg(done.pid, signal.SIGKILL)
    assert done.returncode == 1
    assert stderr.startswith(f"figures: {message}")
    assert (ROOT / "README.md").read_text() == readme
