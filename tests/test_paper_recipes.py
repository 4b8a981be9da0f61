"""recipes/paper: the generator's output is what is committed, and every recipe trains.

Each recipe is validated as written (real hub model, all the data, the paper's epochs), then
trained for two steps on its family's tiny model and the local fixtures, so none can rot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from steer_cli import train
from steer_cli.methods import METHODS
from steer_cli.recipe import load_recipe
from steer_cli.sweep import lr_grid, validation_recipe

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "recipes" / "paper"
FIXTURES = Path(__file__).parent / "fixtures"
FILES = sorted(p.relative_to(PAPER).as_posix() for p in PAPER.rglob("*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("paper_generate", PAPER / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def test_committed_recipes_are_the_generators_output() -> None:
    expected = GEN.render()
    assert sorted(expected) == FILES, "run: python recipes/paper/generate.py"
    for rel, text in expected.items():
        assert (PAPER / rel).read_text() == text, f"{rel} drifted: run recipes/paper/generate.py"


SWEPT = [rel for rel in FILES if not rel.startswith("table3/")]
TABLE3 = [rel for rel in FILES if rel.startswith("table3/")]


def test_every_cell_is_there() -> None:
    # Tables 1 and 2: 4 models x 6 tasks x 4 methods; Table 3: Llama-3.1-8B's 7 rows;
    # Table 4: 3 models x 3 tasks x 6 methods.
    assert len(FILES) == 96 + 96 + 7 + 54
    assert {rel.rsplit("/", 1)[1] for rel in TABLE3} == {
        f"{m}.yaml"
        for m in ("sft", "postblock-silu", "postblock", "lora-r16", "lora", "reft", "reft-4layers")
    }
    assert {rel.rsplit("/", 1)[1] for rel in FILES if rel.startswith("table4/")} == {
        f"{m}.yaml" for m in ("sft", "lora", "lora-r16", "postblock", "joint", "joint-orth")
    }


@pytest.mark.parametrize("rel", SWEPT)
def test_recipe_is_the_papers_setting(rel: str) -> None:
    table, key, task, stem = rel.removesuffix(".yaml").split("/")
    recipe = load_recipe(PAPER / rel)
    assert recipe.name == f"{table}-{key}-{task}-{stem}"
    assert recipe.model.name == GEN.MODELS[key]["hub"]
    assert recipe.data.task == task
    assert (recipe.data.train_size, recipe.data.validation_size, recipe.data.test_size) == (
        None,
        None,
        None,
    )
    assert recipe.train.epochs == (3 if task == "gsm8k" else 1)
    assert recipe.train.batch_size == 8 and recipe.train.max_steps is None
    assert recipe.method == stem.removesuffix("-r1").removesuffix("-r16")
    assert METHODS[recipe.method].lr_grid
    assert len(lr_grid(recipe)) == 5
    validation_recipe(recipe)  # `--sweep` can pick the LR on a validation split
    if recipe.method == "reft":
        assert recipe.adapter.positions == "last_prompt"
    if recipe.method in ("postblock", "postblock-vector", "reft"):
        assert recipe.adapter.layers == "all"
    if stem == "lora-r16":
        assert recipe.lora.rank == 16
    if table == "table1" and recipe.method in ("postblock", "reft"):
        assert recipe.adapter.rank == GEN.T1_RANK == 8  # appendix F.2, at both model sizes
        assert recipe.adapter.activation == "none"


@pytest.mark.parametrize("rel", TABLE3)
def test_table3_recipe_is_section_6_2s_setting(rel: str) -> None:
    stem = rel.removesuffix(".yaml").split("/")[-1]
    recipe = load_recipe(PAPER / rel)
    assert recipe.name == f"table3-llama-3.1-8b-alpaca-{stem}"
    assert recipe.model.name == "meta-llama/Llama-3.1-8B"
    assert recipe.data.task == "alpaca" and recipe.data.train_size is None
    assert recipe.data.chat_template is False  # the Alpaca template on a base checkpoint
    assert recipe.train.epochs == 3 and recipe.train.batch_size == 8
    assert recipe.train.max_steps is None and recipe.eval.before is False
    expected = {
        "sft": ("sft", None),
        "postblock-silu": ("postblock", "silu"),
        "postblock": ("postblock", "none"),
        "lora-r16": ("lora", None),
        "lora": ("lora", None),
        "reft": ("reft", None),
        "reft-4layers": ("reft", None),
    }[stem]
    assert recipe.method == expected[0]
    if recipe.method == "postblock":
        assert recipe.adapter.activation == expected[1]
        assert (recipe.adapter.rank, recipe.adapter.layers) == (GEN.T3_RANK, "all")
    if recipe.method == "lora":
        assert recipe.lora.rank == (16 if stem == "lora-r16" else 8)
    if stem == "reft":  # parameter-matched: the same rank as Ours, every layer
        assert (recipe.adapter.rank, recipe.adapter.layers) == (GEN.T3_RANK, "all")
    if stem == "reft-4layers":  # pyreft's published instruction-following configuration
        assert recipe.adapter.layers == [3, 9, 18, 24] and recipe.adapter.rank == GEN.T3_REFT4_RANK
        assert recipe.adapter.positions == "f5+l5" and recipe.train.lr == 9e-4


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4"])
def test_recipes_are_their_paper_rows_variant_at_its_params(table: str) -> None:
    """Each recipe meets its own row in `steer compare --paper` as the same variant (rank,
    activation, layers), and its trainable share prints as the row's Params cell."""
    from steer_cli.compare.paper import match
    from steer_cli.compare.rows import Cell, Row
    from steer_cli.compare.runs import task_key, variant_label, variant_of
    from steer_cli.published import PUBLISHED

    budgets = GEN.budgets
    checked = 0
    for rel in (r for r in FILES if r.startswith(f"{table}/")):
        _, key, task, stem = rel.removesuffix(".yaml").split("/")
        config = load_recipe(PAPER / rel).resolved()
        variant = variant_of(config)
        row = Row(config["model"]["name"], variant_label(variant), "runs", None, variant=variant)
        row.cells = {task_key(task): Cell(0.0)}
        entry, differs, missing = match(row, PUBLISHED[table])
        assert entry is not None, (rel, missing)
        assert differs == [], (rel, entry.name, differs)
        count = budgets.recipe_params(GEN.MODELS[key], config)
        if count is None or entry.params is None:
            continue
        if (table, key, config["method"]) in budgets.PARAMS_EXCEPTIONS:
            continue
        share = budgets.percent(GEN.MODELS[key], count)
        assert budgets.prints_as(share, entry.params), (rel, f"{share:.4f}%", entry.params)
        checked += 1
    assert checked >= {"table1": 60, "table2": 24, "table3": 6, "table4": 0}[table]


