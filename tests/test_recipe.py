"""Strict recipe validation: unknown keys name the closest valid key, wrong types name the key."""

import pytest

from steer_cli.errors import SteerError
from steer_cli.methods import METHODS
from steer_cli.recipe import build_recipe, load_recipe


def _error(raw=None, path=None, overrides=()):
    with pytest.raises(SteerError) as info:
        if path is not None or overrides:
            load_recipe(path, list(overrides))
        else:
            build_recipe(raw)
    return info.value


def test_defaults_come_from_the_method_preset():
    recipe = build_recipe({})
    assert recipe.method == "postblock"
    assert recipe.adapter.site == "block_output"
    assert recipe.adapter.parameterization == "lowrank"
    assert recipe.train.scheduler == "constant" and recipe.train.weight_decay == 0.0
    vector = build_recipe({"method": "postblock-vector"})
    assert vector.adapter.parameterization == "vector"
    assert vector.train.lr == 1e-2


def test_user_values_override_the_preset():
    recipe = build_recipe(
        {"method": "postblock-vector", "adapter": {"parameterization": "lowrank"}}
    )
    assert recipe.adapter.parameterization == "lowrank"
    assert recipe.train.lr == 1e-2  # the rest of the preset still applies


@pytest.mark.parametrize(
    ("raw", "key", "suggestion"),
    [
        ({"trian": {}}, "'trian'", "'train'"),
        ({"train": {"lrr": 1}}, "'train.lrr'", "'train.lr'"),
        ({"data": {"listops": {"dept": 3}}}, "'data.listops.dept'", "'data.listops.depth'"),
    ],
)
def test_unknown_key_names_closest(raw, key, suggestion):
    err = _error(raw)
    assert "unknown recipe key" in err.message and key in err.message
    assert f"did you mean {suggestion}" in err.hint


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ({"train": {"lr": "fast"}}, "train.lr", "should be a valid number"),
        ({"adapter": {"rank": "eight"}}, "adapter.rank", "should be a valid integer or 'auto'"),
        ({"adapter": {"rank": 0}}, "adapter.rank", "should be greater than or equal to 1"),
        (
            {"adapter": {"site": "post_block"}},
            "adapter.site",
            "should be 'block_output', 'mlp_output', 'mlp_input', 'attn_output' or 'attn_heads'",
        ),
        ({"model": {"dtype": "fp8"}}, "model.dtype", "should be 'auto', 'float32', 'bfloat16'"),
        ({"eval": {"before": "maybe"}}, "eval.before", "should be a valid boolean"),
    ],
)
def test_wrong_type_names_key_and_expectation(raw, key, expected):
    err = _error(raw)
    assert f"recipe key '{key}' {expected}" in err.message


def test_unknown_method_suggests():
    err = _error({"method": "postblok"})
    assert "postblok" in err.message and "'postblock'" in err.hint


def test_overrides_apply_with_validation(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: tiny-llama\ntrain:\n  lr: 0.1\n")
    recipe = load_recipe(path, ["train.lr=1e-3", "adapter.rank=4", "adapter.layers=[0, 2]"])
    assert recipe.train.lr == 1e-3 and recipe.adapter.rank == 4
    assert recipe.adapter.layers == [0, 2]
    assert recipe.model.name == "tiny-llama"
    assert recipe.name == "r"  # from the file name
    assert "train.lrr" in _error(path=path, overrides=["train.lrr=1"]).message
    assert "adapter.rank" in _error(path=path, overrides=["adapter.rank=x"]).message
    assert "key=value" in _error(path=path, overrides=["train.lr"]).message
    assert "not a section" in _error(path=path, overrides=["train.lr.x=1"]).message


def test_model_shorthand_and_override():
    recipe = load_recipe(None, ["model=tiny-qwen3"])
    assert recipe.model.name == "tiny-qwen3"


def test_bad_yaml_and_missing_file(tmp_path):
    assert "not found" in _error(path=tmp_path / "nope.yaml").message
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    assert "line" in _error(path=bad).message
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    assert "mapping" in _error(path=scalar).message


def test_resolved_recipe_is_complete_and_round_trips():
    recipe = build_recipe({"model": "tiny-llama", "train": {"lr": 5e-4}})
    resolved = recipe.resolved()
    assert set(resolved) == {
        "name",
        "method",
        "model",
        "adapter",
        "lora",
        "orth",
        "data",
        "train",
        "dpo",
        "grpo",
        "eval",
    }
    assert build_recipe(resolved) == recipe


# -- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "site", "parameterization", "positions"),
    [
        ("postblock", "block_output", "lowrank", "all"),
        ("postblock-vector", "block_output", "vector", "all"),
        ("postmlp", "mlp_output", "lowrank", "all"),
        ("premlp", "mlp_input", "lowrank", "all"),
        ("postattn", "attn_output", "lowrank", "all"),
        ("reft", "mlp_output", "loreft", "last_prompt"),
        ("reft-original", "block_output", "loreft", "f7+l7"),
        ("lofit", "attn_heads", "lofit", "all"),
        ("jola", "attn_heads", "jola", "all"),
    ],
)
def test_adapter_presets(method, site, parameterization, positions):
    recipe = build_recipe({"method": method})
    assert METHODS[method].kind == "adapter"
    assert (recipe.adapter.site, recipe.adapter.parameterization) == (site, parameterization)
    assert recipe.adapter.positions == positions and recipe.adapter.layers == "all"
    train = recipe.train
    assert (train.scheduler, train.warmup_ratio, train.weight_decay) == ("constant", 0.0, 0.0)


