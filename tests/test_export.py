"""``steer export``: each format written through the CLI and loaded back by the library that
reads it (transformers, peft, gguf), with the run's own logits; and every export it cannot
make refused with its reason, nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.models import load_model
from steer_cli.runs import load_run

runner = CliRunner()
PROMPTS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "[MIN 3 1 ]", "[SM 1 2 [MAX 3 4 ] ]"]
TINY_LAYERS = 3  # tiny-llama's decoder layers


def _train(root: Path, name: str, method: str, **sections) -> Path:
    recipe = {
        "method": method,
        "model": "tiny-llama",
        "data": {"train_size": 8, "validation_size": 2, "test_size": 2},
        # A large LR, so one step moves every trained part well past fp32 rounding.
        "train": {"max_steps": 1, "batch_size": 4, "lr": 5e-2},
        "eval": {"before": False, "batch_size": 2, "max_new_tokens": 2},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = root / name
    result = runner.invoke(app, ["train", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


RUNS = {  # name -> (method, recipe sections)
    "lora": ("lora", {"lora": {"lr": 5e-2}}),
    "joint": ("joint", {"lora": {"lr": 5e-2}}),
    "sft": ("sft", {"train": {"lr": 1e-2}}),
    "vector": ("postblock-vector", {"adapter": {"layers": "1:"}}),
    "vector-layer0": ("postblock-vector", {}),
    "vector-last": ("postblock-vector", {"adapter": {"layers": "1:", "positions": "last_prompt"}}),
    "lowrank": ("postblock", {"adapter": {"layers": "1:"}}),
}


class _Runs(dict):
    """Tiny trained runs, each trained the first time a test asks for it."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        method, sections = RUNS[name]
        self[name] = _train(self.root, name, method, **sections)
        return self[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _Runs(tmp_path_factory.mktemp("export-runs"))


def _export(run: Path, fmt: str, out: Path, *extra: str):
    return runner.invoke(app, ["export", str(run), "--format", fmt, "-o", str(out), *extra])


def _logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                model(input_ids=tokenizer(p, return_tensors="pt")["input_ids"]).logits[0]
                for p in PROMPTS
            ]
        )


