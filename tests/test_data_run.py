"""Training runs on task data: length accounting, padding and split sizes reach results.json."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from steer_cli import train
from steer_cli.cli import app
from steer_cli.data import hub
from steer_cli.recipe import build_recipe


def test_run_reports_truncation_drops_and_padding(tmp_path):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}.\n#### {2 * i}"}
        for i in range(6)
    ]
    rows.append({"question": "long " * 300 + "What is 1 + 1?", "answer": "1 + 1 = 2.\n#### 2"})
    rows.append({"question": "What is 2 + 2?", "answer": "word " * 300 + "\n#### 4"})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    recipe = build_recipe(
        {
            "model": "tiny-llama",
            "data": {
                "task": "gsm8k",
                "path": str(folder),
                "max_length": 96,
                "train_size": None,
                "splits": {"train": "train", "validation": None},  # every row, to count them
            },
            "train": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 2},
            "eval": {"before": False, "max_new_tokens": 4, "batch_size": 8},
        }
    )
    assert recipe.train.epochs == 3  # GSM8K's default
    out = tmp_path / "run"
    train.run(recipe, out)
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "gsm8k"
    assert results["examples"]["kept"] == 7 and results["examples"]["train"] == 7
    assert results["examples"]["truncated"] == 1 and results["examples"]["dropped"] == 1
    assert results["examples"]["test"] == 5  # GSM8K tests on the whole test split
    assert 0 <= results["padding_fraction"] < 1


def test_a_capped_hub_task_says_so_in_the_header_and_results(tmp_path, monkeypatch):
    """``data.*_size`` caps make a hub task a subsample: ``steer train`` prints what it kept of
    how much, and ``results.json`` records it (BoolQ's hub sizes, served locally)."""
    import datasets

    rows = {
        split: [
            {"question": f"{split} {i}?", "passage": "p", "answer": i % 2 == 0} for i in range(n)
        ]
        for split, n in (("train", 9427), ("validation", 3270))
    }
    served = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()})
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: served)
    recipe = tmp_path / "boolq.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": "tiny-llama",
                "data": {"task": "boolq", "train_size": 8, "validation_size": 2, "test_size": 4},
                "train": {"max_steps": 1, "batch_size": 4},
                "eval": {"before": False, "max_new_tokens": 2},
            }
        )
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(recipe), "-o", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["capped"] == ["train", "validation", "test"]
    assert results["data"]["splits"]["test"] == {
        "plan": "validation",
        "examples": 4,
        "cap": 4,
        "available": 3270,
    }
    header = " ".join(result.output.split())
    assert "train 8 of 7,541" in header and "test 4 of 3,270" in header
    assert "capped by data.train_size" in header
