"""Parameter counts (formulas vs built parts vs peft), the rank search, ``steer methods``."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from steer_cli.cli import app
from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.models import load_model
from steer_cli.parts import (
    build_parts,
    count_base,
    count_parameters,
    lora_parameter_count,
    measure,
    resolve_rank,
)
from steer_cli.recipe import build_recipe

# tiny-llama: d = 64, 3 layers, 4 heads x 16 (q, o: 64 -> 64), 2 KV heads (k, v: 64 -> 32),
# MLP 128. LoRA r=8 on all seven projections: 8 * 3 * (128 + 96 + 96 + 128 + 192 + 192 + 192).
D, LAYERS = 64, 3
LORA_R8 = 8 * LAYERS * 1024
LOWRANK_PER_RANK = LAYERS * 2 * D


@pytest.fixture
def fresh_llama():
    """A model of its own: LoRA and SFT change the model they are built on."""
    model, tokenizer = load_model("tiny-llama", dtype="float32", device="cpu")
    model.requires_grad_(False)
    return model, tokenizer


# -- counts ------------------------------------------------------------------------------------


def test_lora_count_equals_peft_and_the_formula(fresh_llama):
    model, tokenizer = fresh_llama
    ids = tokenizer("[MAX 1 2 ]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    recipe = build_recipe({"method": "lora"})
    assert lora_parameter_count(model, recipe.lora) == LORA_R8
    parts = build_parts(model, recipe)
    assert parts.model.get_nb_trainable_parameters()[0] == LORA_R8
    assert parts.num_parameters() == LORA_R8
    # B = 0 at init: the wrapped model computes exactly the base model.
    with torch.no_grad():
        assert torch.equal(parts.model(input_ids=ids).logits, before)
    assert parts.remove() is model
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    other = recipe.lora.model_copy(update={"rank": 3, "target_modules": ["v_proj", "down_proj"]})
    assert lora_parameter_count(model, other) == 3 * LAYERS * (96 + 192)
    with pytest.raises(SteerError, match="match no linear layer"):
        lora_parameter_count(model, recipe.lora.model_copy(update={"target_modules": ["wq"]}))


@pytest.mark.parametrize("method", ["postblock", "postblock-vector", "lora", "sft"])
def test_built_parts_match_the_formulas(fresh_llama, method):
    model, _ = fresh_llama
    recipe = build_recipe({"method": method})
    assert measure(model, recipe) == count_parameters(model, recipe)
    assert not any(p.requires_grad for p in model.parameters()), "measure must undo its parts"
    expected = {
        "postblock": 8 * LOWRANK_PER_RANK,
        "postblock-vector": LAYERS * D,
        "lora": LORA_R8,
        "sft": count_base(model),
    }
    assert count_parameters(model, recipe) == expected[method]


def test_rank_search_picks_the_closest_rank(fresh_llama):
    model, _ = fresh_llama
    recipe, choice = resolve_rank(model, build_recipe({"adapter": {"budget": 5 * 384 + 150}}))
    assert recipe.adapter.rank == choice.rank == 5 and choice.params == 5 * LOWRANK_PER_RANK
    assert recipe.adapter.budget is None and recipe.adapter.match is None

    base = count_base(model)
    recipe, choice = resolve_rank(model, build_recipe({"adapter": {"budget": "1%"}}))
    target = round(base / 100)
    assert choice.target == target and "1% of the base model" in choice.describe()
    best = min(range(1, D + 1), key=lambda r: abs(r * LOWRANK_PER_RANK - target))
    assert recipe.adapter.rank == best

    # Matching LoRA r=8 on tiny-llama: 24,576 = 64 * 384 exactly.
    recipe, choice = resolve_rank(model, build_recipe({"adapter": {"match": "lora"}}))
    assert (choice.rank, choice.params, choice.target) == (64, LORA_R8, LORA_R8)
    assert "lora (r=8)" in choice.describe()
    smaller = build_recipe({"adapter": {"match": "lora"}, "lora": {"rank": 2}})
    assert resolve_rank(model, smaller)[0].adapter.rank == 16

    fixed = build_recipe({})
    assert resolve_rank(model, fixed) == (fixed, None)
    with pytest.raises(SteerError, match="parameterization with a rank"):
        resolve_rank(
            model,
            build_recipe({"method": "postblock-vector", "adapter": {"budget": "0.1%"}}),
        )


# -- steer methods -----------------------------------------------------------------------------

runner = CliRunner()


def test_methods_table_lists_every_method_without_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from steer_cli.cli import app; "
        "r = CliRunner().invoke(app, ['methods']); print(r.output); "
        "print('torch' in sys.modules, r.exit_code)"
    )
    env = {**os.environ, "COLUMNS": "250"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().endswith("False 0"), out.stdout + out.stderr
    for name in METHODS:
        assert name in out.stdout
    for word in ("mlp_output", "loreft r=8", "last_prompt", "f7+l7", "LoRA r=8", "full"):
        assert word in out.stdout


def test_methods_table_with_a_model_counts_parameters(monkeypatch):
    from rich.console import Console

    from steer_cli import report

    monkeypatch.setattr(report, "console", Console(width=250))
    result = runner.invoke(app, ["methods", "--model", "tiny-llama"])
    assert result.exit_code == 0, result.output
    assert f"{LORA_R8:,}" in result.output
    assert f"{8 * LOWRANK_PER_RANK:,}" in result.output and f"{LAYERS * D:,}" in result.output
    assert "% of base" in result.output


def test_lora_counts_on_every_family(tiny):
    """peft finds the same seven projections in every tiny family, and unloading restores it."""
    model, tokenizer = tiny
    ids = tokenizer("[SM 1 2 ]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    recipe = build_recipe({"method": "lora", "lora": {"rank": 2}})
    formula = lora_parameter_count(model, recipe.lora)
    parts = build_parts(model, recipe)
    try:
        assert parts.model.get_nb_trainable_parameters()[0] == formula == parts.num_parameters()
    finally:
        parts.remove()
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_rank_search_counts_only_the_steered_layers(fresh_llama):
    model, _ = fresh_llama
    raw = {"adapter": {"budget": 2 * D * 10, "layers": [0]}}
    recipe, choice = resolve_rank(model, build_recipe(raw))
    assert recipe.adapter.rank == 10 and choice.params == 2 * D * 10


def test_adapter_parts_pass_engine_hooks_to_the_loop(fresh_llama):
    from steer_cli.loop import _Trainable

    model, _ = fresh_llama
    parts = build_parts(model, build_recipe({}))
    try:
        assert parts.penalty(1) is None  # lowrank has no regulariser
        assert callable(parts.begin_training) and callable(parts.after_step)
        parts.interventions.penalty = lambda step: torch.tensor(float(step))
        assert float(parts.penalty(3)) == 3.0
        assert _Trainable(model, parts).extra is parts.interventions
        assert _Trainable(model, build_parts(model, build_recipe({"method": "sft"}))).extra is None
    finally:
        parts.remove()
        model.requires_grad_(False)


# -- premlp: the paper's pre-MLP site ----------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _steer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``steer ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "steer_cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250"},
        timeout=600,
    )


def test_steer_methods_json_puts_premlp_on_the_mlp_input_and_counts_it(tmp_path):
    """premlp is the paper's pre-MLP (mlp_input); the old attention-output preset is postattn.
    Both train 2 d r per layer: the MLP's input is as wide as the residual stream."""
    out = _steer("methods", "--model", "tiny-llama", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["premlp"]["adapter"]["site"] == "mlp_input"
    assert rows["postattn"]["adapter"]["site"] == "attn_output"
    for name in ("premlp", "postattn"):
        assert rows[name]["adapter"]["parameterization"] == "lowrank"
        assert rows[name]["params"] == 8 * LOWRANK_PER_RANK
    assert "pre-MLP" in rows["premlp"]["description"]


def test_the_premlp_recipe_trains_on_the_mlp_input(tmp_path):
    from steer_cli.runs import load_run

    out = tmp_path / "premlp"
    recipe = Path(__file__).resolve().parent.parent / "recipes" / "methods" / "premlp.yaml"
    small = ["model=tiny-llama", "train.max_steps=2", "data.train_size=16", "data.test_size=4"]
    result = runner.invoke(app, ["train", str(recipe), *small, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["adapter"]["site"] == "mlp_input"
    assert json.loads((out / "adapter.json").read_text())["site"] == "mlp_input"
    assert json.loads((out / "results.json").read_text())["trainable_params"] == 8 * (
        LOWRANK_PER_RANK
    )
    _, _, parts = load_run(out)
    assert parts.interventions.spec.site == "mlp_input"  # reloaded where it trained
    parts.interventions.detach()


def test_a_premlp_run_written_before_premlp_moved_still_loads_and_evaluates(tmp_path):
    """A run steer 0.1.0 wrote when premlp steered attn_output (tests/fixtures/premlp-0.1.0-run,
    see its FIXTURE.md) keeps that site: evaluated now, it answers its test items as it did when
    it finished training, and `steer compare` keeps it apart from new premlp runs."""
    run = tmp_path / "old-premlp"
    shutil.copytree(FIXTURES / "premlp-0.1.0-run", run)
    out = _steer("eval", str(run), "--protocol", "paper", "--json", "--log-samples", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["method"] == "premlp" and summary["n_samples"] == {"listops": 4}
    (samples,) = [Path(f) for f in summary["files"] if f.endswith(".samples.jsonl")]
    if not samples.is_absolute():
        samples = tmp_path / samples
    then = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    now = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["output"] for r in now] == [r["output"] for r in then]

    compared = runner.invoke(app, ["compare", str(run), "--json"])
    assert compared.exit_code == 0, compared.output
    (row,) = json.loads(compared.stdout)["rows"]
    assert row["method"] == "premlp r=2 site=attn_output"
