"""The CLI as users see it: exit codes, one- or two-line errors without tracebacks, --help."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from steer_cli.cli import app

runner = CliRunner()

TINY_RECIPE = """\
model: tiny-qwen3
data:
  train_size: 16
  validation_size: 2
  test_size: 4
train:
  max_steps: 2
  batch_size: 4
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def _assert_clean_error(result, *fragments, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    import re

    listed = set(re.findall(r"^\W (\w+)  ", result.output, re.M))
    expected = {"train", "generate", "serve", "eval", "oracle", "compare", "export", "methods"}
    assert expected <= listed, f"missing from steer --help: {expected - listed}"


def test_no_option_help_loses_a_bracketed_default():
    """rich reads ``[default: ...]`` in a help text as markup and drops it ("Task of the prompts
    ."): each option's help must escape it as ``\\[``."""
    import re

    import typer.main

    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            text = getattr(param, "help", None) or ""
            assert not re.search(r"(?<!\\)\[[a-z]", text), f"steer {name} {param.name}: {text}"
        shown = runner.invoke(app, [name, "--help"], terminal_width=200).output
        assert not re.search(r"\w \.(\s|$)", shown, re.M), f"steer {name} --help: {shown}"


def test_help_does_not_import_torch():
    code = "import sys; from steer_cli.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_end_to_end_with_overrides(recipe, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(recipe), "adapter.rank=2", "train.lr=5e-3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "trainable" in result.output and "accuracy" in result.output
    results = json.loads((out / "results.json").read_text())
    hidden, layers = 64, 3
    assert results["trainable_params"] == layers * 2 * hidden * 2
    assert "rank: 2" in (out / "config.yaml").read_text()


def test_unknown_key_in_recipe_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny-llama\ntrain:\n  learning_rate: 1e-3\n")
    result = runner.invoke(app, ["train", str(path)])
    _assert_clean_error(result, "unknown recipe key 'train.learning_rate'", "train.lr")


def test_unknown_key_in_override(recipe):
    result = runner.invoke(app, ["train", str(recipe), "adapter.rnak=4"])
    _assert_clean_error(result, "adapter.rnak", "did you mean 'adapter.rank'")


def test_wrong_type_in_override(recipe):
    result = runner.invoke(app, ["train", str(recipe), "train.batch_size=big"])
    _assert_clean_error(result, "train.batch_size", "integer")


def test_missing_recipe_and_unknown_model(tmp_path, recipe):
    _assert_clean_error(runner.invoke(app, ["train", str(tmp_path / "x.yaml")]), "not found")
    result = runner.invoke(app, ["train", str(recipe), "model=tiny-gpt"], catch_exceptions=False)
    _assert_clean_error(result, "tiny-gpt")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_existing_output_is_refused(recipe, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    result = runner.invoke(app, ["train", str(recipe), "-o", str(out)])
    _assert_clean_error(result, "already exists", "--overwrite")


def test_unexpected_errors_have_no_traceback_unless_debug(recipe, monkeypatch, tmp_path):
    from steer_cli import train

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(train, "run", boom)
    _assert_clean_error(runner.invoke(app, ["train", str(recipe)]), "kaboom", "STEER_DEBUG")
    monkeypatch.setenv("STEER_DEBUG", "1")
    result = runner.invoke(app, ["train", str(recipe)])
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_killed_training_leaves_nothing(tmp_path, recipe, signame):
    """A run killed mid-training (Ctrl-C, a closed terminal, a job timeout) writes nothing."""
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steer_cli",
            "train",
            str(recipe),
            "train.max_steps=100000",
            "eval.before=false",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".run.partial/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)
    # Exit 130, or CPython's own exit by re-raising SIGINT after the interrupt was handled
    # (a shell reports both as $? = 130).
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [recipe]


def test_stale_staging_of_a_dead_process_is_removed(tmp_path, recipe):
    stale = tmp_path / ".run.partial-999999999"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text("{}\n")
    result = runner.invoke(app, ["train", str(recipe), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.yaml"]


def test_every_command_takes_json():
    """Scripts get JSON from every command: --json is in each one's help, and the cheap ones
    print a document that parses, with nothing else on stdout."""
    import json

    for command in ("train", "generate", "eval", "oracle", "compare", "methods", "tasks"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--json" in result.output, command
    methods = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert {m["name"] for m in methods} >= {"postblock", "lora", "joint-orth"}
    assert next(m for m in methods if m["name"] == "joint")["lora"]["rank"] == 8
    tasks = json.loads(runner.invoke(app, ["tasks", "--json"]).stdout)
    assert next(t for t in tasks if t["name"] == "boolq")["source"] == "google/boolq"
    paper = json.loads(runner.invoke(app, ["compare", "--paper", "table1", "--json"]).stdout)
    assert paper["rows"]
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("steer ")
