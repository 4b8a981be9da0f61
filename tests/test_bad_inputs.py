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


# Each case: (id, build(tmp, run_dir) -> CLI args, a fragment the message must contain).
CASES = [
    # -- recipes --------------------------------------------------------------------------
    ("missing-recipe", lambda t, r: ["train", str(t / "nope.yaml")], "recipe not found"),
    ("empty-recipe", lambda t, r: ["train", _write(t / "e.yaml", "# nothing\n")], "is empty"),
    ("bad-yaml", lambda t, r: ["train", _write(t / "b.yaml", "train: [1,\n")], "line"),
    ("recipe-a-list", lambda t, r: ["train", _write(t / "l.yaml", "- 1\n")], "mapping"),
    ("unknown-section", lambda t, r: ["train", _recipe(t, trian={"lr": 1})], "train"),
    (
        "synonym-key",
        lambda t, r: ["train", _recipe(t), "train.learning_rate=1e-3"],
        "did you mean 'train.lr'",
    ),
    ("typo-key", lambda t, r: ["train", _recipe(t), "adapter.rnak=4"], "rank"),
    (
        "lofit-more-heads-than-the-model",
        lambda t, r: ["train", _recipe(t), "method=lofit", "adapter.lofit_heads=10000"],
        "adapter.lofit_heads=all",
    ),
    ("wrong-type", lambda t, r: ["train", _recipe(t), "train.batch_size=big"], "batch_size"),
    ("negative-lr", lambda t, r: ["train", _recipe(t), "train.lr=-1"], "lr"),
    ("unknown-method", lambda t, r: ["train", _recipe(t), "method=postblok"], "unknown method"),
    ("unknown-task", lambda t, r: ["train", _recipe(t), "data.task=boolqq"], "boolqq"),
    ("unknown-tiny-model", lambda t, r: ["train", _recipe(t), "model=tiny-lama"], "tiny-lama"),
    ("missing-model-dir", lambda t, r: ["train", _recipe(t), "model=./no/such/"], "not exist"),
    ("not-key-value", lambda t, r: ["train", _recipe(t), "train.lr"], "key=value"),
    ("into-a-value", lambda t, r: ["train", _recipe(t), "train.lr.x=1"], "train.lr"),
    ("bad-positions", lambda t, r: ["train", _recipe(t), "adapter.positions=middle"], "middle"),
    (
        "heads-off-site",
        lambda t, r: ["train", _recipe(t), "adapter.parameterization=jola"],
        "attn_heads",
    ),
    (
        "rank-auto-alone",
        lambda t, r: ["train", _recipe(t), "adapter.rank=auto"],
        "rank auto needs",
    ),
    ("orth-not-joint", lambda t, r: ["train", _recipe(t), "orth.enabled=true"], "orth.enabled"),
    (
        "joint-mode-not-joint",
        lambda t, r: ["train", _recipe(t), "eval.joint_mode=lora"],
        "joint_mode",
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
        "lofit_stage_split runs one training",
    ),
    (
        "micro-above-batch",
        lambda t, r: ["train", _recipe(t), "train.micro_batch_size=16"],
        "micro_batch_size (16) is larger than batch_size (4)",
    ),
    (
        "unknown-tracker",
        lambda t, r: ["train", _recipe(t), "train.report_to=[tensorbord]"],
        "report_to",
    ),
    ("bad-on-nonfinite", lambda t, r: ["train", _recipe(t), "train.on_nonfinite=ignore"], "stop"),
    # -- data -----------------------------------------------------------------------------
    ("missing-data-path", lambda t, r: ["train", _recipe(t), "data.path=/no/such"], "not exist"),
    ("empty-data-file", lambda t, r: ["train", _gsm8k(t, "")], "is empty"),
    (
        "malformed-jsonl",
        lambda t, r: ["train", _gsm8k(t, '{"question": "a", "answer": "#### 1"}\n{"question":\n')],
        "line 2",
    ),
    ("wrong-fields", lambda t, r: ["train", _gsm8k(t, '{"q": "a", "a": "1"}\n')], "question"),
    # -- train options --------------------------------------------------------------------
    ("dry-run-sweep", lambda t, r: ["train", _recipe(t), "--dry-run", "--sweep"], "--dry-run"),
    (
        "overwrite-sweep",
        lambda t, r: ["train", _recipe(t), "--sweep", "--overwrite"],
        "--overwrite does not apply",
    ),
    ("bad-lrs", lambda t, r: ["train", _recipe(t), "--sweep", "--lrs", "a,b"], "comma-separated"),
    ("output-exists", lambda t, r: ["train", _recipe(t), "-o", str(r)], "already exists"),
    # -- run directories and evaluation ---------------------------------------------------
    ("eval-missing", lambda t, r: ["eval", str(t / "nope"), "--tasks", "x"], "no run directory"),
    (
        "eval-config-only",
        lambda t, r: ["eval", _config_only(t), "--protocol", "paper"],
        "is not a finished run",
    ),
    ("eval-bad-protocol", lambda t, r: ["eval", str(r), "--protocol", "exam"], "exam"),
    (
        "paper-on-a-model",
        lambda t, r: ["eval", "tiny-llama", "--protocol", "paper"],
        "--protocol paper",
    ),
    (
        "paper-fewshot",
        lambda t, r: ["eval", str(r), "--protocol", "paper", "--num-fewshot", "5"],
        "--num-fewshot",
    ),
    ("eval-no-tasks", lambda t, r: ["eval", str(r)], "--tasks"),
    ("another-base", lambda t, r: ["generate", _rebased(t, r), "[MAX 1 ]"], "architecture"),
    # -- generate, compare, oracle --------------------------------------------------------
    ("generate-nothing", lambda t, r: ["generate", str(r)], "nothing to generate"),
    (
        "generate-task-format-model",
        lambda t, r: ["generate", "tiny-llama", "x", "--task-format"],
        "--task-format",
    ),
    (
        "generate-bad-jsonl",
        lambda t, r: ["generate", str(r), "-i", _write(t / "p.jsonl", "{oops\n")],
        "is not JSON",
    ),
    ("compare-nothing", lambda t, r: ["compare"], "nothing to compare"),
    ("compare-format", lambda t, r: ["compare", str(r), "-f", "xml"], "unknown format"),
    ("compare-paper", lambda t, r: ["compare", "--paper", "table9"], "table9"),
    ("oracle-missing-ft", lambda t, r: ["oracle", "tiny-llama", str(t / "nope")], "not exist"),
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


def _assert_clean(result, fragment: str, tmp: Path, before: set[str]) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert len(lines) - start <= 2, result.output  # the message and at most a hint
    assert fragment in result.output, result.output
    left = {p.name for p in tmp.iterdir()} - before
    assert not {n for n in left if n.startswith(".") or n in ("run", "runs", "o")}, left


def test_the_catalogue_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize("build, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(build, fragment, tmp_path, run_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output (runs/NAME) would land here
    args = build(tmp_path, run_dir)
    before = {p.name for p in tmp_path.iterdir()}
    _assert_clean(runner.invoke(app, args), fragment, tmp_path, before)


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    from steer_cli import atomic

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "atomic_write", full)
    out = tmp_path / "run"
    before = {p.name for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["train", _recipe(tmp_path), "-o", str(out)])
    _assert_clean(result, "no space left on the device", tmp_path, before | {"recipe.yaml"})
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
    _assert_clean(result, "read-only", tmp_path, before)


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
    assert result.exit_code == 1 and "another steer process is writing" in result.output
    assert not out.exists() and not (tmp_path / ".run.partial").exists()
