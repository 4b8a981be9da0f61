"""steer compare beside Table 3: how a win rate was judged is in its row, and a judging unlike
AlpacaEval 2.0's (GPT-4 Turbo against GPT-4 Turbo on the 805) marks the paper's row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from compare_dirs import compare_json
from typer.testing import CliRunner

from steer_cli import train
from steer_cli.cli import app
from steer_cli.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TABLE3 = ROOT / "recipes" / "paper" / "table3" / "llama-3.1-8b" / "alpaca" / "postblock.yaml"
DEMO_DATA = ROOT / "recipes" / "data" / "alpaca-demo.jsonl"
runner = CliRunner()


@pytest.fixture(scope="module")
def judged_summary(tmp_path_factory) -> dict:
    """summary.json as `steer eval RUN --instructions everyday` writes it (a tiny run)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    overrides = ["model=tiny-llama", f"data.path={DEMO_DATA}", "train.max_steps=1"]
    overrides += ["data.train_size=8", "data.validation_size=1", "data.test_size=1"]
    train.run(load_recipe(TABLE3, overrides), out)
    args = ["eval", str(out), "--instructions", "everyday", "--limit", "4", "--batch-size", "4"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "6", "--judge", "tiny-llama"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "eval" / "alpaca" / "summary.json").read_text())


def _table3_run(root: Path, summary: dict) -> Path:
    """The Table 3 recipe's run on Llama-3.1-8B (as if trained), with this judged summary."""
    run = root / "postblock"
    (run / "eval" / "alpaca").mkdir(parents=True)
    config = load_recipe(TABLE3, []).model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    results = {"eval": {"after": {"accuracy": 0.0}}, "trainable_percent": 0.05}
    (run / "results.json").write_text(json.dumps(results))
    (run / "eval" / "alpaca" / "summary.json").write_text(json.dumps(summary))
    return run


def _pair(data: dict) -> tuple[dict, dict]:
    ours, paper = data["rows"]
    assert (ours["source"], paper["source"]) == ("runs", "paper")
    assert paper["name"] == "Ours (linear, r=16)" and paper["same_variant"]
    return ours, paper


def test_a_run_judged_otherwise_marks_the_papers_row(judged_summary, tmp_path):
    _table3_run(tmp_path, judged_summary)
    data = compare_json(str(tmp_path), "--paper", "table3")
    ours, paper = _pair(data)
    cell = ours["cells"]["alpaca"]
    assert cell["judging"] == {
        "judge": "tiny-llama",
        "reference": judged_summary["reference_generator"],
        "instructions": "everyday",
        "n": 4,
    }
    assert cell["mean"] == judged_summary["length_controlled_winrate"]
    assert cell["se"] == judged_summary["lc_standard_error"] is not None
    assert paper["cells"]["alpaca"]["se"] == 0.53  # the paper's SE, beside the run's
    assert paper["cells"]["alpaca"]["judging"]["judge"] == "GPT-4 Turbo"
    assert not paper["comparable"]
    assert paper["judged_otherwise"] == [
        "judge tiny-llama, not GPT-4 Turbo",
        f"reference {judged_summary['reference_generator']}, not GPT-4 Turbo's",
        "instructions everyday (4), not AlpacaEval's 805",
    ]
    [mark] = [n for n in data["notes"] if n.startswith("*")]
    assert "judged otherwise" in mark and "Ours (linear, r=16)" in mark

    result = runner.invoke(app, ["compare", str(tmp_path), "--paper", "table3", "-f", "markdown"])
    assert result.exit_code == 0, result.output
    paper_line = next(line for line in result.stdout.splitlines() if "paper: Ours" in line)
    assert paper_line.count("*") >= 2 and "(SE 0.53)" in paper_line
    run_line = next(line for line in result.stdout.splitlines() if "| postblock r=16" in line)
    assert f"(SE {judged_summary['lc_standard_error']:.2f})" in run_line
    assert "judged by tiny-llama against" in result.stdout and "on everyday (4)" in result.stdout


def test_alpacaevals_own_setting_is_comparable(judged_summary, tmp_path):
    summary = dict(judged_summary)
    summary |= {
        "judge": "weighted_alpaca_eval_gpt4_turbo",
        "reference_generator": "gpt4_turbo",
        "instructions": "alpaca_eval",
        "n_total": 805,
    }
    _table3_run(tmp_path, summary)
    ours, paper = _pair(compare_json(str(tmp_path), "--paper", "table3"))
    assert paper["comparable"] and paper["judged_otherwise"] == []
    # ... but not on part of the 805
    shutil.rmtree(tmp_path / "postblock")
    _table3_run(tmp_path, summary | {"n_total": 50})
    _, paper = _pair(compare_json(str(tmp_path), "--paper", "table3"))
    assert paper["judged_otherwise"] == ["instructions alpaca_eval (50), not AlpacaEval's 805"]
