"""The bad-input catalogue: every case goes through the CLI and must exit 1 with a one- or
two-line message naming the problem, no traceback, and no run directory (nor a staging
directory or lock) left behind."""

import errno
import fcntl
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app

runner = CliRunner()
TINY = {
    "method": "postblock",
    "model": "tiny-llama",
    "data": {"train_size": 8, "validation_size": 2, "test_size": 4},
    "train": {"max_steps": 2, "batch_size": 4, "report_to": "none"},
    "eval": {"before": False, "batch_size": 4, "max_new_tokens": 4},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = root / "run"
    assert runner.invoke(app, ["train", str(recipe), "-o", str(out)]).exit_code == 0
    return out


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _recipe(tmp: Path, **sections) -> str:
    raw = json.loads(json.dumps(TINY))
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return _write(tmp / "recipe.yaml", yaml.safe_dump(raw))


def _gsm8k(tmp: Path, train_text: str) -> str:
    _write(tmp / "train.jsonl", train_text)
    _write(tmp / "test.jsonl", '{"question": "1+1?", "answer": "#### 2"}\n')
    return _recipe(
        tmp, data={"task": "gsm8k", "files": {"train": str(tmp / "train.jsonl"),
                                              "test": str(tmp / "test.jsonl")}}
    )  # fmt: skip


# Each case: (id, build(tmp, run_dir) -> CLI args, what the error must say). What it must say is a
# fragment, or a tuple of fragments, long enough to name the fault (the key or the input, the rule
# it breaks, the value given) and so to match no other message by accident; {tmp} stands for the
# case's folder, {run} for the trained run.
CASES = [
    # -- recipes --------------------------------------------------------------------------
    (
        "missing-recipe",
        lambda t, r: ["train", str(t / "nope.yaml")],
        "recipe not found: {tmp}/nope.yaml",
    ),
    (
        "empty-recipe",
        lambda t, r: ["train", _write(t / "e.yaml", "# nothing\n")],
        "e.yaml is empty: it would train every default",
    ),
    (
        "bad-yaml",
        lambda t, r: ["train", _write(t / "b.yaml", "train: [1,\n")],
        ("b.yaml: ", "at line 2, column 1"),
    ),
    (
        "recipe-a-list",
        lambda t, r: ["train", _write(t / "l.yaml", "- 1\n")],
        "a recipe must be a mapping of keys, got list",
    ),
    (
        "unknown-section",
        lambda t, r: ["train", _recipe(t, trian={"lr": 1})],
        "unknown recipe key 'trian'\ndid you mean 'train'?",
    ),
    (
        "synonym-key",
        lambda t, r: ["train", _recipe(t), "train.learning_rate=1e-3"],
        "unknown recipe key 'train.learning_rate'\ndid you mean 'train.lr'?",
    ),
    (
        "typo-key",
        lambda t, r: ["train", _recipe(t), "adapter.rnak=4"],
        "unknown recipe key 'adapter.rnak'\ndid you mean 'adapter.rank'?",
    ),
    (
        "lofit-more-heads-than-the-model",
        lambda t, r: ["train", _recipe(t), "method=lofit", "adapter.lofit_heads=10000"],
        (
            "adapter.lofit_heads=10000 asks for 10000 heads; the steered layers have 12",
            "or adapter.lofit_heads=all",
        ),
    ),
    (
        "wrong-type",
        lambda t, r: ["train", _recipe(t), "train.batch_size=big"],
        ("recipe key 'train.batch_size' should be a valid integer", "got 'big'"),
    ),
    (
        "neither-form-of-a-union",  # one key and both forms, not pydantic's member tags
        lambda t, r: ["train", _recipe(t), "method=lofit", "adapter.lofit_heads=most"],
        "recipe key 'adapter.lofit_heads' should be a valid number or 'all', got 'most'",
    ),
    (
        "negative-lr",
        lambda t, r: ["train", _recipe(t), "train.lr=-1"],
        "recipe key 'train.lr' should be greater than 0, got -1",
    ),
    (
        "unknown-method",
        lambda t, r: ["train", _recipe(t), "method=postblok"],
        "unknown method 'postblok'\ndid you mean 'postblock'?",
    ),
    (
        "unknown-task",
        lambda t, r: ["train", _recipe(t), "data.task=boolqq"],
        "unknown task 'boolqq'\nDid you mean 'boolq'?",
    ),
    (
        "unknown-tiny-model",
        lambda t, r: ["train", _recipe(t), "model=tiny-lama"],
        "Unknown tiny model 'tiny-lama'.",
    ),
    (
        "missing-model-dir",
        lambda t, r: ["train", _recipe(t), "model=./no/such/"],
        "Model directory './no/such/' does not exist.",
    ),
    (
        "not-key-value",
        lambda t, r: ["train", _recipe(t), "train.lr"],
        "override 'train.lr' is not of the form key=value",
    ),
    (
        "into-a-value",
        lambda t, r: ["train", _recipe(t), "train.lr.x=1"],
        "recipe section 'train.lr': should be a valid number",
    ),
    (
        "bad-positions",
        lambda t, r: ["train", _recipe(t), "adapter.positions=middle"],
        ("recipe key 'adapter.positions' must be one of all, prompt,", "got 'middle'"),
    ),
    (
        "heads-off-site",
        lambda t, r: ["train", _recipe(t), "adapter.parameterization=jola"],
        "'adapter.parameterization' jola edits attention heads: set adapter.site=attn_heads",
    ),
    (
        "rank-auto-alone",
        lambda t, r: ["train", _recipe(t), "adapter.rank=auto"],
        "'adapter': rank auto needs adapter.budget (e.g. '0.1%') or adapter.match",
    ),
    (
        "orth-not-joint",
        lambda t, r: ["train", _recipe(t), "orth.enabled=true"],
        "orth.enabled needs both LoRA and an adapter; method 'postblock' has not",
    ),
    (
        "joint-mode-not-joint",
        lambda t, r: ["train", _recipe(t), "eval.joint_mode=lora"],
        "eval.joint_mode=lora is for joint runs, not 'postblock'",
    ),
    (
        "lofit-split-and-stages",
        lambda t, r: [
            "train",
            _recipe(t),
            "method=lofit",
            "adapter.lofit_stage_split=0.5",
            "adapter.lofit_lr_stage1=1e-3",
        ],
        "lofit_stage_split runs one training at train.lr and train.epochs: drop lofit_lr_stage1",
    ),
    (
        "micro-above-batch",
        lambda t, r: ["train", _recipe(t), "train.micro_batch_size=16"],
        "'train': micro_batch_size (16) is larger than batch_size (4)",
    ),
    (
        "unknown-tracker",
        lambda t, r: ["train", _recipe(t), "train.report_to=[tensorbord]"],
        "'train.report_to' should be 'tensorboard', 'wandb', 'mlflow' or 'none', got 'tensorbord'",
    ),
    (
        "bad-on-nonfinite",
        lambda t, r: ["train", _recipe(t), "train.on_nonfinite=ignore"],
        "'train.on_nonfinite' should be 'stop' or 'skip', got 'ignore'",
    ),
    # -- data -----------------------------------------------------------------------------
    (
        "missing-data-path",
        lambda t, r: ["train", _recipe(t), "data.path=/no/such"],
        "data.path '/no/such' does not exist",
    ),
    (
        "empty-data-file",
        lambda t, r: ["train", _gsm8k(t, "")],
        "data file {tmp}/train.jsonl is empty",
    ),
    (
        "malformed-jsonl",
        lambda t, r: ["train", _gsm8k(t, '{"question": "a", "answer": "#### 1"}\n{"question":\n')],
        "{tmp}/train.jsonl line 2 is not JSON",
    ),
    (
        "wrong-fields",
        lambda t, r: ["train", _gsm8k(t, '{"q": "a", "a": "1"}\n')],
        "train.jsonl line 1: field 'question' is missing",
    ),
    # -- train options --------------------------------------------------------------------
    (
        "dry-run-sweep",
        lambda t, r: ["train", _recipe(t), "--dry-run", "--sweep"],
        "--dry-run checks one run\ndrop --sweep",
    ),
    (
        "overwrite-sweep",
        lambda t, r: ["train", _recipe(t), "--sweep", "--overwrite"],
        "--overwrite does not apply to --sweep: a sweep resumes where it stopped",
    ),
    (
        "bad-lrs",
        lambda t, r: ["train", _recipe(t), "--sweep", "--lrs", "a,b"],
        "--lrs 'a,b' is not a comma-separated list of numbers",
    ),
    (
        "output-exists",
        lambda t, r: ["train", _recipe(t), "-o", str(r)],
        "run directory {run} already exists",
    ),
    # -- run directories and evaluation ---------------------------------------------------
    (
        "eval-missing",
        lambda t, r: ["eval", str(t / "nope"), "--tasks", "x"],
        "no run directory or model at {tmp}/nope",
    ),
    (
        "eval-config-only",
        lambda t, r: ["eval", _config_only(t), "--protocol", "paper"],
        "{tmp}/copied is not a finished run: it has config.yaml but no adapter.safetensors",
    ),
    (
        "eval-bad-protocol",
        lambda t, r: ["eval", str(r), "--protocol", "exam"],
        "unknown protocol 'exam'\nchoose harness, paper, alpaca",
    ),
    (
        "paper-on-a-model",
        lambda t, r: ["eval", "tiny-llama", "--protocol", "paper"],
        ("--protocol paper evaluates a run", "pass a run directory instead of tiny-llama"),
    ),
    (
        "paper-fewshot",
        lambda t, r: ["eval", str(r), "--protocol", "paper", "--num-fewshot", "5"],
        "--protocol paper repeats the run's own evaluation (its recipe's prompts, chat template "
        "and token budget): --num-fewshot would not apply",
    ),
    ("eval-no-tasks", lambda t, r: ["eval", str(r)], "which tasks?\npass --tasks"),
    (
        "another-base",
        lambda t, r: ["generate", _rebased(t, r), "[MAX 1 ]"],
        (
            "was trained on tiny-llama; tiny-qwen2 as loaded now differs",
            "architecture LlamaForCausalLM (run) vs Qwen2ForCausalLM",
        ),
    ),
    # -- generate, compare, oracle --------------------------------------------------------
    (
        "generate-nothing",
        lambda t, r: ["generate", str(r)],
        "nothing to generate from: give a PROMPT, or --input FILE.jsonl",
    ),
    (
        "generate-task-format-model",
        lambda t, r: ["generate", "tiny-llama", "x", "--task-format"],
        "--task-format uses a run's task template; a model has none",
    ),
    (
        "generate-bad-jsonl",
        lambda t, r: ["generate", str(r), "-i", _write(t / "p.jsonl", "{oops\n")],
        "{tmp}/p.jsonl line 1 is not JSON",
    ),
    (
        "compare-nothing",
        lambda t, r: ["compare"],
        "nothing to compare\npass run directories, --paper TABLE, or both",
    ),
    (
        "compare-format",
        lambda t, r: ["compare", str(r), "-f", "xml"],
        "unknown format 'xml'\nchoose from table, markdown, csv, latex, json",
    ),
    (
        "compare-paper",
        lambda t, r: ["compare", "--paper", "table9"],
        "unknown published table 'table9'\nchoose from table1, table2, table3, table4",
    ),
    (
        "oracle-missing-ft",
        lambda t, r: ["oracle", "tiny-llama", str(t / "nope")],
        "Model directory '{tmp}/nope' does not exist.",
    ),
]


def _config_only(tmp: Path) -> str:
    folder = tmp / "copied"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({**TINY}))
    return str(folder)


