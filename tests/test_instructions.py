"""AlpacaEval-style evaluation end to end on tiny models: files, references, instruction sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from steer_cli import train
from steer_cli.errors import SteerError
from steer_cli.evaluate import instructions as ins
from steer_cli.evaluate.instructions import evaluate_instructions, load_instructions
from steer_cli.evaluate.winrate import win_rate_stats
from steer_cli.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "alpaca-demo.yaml"


class FirstIsBest:
    name = "first-is-best"

    def prefer(self, instructions, outputs_a, outputs_b):
        return [0.8] * len(instructions)


@pytest.fixture(scope="module")
def alpaca_run(tmp_path_factory) -> Path:
    """The demo recipe (its shipped training file) on a tiny model, a few steps."""
    out = tmp_path_factory.mktemp("alpaca") / "tiny-alpaca"
    recipe = load_recipe(
        DEMO,
        [
            "model=tiny-llama",
            f"data.path={ROOT / 'recipes' / 'data' / 'alpaca-demo.jsonl'}",
            "train.max_steps=3",
            "train.lr=0.05",
            "eval.max_new_tokens=4",
        ],
    )
    train.run(recipe, out)
    return out


def _evaluate(run: Path, tmp_path: Path, **kwargs) -> dict:
    kwargs = {"instructions": "everyday", "limit": 3, "max_new_tokens": 5, "batch_size": 2} | kwargs
    return evaluate_instructions(str(run), out_dir=tmp_path / "eval", **kwargs)


def test_run_against_its_base_writes_alpacaeval_files(alpaca_run, tmp_path) -> None:
    summary = _evaluate(alpaca_run, tmp_path, judge="tiny-llama")
    out = tmp_path / "eval"
    outputs = json.loads((out / ins.MODEL_OUTPUTS).read_text())
    references = json.loads((out / ins.REFERENCE_OUTPUTS).read_text())
    annotations = json.loads((out / ins.ANNOTATIONS).read_text())
    assert json.loads((out / ins.SUMMARY).read_text()) == summary

    everyday = json.loads(ins.EVERYDAY_FILE.read_text())[:3]
    for rows, generator in ((outputs, "tiny-alpaca"), (references, "tiny-llama (base)")):
        assert [r["instruction"] for r in rows] == [e["instruction"] for e in everyday]
        for row in rows:
            assert set(row) == {"instruction", "output", "generator", "dataset"}
            assert row["generator"] == generator and row["dataset"] == "everyday"
            assert isinstance(row["output"], str)
    for a, mine, ref in zip(annotations, outputs, references, strict=True):
        assert a["output_2"] == mine["output"] and a["output_1"] == ref["output"]
        assert (a["generator_2"], a["generator_1"]) == ("tiny-alpaca", "tiny-llama (base)")
        assert a["annotator"] == "tiny-llama"
        assert 0 <= a["preference"] <= 1
        mean = (a["preference_model_first"] + a["preference_model_second"]) / 2
        assert a["preference"] == pytest.approx(mean)
        assert (a["length_1"], a["length_2"]) == (len(ref["output"]), len(mine["output"]))

    expected = win_rate_stats(
        [a["preference"] for a in annotations],
        [a["length_2"] for a in annotations],
        [a["length_1"] for a in annotations],
    )
    assert summary["win_rate"] == pytest.approx(expected["win_rate"])
    assert summary["length_controlled_winrate"] == pytest.approx(
        expected["length_controlled_winrate"]
    )
    assert summary["n_total"] == 3 and summary["judge"] == "tiny-llama"
    assert summary["generator"] == "tiny-alpaca"
    assert summary["prompt"] == "alpaca"  # an alpaca run is prompted with the Alpaca template
    assert set(summary["seconds"]) == {"generate", "reference", "judge", "total"}


@pytest.fixture(scope="module")
def joint_lora_run(tmp_path_factory) -> Path:
    """A joint run evaluated as "lora only", both of its parts far from the identity."""
    import torch
    from conftest import randomize

    from steer_cli.runs import load_run

    out = tmp_path_factory.mktemp("joint") / "joint-lora"
    recipe = load_recipe(
        DEMO,
        [
            "model=tiny-llama",
            "method=joint",
            f"data.path={ROOT / 'recipes' / 'data' / 'alpaca-demo.jsonl'}",
            "train.max_steps=1",
            "eval.joint_mode=lora",
            "eval.max_new_tokens=4",
        ],
    )
    train.run(recipe, out)
    _, tokenizer, parts = load_run(out)
    randomize(parts.interventions, std=0.5, seed=1)
    with torch.no_grad():
        for p in parts.lora.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    parts.save(out, tokenizer=tokenizer)
    return out


def test_a_joint_run_is_judged_in_its_joint_mode(joint_lora_run, tmp_path) -> None:
    """`eval.joint_mode: lora`: the outputs judged are the LoRA part's alone."""
    from steer_cli.data.encode import prompt_token_ids
    from steer_cli.evaluate.generation import generate
    from steer_cli.runs import load_run

    _evaluate(joint_lora_run, tmp_path, judge=FirstIsBest(), limit=3, max_new_tokens=8)
    judged = json.loads((tmp_path / "eval" / ins.MODEL_OUTPUTS).read_text())
    model, tokenizer, parts = load_run(joint_lora_run)
    rows = load_instructions("everyday")[1][:3]
    prompts = [prompt_token_ids(tokenizer, ins.prompt_text(r, "alpaca"), True) for r in rows]
    outputs = {}
    for mode in ("lora", "both"):
        with parts.mode(mode):
            texts = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2)
        outputs[mode] = [t.strip() for t in texts]
    assert outputs["lora"] != outputs["both"]
    assert [r["output"] for r in judged] == outputs["lora"]


