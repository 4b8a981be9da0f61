"""A training run on local task files: length accounting and padding reach results.json."""

from __future__ import annotations

import json

from steer_cli import train
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
            "data": {"task": "gsm8k", "path": str(folder), "max_length": 96, "train_size": None},
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
    assert results["examples"]["test"] == 4  # test[20%:] of 5 rows
    assert 0 <= results["padding_fraction"] < 1