def _rebased(tmp: Path, run: Path) -> str:
    """A copy of the run whose config names another family of the same shapes."""
    import shutil

    copy = tmp / "rebased"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["name"] = "tiny-qwen2"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return str(copy)


def _assert_clean(
    result, says: str | tuple[str, ...], tmp: Path, before: set[str], run: Path | None = None
) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert len(lines) - start <= 2, result.output  # the message and at most a hint
    error = "\n".join(lines[start:])  # the error alone: a log line before it cannot match
    for fragment in (says,) if isinstance(says, str) else says:
        assert fragment.format(tmp=tmp, run=run) in error, result.output
    left = {p.name for p in tmp.iterdir()} - before
    assert not {n for n in left if n.startswith(".") or n in ("run", "runs", "o")}, left


def test_the_catalogue_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize("build, says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(build, says, tmp_path, run_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output (runs/NAME) would land here
    args = build(tmp_path, run_dir)
    before = {p.name for p in tmp_path.iterdir()}
    _assert_clean(runner.invoke(app, args), says, tmp_path, before, run_dir)


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    from steer_cli import atomic

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "atomic_write", full)
    out = tmp_path / "run"
    before = {p.name for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["train", _recipe(tmp_path), "-o", str(out)])
    says = "file system error at {tmp}/.run.partial/config.yaml: no space left on the device"
    _assert_clean(result, says, tmp_path, before | {"recipe.yaml"})
    assert not out.exists()


def test_a_read_only_place_is_a_clear_error(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name.endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    recipe = _recipe(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["train", recipe, "-o", str(tmp_path / "run")])
    says = "file system error at {tmp}/.run.partial: the file system is read-only"
    _assert_clean(result, says, tmp_path, before)


def test_two_processes_on_one_output_one_refuses(tmp_path):
    """A process holding the run's lock (another steer train) makes this one refuse at once."""
    out = tmp_path / "run"
    lock = os.open(tmp_path / ".run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        result = runner.invoke(app, ["train", _recipe(tmp_path), "-o", str(out)])
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    says = f"another steer process is writing {out} (it holds {tmp_path / '.run.lock'})"
    assert result.exit_code == 1 and says in result.output
    assert not out.exists() and not (tmp_path / ".run.partial").exists()
