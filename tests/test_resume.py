"""Runs survive faults: SIGKILL at random steps (and inside a checkpoint write), then the same
command, ends with the bytes of an uninterrupted run, running only the steps after its
checkpoint; a NaN stops the run; --restart."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli import checkpoints, train
from steer_cli.cli import app
from steer_cli.recipe import build_recipe

runner = CliRunner()
RAW = {
    "model": "tiny-llama",
    "data": {"train_size": 24, "validation_size": 2, "test_size": 4},
    "train": {"epochs": 2, "batch_size": 4, "save_every": 1, "report_to": ["none"]},
    "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
}
EXTRA = {"lora": {"lora": {"dropout": 0.3}}, "joint-orth": {}, "postblock": {}}


def _recipe_file(tmp_path: Path, method: str) -> Path:
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump({**RAW, "method": method, **EXTRA[method]}))
    return path


def _weights(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.safetensors")}


def _command(recipe: Path, out: Path) -> tuple[list[str], dict]:
    # One intra-op thread, as this process uses: the same bytes need the same reductions.
    threads = str(torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return [sys.executable, "-m", "steer_cli", "train", str(recipe), "-o", str(out)], env


def _staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _steps_done(out: Path) -> int:
    metrics = _staging(out) / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def _checkpoint_step(staging: Path) -> int:
    return int(checkpoints.latest(staging / "checkpoints").name.removeprefix("step-"))


def _logged_steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


@pytest.mark.parametrize("method", ["postblock", "lora", "joint-orth"])
def test_sigkill_at_random_steps_then_resume_gives_the_same_bytes(tmp_path, method):
    recipe = _recipe_file(tmp_path, method)
    command, env = _command(recipe, tmp_path / "whole")
    subprocess.run(command, env=env, check=True, capture_output=True)
    expected = _weights(tmp_path / "whole")

    out = tmp_path / "killed"
    command, env = _command(recipe, out)
    kills = sorted(random.Random(method).sample(range(1, 11), 3))  # of 12 steps
    for at in kills:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _steps_done(out) < at and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "a killed run is never in place"
    at = _checkpoint_step(_staging(out))
    logged = (_staging(out) / "metrics.jsonl").read_text().splitlines()[:at]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resumed from the checkpoint at step {at} of 12" in done.stderr
    assert f"steps {at + 1}-12 to go" in done.stderr
    assert _weights(out) == expected
    # The last process ran the steps after the checkpoint, once each: the lines before it are
    # the killed processes' own (their timings), not a retrain's.
    assert _logged_steps(out / "metrics.jsonl") == list(range(1, 13))
    assert (out / "metrics.jsonl").read_text().splitlines()[:at] == logged
    assert json.loads((out / "results.json").read_text())["resumed_from"] == at
    assert not (out / "checkpoints").exists() and not _staging(out).exists()


def _recipe(**train_section):
    raw = {**RAW, "method": "postblock", "train": {**RAW["train"], **train_section}}
    return build_recipe(raw)


def _steps_run(monkeypatch) -> list[int]:
    """The optimizer steps this process runs from now on, in order."""
    from steer_cli import loop

    ran: list[int] = []
    real_step = loop._Loop.step

    def step(self, step, batch):
        ran.append(step)
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", step)
    return ran


def test_a_checkpoint_half_written_is_never_read(tmp_path, monkeypatch, capsys):
    """The process dies inside the write of step 5's checkpoint: the next run resumes from
    step 4's, runs steps 5 to 12 only, and ends with the uninterrupted run's bytes."""
    train.run(_recipe(), tmp_path / "whole")
    expected = _weights(tmp_path / "whole")
    real_fsync = checkpoints._fsync
    calls = []

    def dies_in_step_5(path):
        calls.append(path)
        if "step-00000005" in str(path) and path.name == checkpoints.TENSORS:
            raise KeyboardInterrupt  # after the tensors, before state.json: half written
        real_fsync(path)

    monkeypatch.setattr(checkpoints, "_fsync", dies_in_step_5)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.run(_recipe(), out)
    staging = out.with_name(".run.partial") / "checkpoints"
    assert sorted(p.name for p in staging.iterdir()) == [
        f".tmp-step-00000005-{os.getpid()}",
        "step-00000004",
    ]
    monkeypatch.setattr(checkpoints, "_fsync", real_fsync)
    capsys.readouterr()
    ran = _steps_run(monkeypatch)
    resumed = train.run(_recipe(), out)
    assert ran == list(range(5, 13))
    assert "resumed from the checkpoint at step 4 of 12" in capsys.readouterr().err
    assert resumed.results["steps"] == 12 and resumed.results["resumed_from"] == 4
    assert _logged_steps(out / "metrics.jsonl") == list(range(1, 13))
    assert _weights(out) == expected


def test_restart_discards_and_another_recipe_is_refused(tmp_path, monkeypatch):
    from steer_cli import loop

    real_step = loop._Loop.step

    def crash_at_3(self, step, batch):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", crash_at_3)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump({**RAW, "method": "postblock"}))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(recipe_file), "-o", str(out)])
    assert result.exit_code == 130 and "a checkpoint of this run is kept" in result.output
    monkeypatch.setattr(loop._Loop, "step", real_step)
    other = runner.invoke(app, ["train", str(recipe_file), "train.lr=1e-3", "-o", str(out)])
    assert other.exit_code == 1 and "holds a checkpoint of another recipe" in other.output
    fresh = runner.invoke(app, ["train", str(recipe_file), "--restart", "-o", str(out)])
    assert fresh.exit_code == 0 and "resumed" not in fresh.output
    assert "resumed_from" not in json.loads((out / "results.json").read_text())


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(yaml.safe_dump({**RAW, "method": "postblock"}))
    from steer_cli.engine.adapters import LowRankAdapter

    real_forward = LowRankAdapter.forward
    calls = {"n": 0}

    def nan_later(self, h):
        calls["n"] += 1
        out = real_forward(self, h)
        return out * float("nan") if calls["n"] > 3 * 6 else out  # 3 layers x 6 micro-steps

    monkeypatch.setattr(LowRankAdapter, "forward", nan_later)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(recipe_file), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "training stopped at step 7: the loss is nan" in result.output
    assert "Traceback" not in result.output and not out.exists()
    kept = checkpoints.latest(out.with_name(".run.partial") / "checkpoints")
    assert kept is not None and kept.name == "step-00000006"  # the last good one

    calls["n"] = 0
    skipped = runner.invoke(
        app, ["train", str(recipe_file), "train.on_nonfinite=skip", "--restart", "-o", str(out)]
    )
    assert skipped.exit_code == 0, skipped.output


def test_a_sweep_resumes_inside_its_unfinished_trial(tmp_path, monkeypatch):
    """A sweep killed in a trial's step 5 resumes that trial from its checkpoint (steps 5 to 12
    only, the finished trial kept), to the bytes of a sweep that was never interrupted."""
    from steer_cli import loop
    from steer_cli.sweep import sweep

    def lr_sweep(out):
        return sweep(_recipe(), out, seeds=1, lrs=[1e-2], log=lambda m: None)

    lr_sweep(tmp_path / "whole")
    real_step = loop._Loop.step
    calls = {"n": 0}

    def crash_in_the_second_trial(self, step, batch):
        calls["n"] += 1
        if calls["n"] == 12 + 5:  # the LR trial's 12 steps, then step 5 of the seed trial
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Loop, "step", crash_in_the_second_trial)
    with pytest.raises(KeyboardInterrupt):
        lr_sweep(tmp_path / "killed")
    monkeypatch.setattr(loop._Loop, "step", real_step)
    (unfinished,) = [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".partial")]
    assert checkpoints.latest(unfinished / "checkpoints").name == "step-00000004"
    ran = _steps_run(monkeypatch)
    lr_sweep(tmp_path / "killed")
    assert ran == list(range(5, 13))
    resumed = json.loads((tmp_path / "killed" / "seed-42" / "results.json").read_text())
    assert resumed["resumed_from"] == 4
    assert _logged_steps(tmp_path / "killed" / "seed-42" / "metrics.jsonl") == list(range(1, 13))
    for trial in ("lr-0.01", "seed-42"):
        assert _weights(tmp_path / "killed" / trial) == _weights(tmp_path / "whole" / trial)
