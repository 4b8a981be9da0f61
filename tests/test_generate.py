"""``steer generate``: a run's continuations through the CLI, equal to its own evaluation's."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.data.templates import LISTOPS_PROMPT

runner = CliRunner()
PROMPT = "[MAX 2 9 [MIN 4 7 ] 0 ]"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run whose adapter steers the last prompt token only."""
    root = tmp_path_factory.mktemp("generate")
    recipe = {
        "method": "postblock",
        "model": "tiny-llama",
        "data": {"train_size": 16, "validation_size": 2, "test_size": 6},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-2},
        "adapter": {"positions": "last_prompt"},
        "eval": {"before": False, "batch_size": 4, "max_new_tokens": 6},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = root / "run"
    result = runner.invoke(app, ["train", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_batch_mode_reproduces_the_runs_own_evaluation(run_dir, tmp_path):
    """The run's test prompts through generate --input/--output give the outputs training's
    evaluation and `steer eval --protocol paper` wrote (greedy, the run's budget)."""
    predictions = _json_lines((run_dir / "predictions.jsonl").read_text())
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["generate", str(run_dir), "--input", str(run_dir / "predictions.jsonl"), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = _json_lines(out.read_text())
    assert [r["output"] for r in rows] == [p["output"] for p in predictions]
    assert [r["gold"] for r in rows] == [p["gold"] for p in predictions]  # input rows kept

    evaluated = runner.invoke(
        app, ["eval", str(run_dir), "--protocol", "paper", "--log-samples", "-o", str(tmp_path)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    (samples,) = tmp_path.glob("paper-*.samples.jsonl")
    assert [s["output"] for s in _json_lines(samples.read_text())] == [r["output"] for r in rows]


def test_compare_base_and_stdin(run_dir):
    from steer_cli.data.encode import uses_chat_template
    from steer_cli.models import load_model
    from steer_cli.runs import read_config

    stdin = json.dumps({"prompt": PROMPT}) + "\n" + json.dumps("[MIN 3 1 ]") + "\n"
    result = runner.invoke(
        app, ["generate", str(run_dir), "--input", "-", "--compare-base", "--json"], input=stdin
    )
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    assert [r["prompt"] for r in rows] == [PROMPT, "[MIN 3 1 ]"]
    assert all(r["output"] != r["base_output"] for r in rows)  # the adapter changes answers

    # The base half is the plain model, prompted as the run was trained.
    _, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    chat = uses_chat_template(tokenizer, read_config(run_dir).data.chat_template)
    flag = "--chat-template" if chat else "--no-chat-template"
    plain = runner.invoke(
        app, ["generate", "tiny-llama", PROMPT, "[MIN 3 1 ]", flag, "--max-new-tokens", "6"]
    )
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == "".join(r["base_output"] + "\n" for r in rows)

    text = runner.invoke(app, ["generate", str(run_dir), PROMPT, "--compare-base"])
    assert text.exit_code == 0, text.output
    assert text.stdout == f"steered: {rows[0]['output']}\nbase: {rows[0]['base_output']}\n"


def test_task_format_and_sampling(run_dir):
    result = runner.invoke(app, ["generate", str(run_dir), PROMPT, "--task-format", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = _json_lines(result.stdout)
    assert row["prompt"] == LISTOPS_PROMPT.format(expression=PROMPT)

    def sample(seed: int) -> str:
        args = ["generate", str(run_dir), PROMPT, "--temperature", "1.5", "--seed", str(seed)]
        done = runner.invoke(app, [*args, "--max-new-tokens", "12", "--json"])
        assert done.exit_code == 0, done.output
        return _json_lines(done.stdout)[0]["output"]

    greedy = runner.invoke(app, ["generate", str(run_dir), PROMPT, "--max-new-tokens", "12"])
    assert sample(1) == sample(1), "a seed fixes the sample"
    assert {sample(1), sample(2), greedy.stdout.strip()} != {sample(1)}


def test_streamed_text_is_the_output(run_dir):
    from transformers import TextStreamer

    from steer_cli import generate as gen

    pieces: list[str] = []

    class Collect(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            pieces.append(text)

    def streamer_for(tokenizer, label):
        assert label == "steered"
        return Collect(tokenizer, skip_prompt=True, skip_special_tokens=True)

    done = gen.run(gen.GenerateRequest(str(run_dir), prompts=[PROMPT]), streamer_for=streamer_for)
    assert "".join(pieces).strip() == done.outputs[0].strip() and done.outputs[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["RUN"], "nothing to generate from"),
        (["tiny-llama", PROMPT, "--task-format"], "--task-format uses a run's task template"),
        (["tiny-llama", PROMPT, "--compare-base"], "--compare-base compares a run"),
        (["RUN", PROMPT, "--input", "-"], "give PROMPTs or --input, not both"),
        (["RUN", "--input", "missing.jsonl"], "no input file at missing.jsonl"),
        (["RUN", PROMPT, "--temperature", "-1"], "--temperature must be >= 0"),
        (["RUN", PROMPT, "--json", "-o", "x.jsonl"], "--json prints to stdout"),
    ],
)
def test_bad_requests_are_clear_errors(run_dir, args, message):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    result = runner.invoke(app, ["generate", *args], input="")
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_jsonl_lines_are_named(run_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "[MAX 1 ]"}\n{"prompt": \n')
    result = runner.invoke(app, ["generate", str(run_dir), "--input", str(bad)])
    assert result.exit_code == 1 and f"{bad} line 2 is not JSON" in result.output
    bad.write_text('{"text": "[MAX 1 ]"}\n')
    result = runner.invoke(app, ["generate", str(run_dir), "--input", str(bad)])
    assert result.exit_code == 1
    assert "row 1 has no text 'prompt' field (fields: text)" in result.output