def _base_logits(tokenizer) -> torch.Tensor:
    base, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    return _logits(base, tokenizer)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within fp32 rounding: merging LoRA reorders the sums (measured: 2e-5 on logits of
    magnitude 7; training moved them by 4)."""
    return torch.allclose(a, b, rtol=0, atol=1e-4)


# -- merged --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "sft"])
def test_merged_is_a_plain_transformers_model_with_the_runs_logits(runs, kind, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    result = _export(runs[kind], "merged", out)
    assert result.exit_code == 0, result.output
    assert f"written: {out} (merged)" in result.output
    assert not (out / "adapter_config.json").exists()  # no peft left: a plain model
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)

    model, run_tokenizer, _ = load_run(runs[kind])
    live = _logits(model, run_tokenizer)
    assert _close(_logits(exported, tokenizer), live)
    assert not _close(_base_logits(run_tokenizer), live), "training changed nothing"
    assert [tokenizer(p)["input_ids"] for p in PROMPTS] == [
        run_tokenizer(p)["input_ids"] for p in PROMPTS
    ]


def test_merged_joint_run_carries_the_adapter_for_steer(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from steer_cli.engine.attach import Interventions

    out = tmp_path / "joint"
    result = _export(runs["joint"], "merged", out)
    assert result.exit_code == 0, result.output
    assert "adapter part" in result.output and "needs steer" in result.output
    note = (out / "README.md").read_text()
    assert "needs steer" in note and "adapter.safetensors" in note
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)

    model, tokenizer, parts = load_run(runs["joint"])
    with parts.mode("lora"):  # the merged weights alone: the run with its adapter off
        assert _close(_logits(exported, tokenizer), _logits(model, tokenizer))
    both = _logits(model, tokenizer)
    assert not _close(_logits(exported, tokenizer), both), "the adapter changed nothing"
    # The adapter files beside the weights, attached by steer's engine: the whole joint run.
    Interventions.load(out).attach(exported)
    assert _close(_logits(exported, tokenizer), both)


def test_merged_refuses_an_adapter_only_run(runs, tmp_path):
    out = tmp_path / "out"
    result = _export(runs["vector"], "merged", out)
    assert result.exit_code == 1
    assert "no weights to merge" in result.output and "--format llama-cpp" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# -- peft ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "joint"])
def test_peft_loads_back_with_peft(runs, kind, tmp_path):
    from peft import PeftModel

    from steer_cli.parts import quiet_peft

    out = tmp_path / "peft"
    result = _export(runs[kind], "peft", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert not list(out.glob("*.bin"))
    base, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    with quiet_peft():
        exported = PeftModel.from_pretrained(base, str(out)).eval()

    model, run_tokenizer, parts = load_run(runs[kind])
    if kind == "joint":  # the LoRA part alone: the joint run with its adapter off
        with parts.mode("lora"):
            live = _logits(model, run_tokenizer)
        assert "only the LoRA part" in result.output
    else:
        live = _logits(model, run_tokenizer)
    assert _close(_logits(exported, tokenizer), live)
    with exported.disable_adapter():
        assert not _close(_logits(exported, tokenizer), live), "the LoRA changed nothing"


@pytest.mark.parametrize("kind", ["sft", "vector"])
def test_peft_refuses_a_run_without_lora(runs, kind, tmp_path):
    result = _export(runs[kind], "peft", tmp_path / "out")
    assert result.exit_code == 1
    assert "has no LoRA" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# -- llama-cpp -----------------------------------------------------------------------------------


def test_llama_cpp_control_vector_reads_back_with_gguf(runs, tmp_path):
    from gguf import GGUFReader
    from safetensors.torch import load_file

    out = tmp_path / "cvec"
    result = _export(runs["vector"], "llama-cpp", out)
    assert result.exit_code == 0, result.output
    assert f"--control-vector {out}/control_vector.gguf" in result.output
    again = _export(runs["vector"], "llama-cpp", out, "--overwrite", "--json")
    assert again.exit_code == 0, again.output
    record = json.loads(again.stdout)
    assert record["files"] == ["control_vector.gguf"] and record["format"] == "llama-cpp"
    reader = GGUFReader(out / "control_vector.gguf")

    def field(name):
        return reader.fields[name].contents()

    assert field("general.architecture") == "controlvector"
    assert field("controlvector.model_hint") == "llama"
    assert field("controlvector.layer_count") == TINY_LAYERS - 1
    tensors = {t.name: t for t in reader.tensors}
    # steer's layer i (the output of model.layers[i]) is llama.cpp's direction.i; no direction.0.
    assert sorted(tensors) == [f"direction.{i}" for i in range(1, TINY_LAYERS)]
    trained = load_file(runs["vector"] / "adapter.safetensors")
    for i in range(1, TINY_LAYERS):
        tensor = tensors[f"direction.{i}"]
        assert tensor.tensor_type.name == "F32" and len(tensor.shape) == 1
        vector = trained[f"adapters.{i}.vector"].numpy()
        assert np.abs(vector).sum() > 0
        assert np.array_equal(np.asarray(tensor.data), vector)


def test_llama_cpp_semantics_reproduce_the_run(runs, tmp_path):
    """The exported file, applied as llama.cpp applies it (tests/llama_cpp_cvec.py: direction.N
    added to the output of decoder layer N on every token), gives the run's logits."""
    from llama_cpp_cvec import apply_as_llama_cpp, read_control_vector

    out = tmp_path / "cvec"
    assert _export(runs["vector"], "llama-cpp", out).exit_code == 0
    model, tokenizer, parts = load_run(runs["vector"])
    live = _logits(model, tokenizer)
    base, _ = load_model("tiny-llama", dtype="float32", device="cpu")
    directions = read_control_vector(out / "control_vector.gguf")
    with apply_as_llama_cpp(base, directions):
        assert _close(_logits(base, tokenizer), live)
    assert not _close(_logits(base, tokenizer), live), "the vector changed nothing"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("vector-layer0", "adapter.layers=1-2"),
        ("vector-last", "positions 'last_prompt'"),
        ("lowrank", "parameterization 'lowrank'"),
        ("lora", "trains a LoRA, not a vector"),
        ("joint", "trains a LoRA and an adapter"),
    ],
)
def test_llama_cpp_refuses_what_a_control_vector_cannot_carry(runs, kind, reason, tmp_path):
    result = _export(runs[kind], "llama-cpp", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "cannot export" in result.output and reason in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# -- bad exports ---------------------------------------------------------------------------------


def test_bad_exports_are_refused_before_anything_is_written(runs, tmp_path):
    def fails(*args: str) -> str:
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 3, result.output  # soft-wrapped, still short
        return result.output

    out = str(tmp_path / "out")
    assert "unknown export format 'onnx'" in fails(str(runs["lora"]), "-f", "onnx", "-o", out)
    assert "does not exist" in fails(str(tmp_path / "missing"), "-f", "peft", "-o", out)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "not a run directory" in fails(str(plain), "-f", "peft", "-o", out)
    assert "holds the run" in fails(str(runs["lora"]), "-f", "peft", "-o", str(runs["lora"]))
    assert "holds the run" in fails(
        str(runs["lora"]), "-f", "peft", "-o", str(runs["lora"].parent), "--overwrite"
    )
    assert runs["lora"].is_dir() and (runs["lora"] / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_existing_output_needs_overwrite_and_is_replaced_whole(runs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    result = _export(runs["lora"], "peft", out)
    assert result.exit_code == 1 and "already exists" in result.output
    assert "--overwrite" in result.output and (out / "old.txt").read_text() == "old"

    # A failure while writing leaves the old export and no staging directory behind.
    import steer_cli.export.peft as peft_format

    def broken(run, directory):
        (directory / "adapter_config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(peft_format, "write", broken)
    result = _export(runs["lora"], "peft", out, "--overwrite")
    assert result.exit_code == 1 and "no space left" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    monkeypatch.undo()

    result = _export(runs["lora"], "peft", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists() and (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
