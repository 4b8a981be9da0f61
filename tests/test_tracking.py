"""Experiment tracking: TensorBoard events a reader gets back, and the trackers' switches."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app

runner = CliRunner()
SMALL = {
    "method": "postblock",
    "model": "tiny-llama",
    "data": {"train_size": 12, "validation_size": 4, "test_size": 4},
    "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2},
}


def _recipe(tmp_path, **train) -> str:
    raw = {**SMALL, "train": {**SMALL["train"], **train}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _scalars(logs) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict = {}
    for events in logs.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return values


def test_tensorboard_events_hold_the_steps_and_evaluations(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", _recipe(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    scalars = _scalars(out / "logs" / "run")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([m["loss"] for m in metrics])
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([1e-2] * 3)
    assert len(scalars["train/grad_norm"]) == 3 and all(
        v > 0 for _, v in scalars["train/grad_norm"]
    )
    assert len(scalars["train/tokens_per_second"]) == 3
    results = json.loads((out / "results.json").read_text())
    assert scalars["eval/before_accuracy"] == [
        (0, pytest.approx(results["eval"]["before"]["accuracy"]))
    ]
    assert scalars["eval/after_accuracy"] == [
        (3, pytest.approx(results["eval"]["after"]["accuracy"]))
    ]
    (hparams,) = (out / "logs").rglob("hparams.yml")
    assert yaml.safe_load(hparams.read_text())["train.lr"] == 1e-2


def test_no_tracking_and_a_missing_tracker(tmp_path):
    out = tmp_path / "quiet"
    result = runner.invoke(
        app, ["train", _recipe(tmp_path), "train.report_to=none", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert not (out / "logs").exists()
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        missing = tmp_path / "wandb"
        result = runner.invoke(
            app, ["train", _recipe(tmp_path, report_to=["wandb"]), "-o", str(missing)]
        )
        assert result.exit_code == 1 and "the wandb package is not installed" in result.output
        assert not missing.exists()
    bad = runner.invoke(app, ["train", _recipe(tmp_path), "train.report_to=[tensorbord]"])
    assert bad.exit_code == 1 and "report_to" in bad.output and "Traceback" not in bad.output


def test_sweep_trials_log_under_their_names(tmp_path):
    out = tmp_path / "sweep"
    args = ["train", _recipe(tmp_path), "--sweep", "--seeds", "1", "--lrs", "1e-2", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = list(out.glob("*/logs/*/events.out.tfevents.*"))
    named = {(e.parents[2].name, e.parent.name) for e in events}  # (trial dir, its log name)
    assert named and all(trial == name for trial, name in named)
    assert {t for t, _ in named} == {r.parent.name for r in out.glob("*/results.json")}
    assert len(named) >= 2  # the LR trial and the seed trial