def test_weight_space_presets():
    lora = build_recipe({"method": "lora"})
    assert METHODS["lora"].kind == "lora" and lora.lora.rank == 8
    assert lora.lora.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert (lora.train.lr, lora.train.scheduler, lora.train.warmup_ratio) == (3e-4, "cosine", 0.06)
    sft = build_recipe({"method": "sft"})
    assert METHODS["sft"].kind == "sft"
    assert (sft.train.lr, sft.train.scheduler, sft.train.warmup_ratio) == (2e-5, "cosine", 0.1)
    assert lora.train.weight_decay == sft.train.weight_decay == 0.0


def test_every_method_has_a_five_point_grid_holding_its_default_lr():
    for name, method in METHODS.items():
        assert len(method.lr_grid) == 5, name
        assert build_recipe({"method": name}).train.lr in method.lr_grid, name
    assert METHODS["lora"].lr_grid == (5e-5, 1e-4, 3e-4, 7e-4, 1.5e-3)
    assert METHODS["sft"].lr_grid == (5e-6, 1e-5, 2e-5, 5e-5, 1e-4)
    assert METHODS["reft"].extra_grid == {"adapter.positions": ("last_prompt", "f7+l7")}


def test_any_preset_field_can_be_overridden():
    recipe = build_recipe(
        {
            "method": "reft",
            "adapter": {"positions": "f7+l7", "site": "block_output"},
            "train": {"lr": 1e-3},
        }
    )
    assert (recipe.adapter.positions, recipe.adapter.site, recipe.train.lr) == (
        "f7+l7",
        "block_output",
        1e-3,
    )
    lora = build_recipe(
        {"method": "lora", "lora": {"rank": 4, "target_modules": ["q_proj"]}, "train": {}}
    )
    assert lora.lora.rank == 4 and lora.lora.target_modules == ["q_proj"]
    assert build_recipe({"method": "sft", "train": {"scheduler": "linear"}}).train.scheduler == (
        "linear"
    )


# -- budget fields -----------------------------------------------------------------------------


def test_budget_or_match_ask_for_the_rank_search():
    assert build_recipe({"adapter": {"budget": "0.1%"}}).adapter.rank == "auto"
    assert build_recipe({"adapter": {"budget": " 0.25 %"}}).adapter.budget == "0.25%"
    assert build_recipe({"adapter": {"match": "lora"}}).adapter.rank == "auto"
    assert build_recipe({"adapter": {"rank": "auto", "budget": 5000}}).adapter.budget == 5000


@pytest.mark.parametrize(
    ("adapter", "fragment"),
    [
        ({"rank": "auto"}, "needs adapter.budget"),
        ({"rank": 4, "budget": "0.1%"}, "set adapter.rank to auto"),
        ({"budget": "0.1%", "match": "lora"}, "not both"),
        ({"budget": 0.1}, "percentage"),
        ({"budget": "120%"}, "percentage"),
        ({"match": "lorra"}, "should name a method"),
        ({"rank": "big"}, "integer or 'auto'"),
    ],
)
def test_budget_errors(adapter, fragment):
    with pytest.raises(SteerError) as info:
        build_recipe({"adapter": adapter})
    assert fragment in info.value.message and "adapter" in info.value.message


def test_template_overrides_need_no_quoting():
    """{field} and "Answer: {label}" read as YAML mappings; for a key that takes text the
    override keeps the text as typed (a shell does not need nested quotes)."""
    from steer_cli.recipe import load_recipe

    recipe = load_recipe(
        None,
        ["data.task=local", "data.local.prompt={question}", "data.local.target=Answer: {label}"],
    )
    assert recipe.data.local.prompt == "{question}"
    assert recipe.data.local.target == "Answer: {label}"
    assert load_recipe(None, ["adapter.layers=[0, 2]"]).adapter.layers == [0, 2]  # not text