def test_default_output_directory_is_inside_the_run(alpaca_run) -> None:
    summary = evaluate_instructions(
        str(alpaca_run), instructions="everyday", judge=FirstIsBest(), limit=2, max_new_tokens=3
    )
    assert (alpaca_run / "eval" / "alpaca" / ins.SUMMARY).is_file()
    assert summary["win_rate"] == pytest.approx(50.0)  # position bias cancels
    assert summary["n_draws"] == 2


def test_a_reference_json_is_paired_by_instruction(alpaca_run, tmp_path) -> None:
    first = _evaluate(alpaca_run, tmp_path / "a", judge=FirstIsBest())
    assert first["reference_generator"] == "tiny-llama (base)"
    # Reuse the run's own outputs, reversed, as the reference: pairing is by instruction.
    outputs = json.loads((tmp_path / "a" / "eval" / ins.MODEL_OUTPUTS).read_text())
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(list(reversed(outputs))))
    second = _evaluate(alpaca_run, tmp_path / "b", judge=FirstIsBest(), reference=str(reference))
    annotations = json.loads((tmp_path / "b" / "eval" / ins.ANNOTATIONS).read_text())
    assert second["reference_generator"] == "tiny-alpaca"  # the file's generator field
    assert all(a["output_1"] == a["output_2"] for a in annotations)


def test_a_reference_for_other_instructions_is_a_clear_error(alpaca_run, tmp_path) -> None:
    reference = tmp_path / "other.json"
    reference.write_text(json.dumps([{"instruction": "Something else.", "output": "x"}]))
    with pytest.raises(SteerError, match="has no output for 3 of the 3 instructions") as err:
        _evaluate(alpaca_run, tmp_path, judge=FirstIsBest(), reference=str(reference))
    assert "--instructions" in str(err.value)
    assert not (tmp_path / "eval").exists()  # it failed before generating anything
    with pytest.raises(SteerError, match="reference outputs not found"):
        _evaluate(alpaca_run, tmp_path, judge=FirstIsBest(), reference=str(tmp_path / "no.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "Give me three tips"}]))
    with pytest.raises(SteerError, match="an instruction and an output"):
        _evaluate(alpaca_run, tmp_path, judge=FirstIsBest(), reference=str(bad))


def test_a_model_target_needs_a_reference_and_an_output_directory(tmp_path) -> None:
    with pytest.raises(SteerError, match="no base model"):
        evaluate_instructions("tiny-llama", instructions="everyday", out_dir=tmp_path)
    with pytest.raises(SteerError, match="say where to write"):
        evaluate_instructions("tiny-llama", instructions="everyday", reference="tiny-qwen2")


def test_model_against_model(tmp_path) -> None:
    summary = evaluate_instructions(
        "tiny-qwen2",
        instructions="everyday",
        reference="tiny-qwen3",
        judge=FirstIsBest(),
        out_dir=tmp_path,
        limit=2,
        max_new_tokens=3,
    )
    assert (summary["generator"], summary["reference_generator"]) == ("tiny-qwen2", "tiny-qwen3")
    assert summary["prompt"] == "plain" and summary["chat_template"] is True


def test_the_shipped_instruction_set() -> None:
    name, rows = load_instructions("everyday")
    assert name == "everyday" and len(rows) == 40
    assert len({r["instruction"] for r in rows}) == 40


def test_local_instruction_files(tmp_path) -> None:
    listed = tmp_path / "mine.json"
    listed.write_text(json.dumps([{"instruction": "Say hi."}, {"instruction": "Count to 3."}]))
    assert load_instructions(str(listed)) == (
        "mine",
        [
            {"instruction": "Say hi.", "dataset": "mine"},
            {"instruction": "Count to 3.", "dataset": "mine"},
        ],
    )
    outputs = tmp_path / "outputs.jsonl"  # AlpacaEval outputs (jsonl), with an input field
    outputs.write_text(
        json.dumps({"instruction": "Translate.", "input": "Hi", "output": "Salut", "dataset": "x"})
        + "\n"
    )
    _, rows = load_instructions(str(outputs))
    assert rows == [{"instruction": "Translate.", "dataset": "x", "input": "Hi"}]
    assert ins.prompt_text(rows[0], "alpaca").endswith("### Input:\nHi\n\n### Response:\n")
    assert ins.prompt_text(rows[0], "plain") == "Translate.\n\nHi"
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"instruction": "  "}]))
    with pytest.raises(SteerError, match="row 1: no instruction"):
        load_instructions(str(empty))
    with pytest.raises(SteerError, match="instruction file not found"):
        load_instructions(str(tmp_path / "missing.json"))