def _tiny_overrides(rel: str) -> list[str]:
    """Two optimizer steps on the family's tiny model and the local fixtures."""
    table, key, task, stem = rel.removesuffix(".yaml").split("/")
    overrides = [
        f"model={GEN.MODELS[key]['tiny']}",
        "train.max_steps=2",
        "train.batch_size=2",
        "data.train_size=4",
        "data.validation_size=2",
        "data.test_size=2",
        "eval.before=false",
        "eval.batch_size=2",
        "eval.max_new_tokens=4",
    ]
    if task == "listops":  # the generator, small
        overrides += ["data.listops.preset=null", "data.listops.depth=2", "data.listops.arity=3"]
    elif task == "alpaca":  # the demo's file: enough rows for the 1% validation and test cuts
        overrides.append(f"data.path={ROOT / 'recipes' / 'data' / 'alpaca-demo.jsonl'}")
    else:
        folder = {"arc-challenge": "arc"}.get(task, task)
        overrides.append(f"data.path={FIXTURES / folder}")
    if stem == "lofit":  # every head of a real model is more heads than a tiny one has
        overrides.append("adapter.lofit_heads=0.5")
    if stem == "reft-4layers":  # layers 3..24 of a 32-layer model; a tiny one has 3
        overrides.append("adapter.layers=[0,2]")
    return overrides


@pytest.mark.parametrize("rel", FILES)
def test_recipe_trains_two_steps_on_a_tiny_model(rel: str, tmp_path) -> None:
    recipe = load_recipe(PAPER / rel, _tiny_overrides(rel))
    trained = train.run(recipe, tmp_path / "run")
    results = trained.results
    # LoFiT trains twice (its two stages), each capped by train.max_steps.
    assert results["steps"] == (4 if rel.endswith("lofit.yaml") else 2)
    assert results["trainable_params"] > 0
    assert "after" in results["eval"]