def test_the_hub_default_offline_fails_fast_with_a_hint(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(SteerError, match="cannot load AlpacaEval's instructions") as err:
        load_instructions(None)
    assert time.perf_counter() - start < 10
    assert "no network" in str(err.value)
    assert "--instructions FILE.json" in str(err.value) and "everyday" in str(err.value)


def test_the_hub_default_reads_alpaca_eval_json(monkeypatch, tmp_path) -> None:
    # What the hub serves: AlpacaEval's eval set with reference outputs and dataset names.
    served = tmp_path / "alpaca_eval.json"
    served.write_text(
        json.dumps(
            [
                {"instruction": "What is 2+2?", "output": "4", "generator": "x", "dataset": "v"},
                {"instruction": "Name a color.", "output": "Red", "generator": "x", "dataset": "k"},
            ]
        )
    )
    asked = {}

    def fake_download(repo_id, filename, **kwargs):
        asked.update(repo_id=repo_id, filename=filename, **kwargs)
        return str(served)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setattr("steer_cli.data.sources.hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    name, rows = load_instructions(None)
    assert asked["repo_id"] == "tatsu-lab/alpaca_eval" and asked["filename"] == "alpaca_eval.json"
    assert asked["repo_type"] == "dataset" and asked["local_files_only"] is False
    assert name == "alpaca_eval"
    assert rows == [
        {"instruction": "What is 2+2?", "dataset": "v"},
        {"instruction": "Name a color.", "dataset": "k"},
    ]


def test_summary_table_shows_the_figures() -> None:
    stats = win_rate_stats([0.7, 0.9, 0.3, 0.5], [30, 30, 20, 20], [20, 20, 30, 30])
    summary = {
        **stats,
        "generator": "my-run",
        "reference_generator": "base",
        "judge": "smollm2-135m",
        "instructions": "everyday",
    }
    console = Console(record=True, width=100)
    console.print(ins.summary_table(summary))
    text = console.export_text()
    assert "my-run vs base" in text and "smollm2-135m" in text
    assert "60.00% ± 12.91" in text and "62.02% ± 5.77" in text and "2 / 1 / 1" in text


# ------------------------------------------------------------------------------- the CLI


def test_cli_instructions_json_and_files(alpaca_run) -> None:
    from typer.testing import CliRunner

    from steer_cli.cli import app

    args = ["eval", str(alpaca_run), "--instructions", "everyday", "--limit", "2"]
    args += ["--max-new-tokens", "4", "--batch-size", "2", "--judge", "tiny-llama", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_total"] == 2 and summary["judge"] == "tiny-llama"
    assert summary["generator"] == "tiny-alpaca"
    written = alpaca_run / ins.OUT_SUBDIR / ins.SUMMARY
    assert json.loads(written.read_text()) == summary


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tasks", "steer_listops"], "takes instructions, not lm-eval tasks"),
        (["--protocol", "paper"], "are for AlpacaEval-style judging, not --protocol paper"),
    ],
    ids=["tasks", "protocol"],
)
def test_cli_instructions_exclude_other_protocols(alpaca_run, extra, message) -> None:
    from typer.testing import CliRunner

    from steer_cli.cli import app

    result = CliRunner().invoke(
        app, ["eval", str(alpaca_run), "--instructions", "everyday", *extra]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_judge_without_instructions_is_an_error(alpaca_run) -> None:
    from typer.testing import CliRunner

    from steer_cli.cli import app

    result = CliRunner().invoke(
        app, ["eval", str(alpaca_run), "--tasks", "steer_listops", "--judge", "tiny-llama"]
    )
    assert result.exit_code == 1
    assert "not --protocol harness" in result.output


def test_cli_protocol_alpaca_defaults_to_alpacaevals_805(alpaca_run, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from steer_cli.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["eval", str(alpaca_run), "--protocol", "alpaca"])
    assert result.exit_code == 1
    assert "cannot load AlpacaEval's instructions" in result.output
    assert "Traceback" not in result.output
